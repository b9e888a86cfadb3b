#!/usr/bin/env bash
# A single-node walk-through on the embedded datastore: apply Calico manifests unchanged,
# read them back calicoctl-style, label, evaluate selectors, and watch bad input bounce off
# without changing anything. Uses a private store under a temp dir; touches no network.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh >/dev/null 2>&1 || scripts/install-deps.sh
cargo build --quiet --bin tortie
TORTIE="$PWD/target/debug/tortie"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export TORTIE_DATASTORE="file:$WORK/store.db"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "tortie $*"; "$TORTIE" "$@"; }
fails() { step "tortie $* (expected to fail)"; if "$TORTIE" "$@"; then echo "unexpected success" >&2; exit 1; else echo "(exit code $?)"; fi; }

echo "datastore: $TORTIE_DATASTORE"
run apply -f examples/demo/
run get ippools -o wide
run get tiers
run get globalnetworkpolicies -o wide
run get networkpolicy -A
run get networkpolicy.networking.k8s.io -n shop -o yaml
run label globalnetworkset threat-feed source=feed-a
run get globalnetworksets -l 'source == "feed-a" && threat-feed in {"bad"}' -o wide
run selector check 'app == "api" && !has(canary)' --labels app=api,tier=backend
run selector check 'env not in {"prod"}' --labels '{"team":"web"}' -o json
fails selector check 'app == "api" &&& tier'
fails apply -f examples/invalid/bad-pool.yaml
run get ippools
step "stale write: replace with an old resourceVersion"
"$TORTIE" get ippool default-ipv4-ippool -o yaml > "$WORK/pool.yaml"
"$TORTIE" label ippool default-ipv4-ippool edited=yes
fails replace -f "$WORK/pool.yaml"
fails --datastore etcd://127.0.0.1:1 get ippools
echo
echo "demo complete"
