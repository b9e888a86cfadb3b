#!/usr/bin/env bash
# Benchmarks B9 (BGP ingest) and B10 (BGP → kernel FIB) from shared/design/benchmarks.md:
# tortie's BGP speaker beside BIRD 2, FRR and GoBGP in one run. Write-up and results:
# docs/bench-notes/bgp.md.
#
# Builds crates/tortie-agent/examples/bench_bgp.rs in release and runs it. It builds its own
# namespaces (tb<pid>-..., one bridge, hosts 198.18.0.i/24) with tortie-bgp's test harness
# (tests/support), which also runs the daemons. Feeders and the monitor are tortie speakers
# inside the bench process, the same for every DUT; tortie's DUT is a separate process
# (`bench_bgp dut`, started with `ip netns exec`) so its RSS and CPU can be read.
#
# B9:  N feeders (eBGP, one AS) each announce M /28s of 10.0.0.0/8 to the DUT, which sends
#      them to a monitor (eBGP) and nothing back to the feeders; elapsed time from the
#      announcements until the monitor holds all N×M, the DUT's peak RSS (VmHWM; FRR: bgpd +
#      zebra) and CPU time. RUNS rounds at N×M, LARGE_RUNS at N×LARGE_PREFIXES; plus a row
#      without a DUT (feeders straight into the monitor): what the apparatus costs.
# B10: one feeder announces ROUTES to the DUT, which installs them in its namespace's main
#      table (tortie: the agent's route manager + NetlinkDataplane, proto 81; BIRD: protocol
#      kernel; FRR: zebra); time until all are there (rtnetlink notifications, checked by a
#      dump), then the feeder withdraws them all and the time until they are gone.
# FLOOR=1 adds the `netlink-floor` diagnostic: the agent's route installation alone.
#
# Safety (shared/design/test-network.md): only namespaces this run creates; nothing in the
# root namespace; every wait bounded; processes ended by PID; the EXIT trap removes the
# namespaces (ending what still runs in them, by PID) on failure or signal too.
#
# Usage: sudo scripts/bench-bgp.sh          (needs bird2, frr, gobgpd; ~12 minutes)
# Env:   RUNS=3 FEEDERS=10 PREFIXES=10000 LARGE_PREFIXES=100000 LARGE_RUNS=1 ROUTES=100000
#        DUTS=tortie,bird,frr,gobgp ONLY= (b9|b10) TIMEOUT=120 FLOOR=1 SKIP_BUILD=0
#        MAX_SECS=3600 RAW=<file for raw samples>
# Output: a markdown report on stdout; progress on stderr.
set -euo pipefail

