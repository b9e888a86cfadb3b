#!/usr/bin/env bash
# Benchmarks B3 (policy cost vs number of selected IPs) and B4 (change → verdict flip) from
# shared/design/benchmarks.md for tortie's nftables policy dataplane, with their peers side
# by side in one run. Write-up and results: docs/bench-notes/policy.md.
#
# Builds crates/tortie-dataplane/examples/bench_policy.rs in release and runs it. It builds
# its own namespaces (prefix bp<pid>-): lab "main" (host + pods A 10.244.1.10 and B
# 10.244.2.11 behind calia1/calib2) carries tortie's `inet tortie` table, full `nft -f`
# reloads and iptables-nft; lab "legacy" (same shape) carries iptables-legacy. Each case
# starts from an empty ruleset (`nft flush ruleset`, checked empty).
#
# B3: per N extra addresses in B's allowed set (0, 1k, 10k, 50k): RUNS rounds, each installing
#     every case afresh (no ruleset, tortie, iptables-nft, iptables-legacy) in rotated order,
#     checking verdicts, then `iperf3 -t SECS` A→B and CRR_SECS of sequential new-connection
#     1-byte request/response.
# B4: per N (1k, 10k, 50k): REPS timed changes per method (tortie incremental apply, full
#     `nft -f`, full iptables-nft-restore / iptables-legacy-restore, and a naive incremental
#     peer that re-renders and diffs the whole table), each measured from the change to A's first successful
#     connect (1 ms probe) and to the end of the apply call.
#
# Safety (shared/design/test-network.md): only namespaces this run creates; nothing in the
# root namespace; every loop bounded; processes ended by PID; the EXIT trap removes the
# namespaces and the iperf3 servers on failure or signal too.
#
# Usage: sudo scripts/bench-policy.sh            (needs iperf3, nft, iptables; about 11 minutes)
# Env:   RUNS=3 SECS=5 CRR_SECS=3 REPS=30 B3_SIZES=0,1000,10000,50000 B4_SIZES=1000,10000,50000
#        LEGACY=1 NAIVE=1 ONLY= (b3|b4) SKIP_BUILD=0 MAX_SECS=3600 RAW=<file for raw samples>
# Output: a markdown report on stdout; progress on stderr.
set -euo pipefail

RUNS=${RUNS:-3}
SECS=${SECS:-5}
CRR_SECS=${CRR_SECS:-3}
REPS=${REPS:-30}
B3_SIZES=${B3_SIZES:-0,1000,10000,50000}
B4_SIZES=${B4_SIZES:-1000,10000,50000}
LEGACY=${LEGACY:-1}
NAIVE=${NAIVE:-1}
ONLY=${ONLY:-}
SKIP_BUILD=${SKIP_BUILD:-0}
MAX_SECS=${MAX_SECS:-3600}
RAW=${RAW:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P="bp$$"
TMP=""
BENCH_PID=""

log() { printf '[bench-policy] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  local pid ns i
  if [[ -n $BENCH_PID ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill "$BENCH_PID" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      kill -0 "$BENCH_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$BENCH_PID" 2>/dev/null
  fi
  # iperf3 servers the benchmark started (it records their PIDs; only ours, by PID).
  if [[ -n $TMP && -s $TMP/pids ]]; then
    while read -r pid; do
      if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == iperf3 ]]; then
        kill "$pid" 2>/dev/null
      fi
    done <"$TMP/pids"
  fi
  while read -r ns _; do
    [[ $ns == "$P"-* ]] && ip netns delete "$ns" 2>/dev/null
  done < <(ip netns list 2>/dev/null)
  [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
  if ((rc != 0)); then log "failed (exit $rc); cleaned up"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces)"
for c in ip nft iperf3 iptables-nft-restore timeout cargo lscpu; do
  command -v "$c" >/dev/null || die "$c not found"
done
if ((LEGACY)); then
  command -v iptables-legacy-restore >/dev/null || die "iptables-legacy-restore not found (LEGACY=0 skips it)"
fi
num() { [[ $2 =~ ^[1-9][0-9]*$ ]] && (($2 <= $3)) || die "$1 must be 1..$3"; }
num RUNS "$RUNS" 20
num SECS "$SECS" 60
num CRR_SECS "$CRR_SECS" 60
num REPS "$REPS" 500
num MAX_SECS "$MAX_SECS" 86400
[[ $B3_SIZES =~ ^[0-9]+(,[0-9]+)*$ && $B4_SIZES =~ ^[0-9]+(,[0-9]+)*$ ]] || die "B3_SIZES/B4_SIZES: comma-separated numbers"

TMP=$(mktemp -d "/tmp/$P.XXXXXX")
BIN=$ROOT/target/release/examples/bench_policy
if ((SKIP_BUILD == 0)); then
  log "cargo build --release -p tortie-dataplane --example bench_policy"
  (cd "$ROOT" && cargo build --release -q -p tortie-dataplane --example bench_policy) >&2
fi
[[ -x $BIN ]] || die "$BIN missing"

ARGS=(--prefix "$P" --pid-file "$TMP/pids" --raw "$TMP/raw.tsv"
  --runs "$RUNS" --secs "$SECS" --crr-secs "$CRR_SECS" --reps "$REPS"
  --b3-sizes "$B3_SIZES" --b4-sizes "$B4_SIZES")
((LEGACY)) || ARGS+=(--no-legacy)
((NAIVE)) || ARGS+=(--no-naive)
[[ -n $ONLY ]] && ARGS+=(--only "$ONLY")

CPU=$(lscpu | awk -F: '/^Model name/ { gsub(/^[ \t]+/, "", $2); print $2; exit }')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$ROOT" && git status --porcelain -- crates/tortie-dataplane/src crates/tortie-calc/src 2>/dev/null | wc -l)
log "running (prefix $P; about 11 minutes with the defaults); load $LOAD_START"

# In the background so that the trap can end it by PID; bounded by MAX_SECS.
timeout -s TERM "$MAX_SECS" "$BIN" "${ARGS[@]}" >"$TMP/report.md" &
BENCH_PID=$!
wait "$BENCH_PID" || die "bench_policy failed (exit $?)"
BENCH_PID=""

echo "# B3 / B4 policy dataplane run of $DATE"
echo
echo "- command: \`scripts/bench-policy.sh\` (RUNS=$RUNS SECS=$SECS CRR_SECS=$CRR_SECS REPS=$REPS B3_SIZES=$B3_SIZES B4_SIZES=$B4_SIZES LEGACY=$LEGACY NAIVE=$NAIVE${ONLY:+ ONLY=$ONLY})"
echo "- kernel $(uname -r); CPU: $(nproc) × $CPU; load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- tortie $REV (release example; $DIRTY uncommitted files under tortie-dataplane/src and tortie-calc/src)"
echo "- $(nft --version); $(iptables-nft --version) via iptables-nft-restore$( ((LEGACY)) && echo "; $(iptables-legacy --version) via iptables-legacy-restore"); $(iperf3 --version | head -1)"
cat "$TMP/report.md"
if [[ -n $RAW ]]; then
  cp "$TMP/raw.tsv" "$RAW"
  log "raw samples: $RAW"
fi
log "done"
