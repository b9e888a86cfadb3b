#!/usr/bin/env bash
# The demo: a 3-node virtual cluster on this machine (nodes and pods are network namespaces,
# the datastore is the embedded SQLite file), pods on every node, the connectivity matrix and
# the nodes' routes, learned over BGP between the nodes' agents. It leaves the lab up so you can explore; it prints how to tear it down.
# Needs root (network namespaces). Touches no address outside the namespaces it creates.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh >/dev/null 2>&1 || scripts/install-deps.sh
cargo build --quiet --bins
export PATH="$PWD/target/debug:$PATH"
export TORTIE_LAB=demo

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "tortie $*"; tortie "$@"; }

tortie lab down >/dev/null 2>&1 || true   # a previous demo, if any
run lab up --nodes 3 --datastore embedded --routing bgp
eval "$(tortie lab env)"

# Calico manifests are accepted unchanged: a security tier, a Calico policy letting web reach
# api on 8080, and a Kubernetes default-deny for the namespace. The agents enforce them with
# nftables.
run apply -f examples/demo/
run get ippools -o wide
run get tiers

for spec in "shop/web-1 n1 web" "shop/web-2 n2 web" "shop/api-1 n3 api" "shop/api-2 n1 api"; do
  set -- $spec
  run lab pod add "$1" --node "$2" --labels "app=$3" --serve 80/tcp,8080/tcp
done
run get workloadendpoints -A
# The kernel's answer (real packets) and the model's answer (no packets) agree.
run lab matrix --timeout-ms 300
run policy matrix
run policy explain --from shop/web-1 --to shop/api-1 --port 8080
run policy explain --from shop/api-1 --to shop/web-2 --port 80
# Each agent's BGP speaker peers with the others (Calico's node-to-node mesh) and installs the
# blocks they advertise: `proto 81` routes via the owning node.
n1_agent=$(tortie lab status -o json | jq -r '.nodes[0].agent.health')
run node status --agent "$n1_agent"
for n in n1 n2 n3; do
  step "tortie lab exec $n -- ip route"
  tortie lab exec "$n" -- ip route
done
run ipam show --show-blocks
run selector check 'app == "web-1" && !has(canary)' --labels app=web-1

cat <<MSG

The lab "demo" is still up. Try:
  export PATH="$PWD/target/debug:\$PATH" TORTIE_LAB=demo
  eval "\$(tortie lab env)"                 # plain tortie commands now use the lab's datastore
  tortie lab status
  tortie lab probe shop/web-1 shop/api-1 --port 8080 --protocol tcp
  tortie policy explain --from shop/web-2 --to shop/api-2 --port 8080 -o json
  tortie lab exec n1 -- nft list table inet tortie
  tortie lab exec shop/web-1 -- ip addr
  tortie label pod shop/web-1 tier=frontend --overwrite
  tortie get wep -A -o yaml
Tear it down with:
  tortie lab down
MSG