RUNS=${RUNS:-3}
FEEDERS=${FEEDERS:-10}
PREFIXES=${PREFIXES:-10000}
LARGE_PREFIXES=${LARGE_PREFIXES:-100000}
LARGE_RUNS=${LARGE_RUNS:-1}
ROUTES=${ROUTES:-100000}
DUTS=${DUTS:-tortie,bird,frr,gobgp}
ONLY=${ONLY:-}
TIMEOUT=${TIMEOUT:-120}
FLOOR=${FLOOR:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
MAX_SECS=${MAX_SECS:-3600}
RAW=${RAW:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=""
RUN_PID=""

log() { printf '[bench-bgp] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Removes what a bench process left: its namespaces tb<pid>-* (ending every process still in
# them, by PID), its daemons' directories and FRR's crash-log directories of those PIDs.
sweep() {
  local bpid=$1 ns pid comm
  [[ $bpid =~ ^[0-9]+$ ]] || return 0
  while read -r ns _; do
    [[ $ns == "tb$bpid-"* ]] || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
      kill -KILL "$pid" 2>/dev/null
      [[ $comm == bgpd || $comm == zebra ]] && rm -rf "/var/tmp/frr/$comm.$pid"
    done
    sleep 0.2
    ip netns delete "$ns" 2>/dev/null
  done < <(ip netns list 2>/dev/null)
  rm -rf "${TMPDIR:-/tmp}/tortie-bgp-$bpid-"*
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  local bpid f i
  if [[ -n $RUN_PID ]] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill "$RUN_PID" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      kill -0 "$RUN_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$RUN_PID" 2>/dev/null
  fi
  # The bench processes (run, netlink-floor) wrote their PIDs: end them if they still run,
  # then sweep what they left.
  for f in "$TMP/bench.pid" "$TMP/floor.pid"; do
    [[ -n $TMP && -s $f ]] || continue
    bpid=$(cat "$f")
    if kill -0 "$bpid" 2>/dev/null && [[ $(cat "/proc/$bpid/comm" 2>/dev/null) == bench_bgp ]]; then
      kill -KILL "$bpid" 2>/dev/null
      sleep 0.2
    fi
    sweep "$bpid"
  done
  [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
  if ((rc != 0)); then log "failed (exit $rc); cleaned up"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces)"
for c in ip bird birdc /usr/lib/frr/bgpd /usr/lib/frr/zebra vtysh gobgpd gobgp timeout cargo lscpu; do
  command -v "$c" >/dev/null || die "$c not found (scripts/install-deps.sh installs bird2, frr and gobgpd)"
done
num() { [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $4 && $2 <= $3)) || die "$1 must be $4..$3"; }
num RUNS "$RUNS" 20 1
num FEEDERS "$FEEDERS" 100 1
num PREFIXES "$PREFIXES" 104857 1
num LARGE_PREFIXES "$LARGE_PREFIXES" 104857 0
num LARGE_RUNS "$LARGE_RUNS" 20 1
num ROUTES "$ROUTES" 1048576 1
num TIMEOUT "$TIMEOUT" 3600 1
num MAX_SECS "$MAX_SECS" 86400 1
[[ $DUTS =~ ^(tortie|bird|frr|gobgp)(,(tortie|bird|frr|gobgp))*$ ]] || die "DUTS: comma-separated tortie,bird,frr,gobgp"
[[ -z $ONLY || $ONLY == b9 || $ONLY == b10 ]] || die "ONLY: b9 or b10"

TMP=$(mktemp -d "/tmp/bench-bgp.XXXXXX")
BIN=$ROOT/target/release/examples/bench_bgp
if ((SKIP_BUILD == 0)); then
  log "cargo build --release -p tortie-agent --example bench_bgp"
  (cd "$ROOT" && cargo build --release -q -p tortie-agent --example bench_bgp) >&2
fi
[[ -x $BIN ]] || die "$BIN missing"

ARGS=(run --pid-file "$TMP/bench.pid" --raw "$TMP/raw.tsv" --runs "$RUNS" --feeders "$FEEDERS"
  --prefixes "$PREFIXES" --large-prefixes "$LARGE_PREFIXES" --large-runs "$LARGE_RUNS"
  --routes "$ROUTES" --duts "$DUTS" --timeout-secs "$TIMEOUT")
[[ -n $ONLY ]] && ARGS+=(--only "$ONLY")

CPU=$(lscpu | awk -F: '/^Model name/ { gsub(/^[ \t]+/, "", $2); print $2; exit }')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$ROOT" && git status --porcelain -- crates/tortie-bgp/src crates/tortie-agent/src 2>/dev/null | wc -l)
log "running (load $LOAD_START)"

# In the background so that the trap can end it by PID; bounded by MAX_SECS.
timeout -s TERM "$MAX_SECS" "$BIN" "${ARGS[@]}" >"$TMP/report.md" &
RUN_PID=$!
wait "$RUN_PID" || die "bench_bgp failed (exit $?)"
RUN_PID=""
if ((FLOOR)) && [[ -z $ONLY || $ONLY == b10 ]]; then
  log "netlink-floor: the agent's route installation without BGP ($ROUTES routes)"
  timeout -s TERM 600 "$BIN" netlink-floor --routes "$ROUTES" --pid-file "$TMP/floor.pid" >"$TMP/floor.md" &
  RUN_PID=$!
  wait "$RUN_PID" || die "netlink-floor failed (exit $?)"
  RUN_PID=""
fi

echo "# B9 / B10 BGP run of $DATE"
echo
echo "- command: \`scripts/bench-bgp.sh\` (RUNS=$RUNS FEEDERS=$FEEDERS PREFIXES=$PREFIXES LARGE_PREFIXES=$LARGE_PREFIXES LARGE_RUNS=$LARGE_RUNS ROUTES=$ROUTES DUTS=$DUTS TIMEOUT=$TIMEOUT${ONLY:+ ONLY=$ONLY})"
echo "- kernel $(uname -r); CPU: $(nproc) × $CPU; load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- tortie $REV (release example; $DIRTY uncommitted files under tortie-bgp/src and tortie-agent/src)"
echo "- $(bird --version 2>&1 | head -1); FRR $(/usr/lib/frr/bgpd --version 2>&1 | awk '/version/ { print $NF; exit }'); $(gobgpd --version 2>&1 | head -1)"
cat "$TMP/report.md"
if [[ -s $TMP/floor.md ]]; then
  echo
  echo "### B10 diagnostic: the agent's route installation alone ($ROUTES routes, no BGP)"
  echo
  cat "$TMP/floor.md"
fi
if [[ -n $RAW ]]; then
  cp "$TMP/raw.tsv" "$RAW"
  log "raw samples: $RAW"
fi
log "done"
