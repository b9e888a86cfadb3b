#!/usr/bin/env bash
# Benchmarks B1 (pod-to-pod TCP throughput) and B7 (CNI ADD/DEL latency) from
# shared/design/benchmarks.md, with their peers side by side in one run.
#
# B1: one iperf3 TCP stream (RUNS runs x SECS s, plus one omitted warm-up second; the median
# Gbit/s is reported, with iperf3's sender + receiver process CPU) for
#   a          bare veth: two namespaces on one veth pair (198.18.101.0/24)
#   b-same     bare routed namespaces, same node: two pods behind one node, wired by hand with
#              `ip` exactly as tortie wires them (/32 routes, 169.254.1.1 gateway, proxy ARP)
#   b-cross    bare routed, cross node: nodes joined by one direct veth (198.18.102.0/24)
#   b-cross-br bare routed, cross node: nodes on a bridge in a fabric namespace, the shape of
#              `tortie lab`'s underlay (198.18.103.0/24)
#   c-same     reference CNI: Debian's ptp + host-local, invoked by hand, two pods on one node
#   c-cross    ptp + host-local, pods on two nodes of the same fabric bridge, node routes by hand
#   d          tortie same node: `tortie lab up --name b1 --nodes 2`, two pods on n1
#   e          tortie cross node: pods on n1 and n2
# Runs are interleaved (round r runs every case once, rotating the order) so that load from
# other work on a shared machine hits every case alike.
#
# B7: CNI ADD then DEL latency, B7_ROUNDS rounds of B7_PODS sequential pods per plugin (plugins
# rotated between rounds), each plugin invoked exactly as a runtime does (CNI env + config on
# stdin) inside a node namespace with `ip netns exec`: ptp + host-local, bridge + host-local,
# and tortie-cni (+ tortie-ipam) against the lab's datastore on its node n1 (agent running);
# release and debug builds of tortie-cni when both exist. `ip netns exec NODE true` is the floor.
#
# Safety (shared/design/test-network.md): everything happens inside namespaces this script
# creates (prefix b1x<pid>-) or the lab `b1`; nothing is added to the root namespace; every
# wait is bounded; processes are ended by PID; an EXIT trap removes all of it on failure too.
#
# Usage: scripts/bench-throughput.sh            (root; needs iperf3, jq, containernetworking-plugins)
# Env:   RUNS=5 SECS=3 B7_PODS=20 B7_ROUNDS=2 SKIP_B1=0 SKIP_B7=0 LAB=b1 (defaults; the whole
#        run takes about 3 minutes on 2 vCPUs). Machines shared with other work are noisy
#        (single runs of the same case vary by ±30 % here): prefer more runs to longer ones.
#        TORTIE_BIN_DIR=dir (default target/release if it holds tortie and tortie-cni, else target/debug)
# Output: a markdown report on stdout; progress on stderr.
set -euo pipefail

RUNS=${RUNS:-5}
SECS=${SECS:-3}
B7_PODS=${B7_PODS:-20}
B7_ROUNDS=${B7_ROUNDS:-2}
SKIP_B1=${SKIP_B1:-0}
SKIP_B7=${SKIP_B7:-0}
LAB=${LAB:-b1}
CNI_REF_DIR=${CNI_REF_DIR:-/usr/lib/cni}
CMDLINE="$0 $*"
ENVLINE="RUNS=$RUNS SECS=$SECS B7_PODS=$B7_PODS B7_ROUNDS=$B7_ROUNDS SKIP_B1=$SKIP_B1 SKIP_B7=$SKIP_B7 LAB=$LAB"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P="b1x$$"           # prefix of every namespace this script makes
TMP=""
LAB_UP=0
MADE_NS=()
SERVER_PIDFILES=()

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  local f pid ns
  for f in "${SERVER_PIDFILES[@]}"; do
    [[ -s $f ]] || continue
    pid=$(<"$f")
    # Only our own iperf3 (guards against PID reuse).
    if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == iperf3 ]]; then
      kill "$pid" 2>/dev/null
    fi
  done
  if ((LAB_UP)); then
    log "tortie lab down --name $LAB"
    "$TORTIE" lab down --name "$LAB" >&2 || log "warning: lab down failed"
  fi
  for ns in "${MADE_NS[@]}"; do
    ip netns delete "$ns" 2>/dev/null
  done
  # Anything else with this run's prefix (e.g. a namespace made just before a failure).
  while read -r ns _; do
    [[ $ns == "$P"-* ]] && ip netns delete "$ns" 2>/dev/null
  done < <(ip netns list 2>/dev/null)
  [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
  if ((rc != 0)); then log "failed (exit $rc); cleaned up"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Preconditions and binaries

[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces)"
for c in ip jq iperf3 awk sort timeout ss; do
  command -v "$c" >/dev/null || die "$c not found (scripts/install-deps.sh installs it)"
done
for p in ptp bridge host-local; do
  [[ -x $CNI_REF_DIR/$p ]] || die "$CNI_REF_DIR/$p missing (apt-get install containernetworking-plugins)"
done
[[ $RUNS =~ ^[1-9][0-9]?$ && $SECS =~ ^[1-9][0-9]?$ && $B7_PODS =~ ^[1-9][0-9]?$ && $B7_ROUNDS =~ ^[1-9]$ ]] ||
  die "RUNS, SECS, B7_PODS (1-99) and B7_ROUNDS (1-9) must be small positive integers"

if [[ -z ${TORTIE_BIN_DIR:-} ]]; then
  if [[ -x $ROOT/target/release/tortie && -x $ROOT/target/release/tortie-cni ]]; then
    TORTIE_BIN_DIR=$ROOT/target/release
  else
    TORTIE_BIN_DIR=$ROOT/target/debug
  fi
fi
if [[ ! -x $TORTIE_BIN_DIR/tortie || ! -x $TORTIE_BIN_DIR/tortie-cni || ! -x $TORTIE_BIN_DIR/tortie-ipam ]]; then
  [[ $TORTIE_BIN_DIR == "$ROOT/target/debug" ]] || die "tortie, tortie-cni or tortie-ipam missing in $TORTIE_BIN_DIR"
  log "debug binaries missing: cargo build --bins"
  (cd "$ROOT" && cargo build --bins) >&2
fi
TORTIE=$TORTIE_BIN_DIR/tortie
# The lab runs the tortie-cni beside the tortie binary it was started with.
export TORTIE_CNI_BIN=$TORTIE_BIN_DIR/tortie-cni

[[ ! -e /run/tortie/lab/$LAB ]] ||
  die "lab $LAB already exists (/run/tortie/lab/$LAB); remove it with: $TORTIE lab down --name $LAB"

TMP=$(mktemp -d "/tmp/$P.XXXXXX")

# ---------------------------------------------------------------------------------------------
# Small helpers

# ns_add NAME: a namespace with loopback up, remembered for cleanup.
ns_add() {
  ip netns add "$1"
  MADE_NS+=("$1")
  ip -n "$1" link set lo up
}

# nsctl NS key=value...: sysctls inside NS.
nsctl() {
  local ns=$1
  shift
  ip netns exec "$ns" sysctl -qw "$@" >/dev/null
}

# node_add NAME: a namespace that forwards.
node_add() {
  ns_add "$1"
  nsctl "$1" net.ipv4.ip_forward=1
}

# bare_pod NODE POD HOSTIF IP: a pod wired by hand as tortie-cni wires one: veth with the host
# end (MAC ee:ee:ee:ee:ee:ee, proxy ARP) in NODE, IP/32 on the pod's eth0, default route via
# 169.254.1.1 onlink with a permanent neighbour entry, and IP/32 dev HOSTIF in NODE.
bare_pod() {
  local node=$1 pod=$2 hif=$3 addr=$4
  ns_add "$pod"
  ip -n "$node" link add "$hif" type veth peer name eth0 netns "$pod"
  ip -n "$node" link set "$hif" address ee:ee:ee:ee:ee:ee
  nsctl "$node" "net.ipv4.conf.$hif.proxy_arp=1" "net.ipv4.neigh.$hif.proxy_delay=0" \
    "net.ipv4.conf.$hif.forwarding=1" "net.ipv4.conf.$hif.route_localnet=1"
  ip -n "$node" link set "$hif" up
  ip -n "$pod" addr add "$addr/32" dev eth0
  ip -n "$pod" link set eth0 up
  ip -n "$pod" route add 169.254.1.1 dev eth0 scope link
  ip -n "$pod" route add default via 169.254.1.1 dev eth0 onlink
  ip -n "$pod" neigh replace 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent
  ip -n "$node" route add "$addr/32" dev "$hif" scope link
}

# fabric_attach FABRIC NODE LINK ADDR/LEN: NODE's eth0 on FABRIC's br0.
fabric_attach() {
  local fab=$1 node=$2 link=$3 addr=$4
  ip -n "$fab" link add "$link" type veth peer name eth0 netns "$node"
  ip -n "$fab" link set "$link" master br0 up
  ip -n "$node" addr add "$addr" dev eth0
  ip -n "$node" link set eth0 up
}

# cni_call NODE PLUGIN COMMAND CONTAINER_ID POD_NETNS POD_NAME CNI_PATH CONF OUT: one plugin call as
# a runtime makes it, run inside NODE. Sets LAST_MS to its wall time (ms). Returns its status.
LAST_MS=0
cni_call() {
  local node=$1 plugin=$2 cmd=$3 cid=$4 podns=$5 podname=$6 cnipath=$7 conf=$8 out=$9
  local t0 t1 rc=0
  t0=$EPOCHREALTIME
  ip netns exec "$node" env CNI_COMMAND="$cmd" CNI_CONTAINERID="$cid" \
    CNI_NETNS="/run/netns/$podns" CNI_IFNAME=eth0 CNI_PATH="$cnipath" \
    "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=b7;K8S_POD_NAME=$podname;K8S_POD_INFRA_CONTAINER_ID=$cid" \
    "$plugin" <<<"$conf" >"$out" 2>>"$TMP/cni-stderr.log" || rc=$?
  t1=$EPOCHREALTIME
  LAST_MS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) * 1000 }')
  return "$rc"
}

# ptp_conf NAME SUBNET DATADIR / bridge_conf NAME SUBNET DATADIR: reference plugin configs.
ptp_conf() {
  jq -nc --arg n "$1" --arg s "$2" --arg d "$3" \
    '{cniVersion: "1.0.0", name: $n, type: "ptp", ipMasq: false, mtu: 1500,
      ipam: {type: "host-local", ranges: [[{subnet: $s}]], routes: [{dst: "0.0.0.0/0"}], dataDir: $d}}'
}
bridge_conf() {
  jq -nc --arg n "$1" --arg s "$2" --arg d "$3" \
    '{cniVersion: "1.0.0", name: $n, type: "bridge", bridge: "cni0", isGateway: true,
      ipMasq: false, mtu: 1500, ipam: {type: "host-local", ranges: [[{subnet: $s}]], routes: [{dst: "0.0.0.0/0"}], dataDir: $d}}'
}
# tortie_conf DATASTORE NODE V6(true|false): the config a Calico user has, type tortie-cni.
tortie_conf() {
  jq -nc --arg ds "$1" --arg node "$2" --arg v6 "$3" \
    '{cniVersion: "1.0.0", name: "k8s-pod-network", type: "tortie-cni", nodename: $node,
      mtu: 1500, datastore: $ds,
      ipam: {type: "tortie-ipam", assign_ipv4: "true", assign_ipv6: $v6}}'
}

# ptp_pod NODE POD SUBNET DATADIR: a pod networked by ptp + host-local; sets POD_IP.
POD_IP=""
ptp_pod() {
  local node=$1 pod=$2 conf out="$TMP/ptp-$2.json"
  conf=$(ptp_conf b1ptp "$3" "$4")
  ns_add "$pod"
  cni_call "$node" "$CNI_REF_DIR/ptp" ADD "cid-$pod" "$pod" "$pod" "$CNI_REF_DIR" "$conf" "$out" ||
    die "ptp ADD for $pod failed: $(cat "$out") $(tail -3 "$TMP/cni-stderr.log")"
  POD_IP=$(jq -r '.ips[0].address | split("/")[0]' "$out")
}

# wait_listen NS PORT: bounded wait (5 s) for a TCP listener.
wait_listen() {
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -n $(ip netns exec "$1" ss -Hltn "sport = :$2") ]] && return 0
    sleep 0.1
  done
  return 1
}

# start_server NS: iperf3 -s daemon in NS, PID in a pidfile for cleanup.
start_server() {
  local ns=$1 pf="$TMP/iperf3-$1.pid"
  SERVER_PIDFILES+=("$pf")
  ip netns exec "$ns" iperf3 -s -D --pidfile "$pf" >/dev/null
  wait_listen "$ns" 5201 || die "iperf3 server in $ns did not start listening"
}

# median of the arguments (numbers).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# pct Q values...: nearest-rank percentile.
pct() {
  local q=$1
  shift
  printf '%s\n' "$@" | sort -g | awk -v q="$q" '{ v[NR] = $1 } END {
    r = int(q * NR); if (r < q * NR) r++; if (r < 1) r = 1; printf "%.1f\n", v[r] }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "—" }'; }

# ---------------------------------------------------------------------------------------------
# Context

KERNEL=$(uname -r)
CPU=$(lscpu | awk -F: '/^Model name/ { gsub(/^[ \t]+/, "", $2); print $2; exit }')
NCPU=$(nproc)
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
IPERF_VER=$(iperf3 --version | head -1)
CNI_PKG=$(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo unknown)
PROFILE=$(basename "$TORTIE_BIN_DIR")
log "tortie binaries: $TORTIE_BIN_DIR ($PROFILE); kernel $KERNEL; $NCPU x $CPU; load $LOAD_START"

# ---------------------------------------------------------------------------------------------
# B1 setup

declare -A DESC CLIENT DST SHAPE
CASES=()
add_case() { # id client_ns dst_ip shape(same|cross|veth) description
  CASES+=("$1")
  CLIENT[$1]=$2
  DST[$1]=$3
  SHAPE[$1]=$4
  DESC[$1]=$5
}

if ((SKIP_B1 == 0 || SKIP_B7 == 0)); then
  log "tortie lab up --name $LAB --nodes 2"
  LAB_UP=1
  "$TORTIE" lab up --name "$LAB" --nodes 2 >"$TMP/lab-up.log" 2>&1 ||
    die "lab up failed: $(cat "$TMP/lab-up.log")"
fi

if ((SKIP_B1 == 0)); then
  log "B1: building the baselines"
  # (a) bare veth
  ns_add "$P-a1"
  ns_add "$P-a2"
  ip -n "$P-a1" link add eth0 type veth peer name eth0 netns "$P-a2"
  ip -n "$P-a1" addr add 198.18.101.1/24 dev eth0
  ip -n "$P-a2" addr add 198.18.101.2/24 dev eth0
  ip -n "$P-a1" link set eth0 up
  ip -n "$P-a2" link set eth0 up
  start_server "$P-a2"
  add_case a "$P-a1" 198.18.101.2 veth "bare veth (2 namespaces, 1 veth pair)"

  # (b) bare routed namespaces, nodes on a direct veth; pods 10.246.1.0/24 and 10.246.2.0/24
  node_add "$P-r1"
  node_add "$P-r2"
  ip -n "$P-r1" link add eth0 type veth peer name eth0 netns "$P-r2"
  ip -n "$P-r1" addr add 198.18.102.1/24 dev eth0
  ip -n "$P-r2" addr add 198.18.102.2/24 dev eth0
  ip -n "$P-r1" link set eth0 up
  ip -n "$P-r2" link set eth0 up
  bare_pod "$P-r1" "$P-rp1" veth-rp1 10.246.1.2
  bare_pod "$P-r1" "$P-rp2" veth-rp2 10.246.1.3
  bare_pod "$P-r2" "$P-rp3" veth-rp3 10.246.2.2
  ip -n "$P-r1" route add 10.246.2.0/24 via 198.18.102.2 dev eth0
  ip -n "$P-r2" route add 10.246.1.0/24 via 198.18.102.1 dev eth0
  start_server "$P-rp2"
  start_server "$P-rp3"
  add_case b-same "$P-rp1" 10.246.1.3 same "bare routed namespaces, same node (hand-wired, tortie's shape)"
  add_case b-cross "$P-rp1" 10.246.2.2 cross "bare routed namespaces, cross node, nodes on one direct veth"

  # Fabric bridge shared by the bridged bare nodes (f1, f2) and the ptp nodes (q1, q2).
  ns_add "$P-fab"
  ip -n "$P-fab" link add br0 type bridge
  ip -n "$P-fab" link set br0 up
  node_add "$P-f1"
  node_add "$P-f2"
  fabric_attach "$P-fab" "$P-f1" f1 198.18.103.1/24
  fabric_attach "$P-fab" "$P-f2" f2 198.18.103.2/24
  bare_pod "$P-f1" "$P-fp1" veth-fp1 10.246.3.2
  bare_pod "$P-f2" "$P-fp2" veth-fp2 10.246.4.2
  ip -n "$P-f1" route add 10.246.4.0/24 via 198.18.103.2 dev eth0
  ip -n "$P-f2" route add 10.246.3.0/24 via 198.18.103.1 dev eth0
  start_server "$P-fp2"
  add_case b-cross-br "$P-fp1" 10.246.4.2 cross "bare routed namespaces, cross node via a fabric bridge (tortie lab's underlay shape)"

  # (c) reference CNI: ptp + host-local, invoked by hand in the node namespaces
  node_add "$P-q1"
  node_add "$P-q2"
  fabric_attach "$P-fab" "$P-q1" q1 198.18.103.3/24
  fabric_attach "$P-fab" "$P-q2" q2 198.18.103.4/24
  ptp_pod "$P-q1" "$P-qp1" 10.247.1.0/24 "$TMP/hl-q1"
  ptp_pod "$P-q1" "$P-qp2" 10.247.1.0/24 "$TMP/hl-q1"
  QP2=$POD_IP
  ptp_pod "$P-q2" "$P-qp3" 10.247.2.0/24 "$TMP/hl-q2"
  QP3=$POD_IP
  ip -n "$P-q1" route add 10.247.2.0/24 via 198.18.103.4 dev eth0
  ip -n "$P-q2" route add 10.247.1.0/24 via 198.18.103.3 dev eth0
  start_server "$P-qp2"
  start_server "$P-qp3"
  add_case c-same "$P-qp1" "$QP2" same "ptp + host-local (reference CNI), same node"
  add_case c-cross "$P-qp1" "$QP3" cross "ptp + host-local, cross node via the fabric bridge, node routes by hand"

  # (d), (e) tortie lab pods
  log "B1: tortie lab pods"
  "$TORTIE" lab pod add "$LAB/cli" --node n1 --name "$LAB" >&2
  "$TORTIE" lab pod add "$LAB/srv1" --node n1 --name "$LAB" >&2
  "$TORTIE" lab pod add "$LAB/srv2" --node n2 --name "$LAB" >&2
  "$TORTIE" lab status --name "$LAB" -o json >"$TMP/lab-status.json"
  pod_ns() { jq -r --arg p "$1" '.pods[] | select(.name == $p) | .netns' "$TMP/lab-status.json"; }
  pod_ip() { jq -r --arg p "$1" '.pods[] | select(.name == $p) | .ips[0]' "$TMP/lab-status.json"; }
  TCLI=$(pod_ns "$LAB/cli")
  start_server "$(pod_ns "$LAB/srv1")"
  start_server "$(pod_ns "$LAB/srv2")"
  add_case d "$TCLI" "$(pod_ip "$LAB/srv1")" same "tortie, same node (lab pods on n1)"
  add_case e "$TCLI" "$(pod_ip "$LAB/srv2")" cross "tortie, cross node (n1 → n2 over the lab's fabric bridge)"

  # ---------------------------------------------------------------------------------------------
  # B1 runs
  declare -A GBPS CPUS
  run_one() { # case -> "gbps cpu"
    local id=$1 out="$TMP/iperf-$1.json" try
    for try in 1 2; do
      if timeout $((SECS + 20)) ip netns exec "${CLIENT[$id]}" \
        iperf3 -c "${DST[$id]}" -t "$SECS" -O 1 -J --connect-timeout 3000 >"$out" 2>&1 &&
        jq -e '.end.sum_received.bits_per_second' "$out" >/dev/null 2>&1; then
        jq -r '"\(.end.sum_received.bits_per_second / 1e9) \(.end.cpu_utilization_percent.host_total + .end.cpu_utilization_percent.remote_total)"' "$out"
        return 0
      fi
      log "case $id try $try failed: $(jq -r '.error // empty' "$out" 2>/dev/null || head -c 300 "$out")"
      sleep 1
    done
    return 1
  }
  n=${#CASES[@]}
  log "B1: $RUNS rounds x $n cases x ${SECS}s (+1 s omitted each)"
  for ((r = 0; r < RUNS; r++)); do
    for ((k = 0; k < n; k++)); do
      id=${CASES[$(((k + r) % n))]}
      res=$(run_one "$id") || die "iperf3 for case $id failed twice"
      read -r g c <<<"$res"
      GBPS[$id]="${GBPS[$id]:-} $g"
      CPUS[$id]="${CPUS[$id]:-} $c"
      log "  round $((r + 1)) $id: $(printf '%.2f' "$g") Gbit/s, cpu ${c%.*}%"
    done
  done
  declare -A MED MEDCPU
  for id in "${CASES[@]}"; do
    # shellcheck disable=SC2086
    MED[$id]=$(median ${GBPS[$id]})
    # shellcheck disable=SC2086
    MEDCPU[$id]=$(median ${CPUS[$id]})
  done
fi

# ---------------------------------------------------------------------------------------------
# B7: CNI ADD / DEL latency

declare -A B7_ADD B7_DEL B7_DESC B7_NODE B7_PLUGIN B7_CNIPATH B7_CONF
B7_ROWS=()
b7_register() { # id description node plugin cni_path conf
  B7_ROWS+=("$1")
  B7_DESC[$1]=$2
  B7_NODE[$1]=$3
  B7_PLUGIN[$1]=$4
  B7_CNIPATH[$1]=$5
  B7_CONF[$1]=$6
  B7_ADD[$1]=""
  B7_DEL[$1]=""
}
# b7_burst ID ROUND: B7_PODS sequential ADDs, then the same pods' DELs, each call timed.
# Pod namespaces are made before and removed after, untimed (the runtime's job).
b7_burst() {
  local id=$1 r=$2 i pod out cid
  for ((i = 0; i < B7_PODS; i++)); do ns_add "$P-k$i"; done
  for cmd in ADD DEL; do
    for ((i = 0; i < B7_PODS; i++)); do
      pod="$P-k$i"
      cid="$id-$$-$r-$i"
      out="$TMP/b7-$id-$r-$i-$cmd.json"
      cni_call "${B7_NODE[$id]}" "${B7_PLUGIN[$id]}" "$cmd" "$cid" "$pod" "$id-$r-$i" \
        "${B7_CNIPATH[$id]}" "${B7_CONF[$id]}" "$out" ||
        die "B7 $id $cmd $i failed: $(cat "$out") $(tail -3 "$TMP/cni-stderr.log")"
      if [[ $cmd == ADD ]]; then B7_ADD[$id]+=" $LAST_MS"; else B7_DEL[$id]+=" $LAST_MS"; fi
    done
  done
  for ((i = 0; i < B7_PODS; i++)); do ip netns delete "$P-k$i"; done
}

if ((SKIP_B7 == 0)); then
  node_add "$P-kn"
  b7_register ptp "ptp + host-local (IPv4)" "$P-kn" "$CNI_REF_DIR/ptp" "$CNI_REF_DIR" \
    "$(ptp_conf b7ptp 10.248.0.0/24 "$TMP/hl-b7ptp")"
  b7_register bridge "bridge + host-local (IPv4)" "$P-kn" "$CNI_REF_DIR/bridge" "$CNI_REF_DIR" \
    "$(bridge_conf b7br 10.248.1.0/24 "$TMP/hl-b7br")"
  # tortie-cni (with the tortie-ipam beside it) on the lab's node n1, against the lab's datastore,
  # its agent running. The preferred build (release if both binaries exist) in IPv4-only and in
  # the lab's dual-stack config; the debug build in IPv4 too when release is preferred.
  DS="file:/run/tortie/lab/$LAB/store.db"
  CNI_PROFILES=(debug)
  [[ -x $ROOT/target/release/tortie-cni && -x $ROOT/target/release/tortie-ipam ]] && CNI_PROFILES=(release debug)
  for prof in "${CNI_PROFILES[@]}"; do
    d=$ROOT/target/$prof
    [[ -x $d/tortie-cni && -x $d/tortie-ipam ]] || die "tortie-cni or tortie-ipam missing in $d"
    stale=""
    if [[ -n $(find "$ROOT"/crates/tortie-{cni,ipam,store,netlink,api}/src -name '*.rs' \
      -newer "$d/tortie-cni" -print -quit) ]]; then
      stale=", binary older than its sources"
    fi
    b7_register "tortie-$prof" "tortie-cni + tortie-ipam, $prof build (IPv4)$stale" "$LAB-n1" \
      "$d/tortie-cni" "$d" "$(tortie_conf "$DS" n1 false)"
    if [[ $prof == "${CNI_PROFILES[0]}" ]]; then
      b7_register "tortie-$prof-ds" "tortie-cni + tortie-ipam, $prof build, dual stack (the lab's config)$stale" \
        "$LAB-n1" "$d/tortie-cni" "$d" "$(tortie_conf "$DS" n1 true)"
    fi
  done

  log "B7: $B7_ROUNDS rounds x ${#B7_ROWS[@]} plugins x $B7_PODS sequential ADDs then DELs"
  # Floor: what `ip netns exec NODE` + exec costs without any plugin work.
  floor=""
  for ((i = 0; i < B7_PODS; i++)); do
    t0=$EPOCHREALTIME
    ip netns exec "$P-kn" true
    floor+=" $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", (b - a) * 1000 }')"
  done
  nb=${#B7_ROWS[@]}
  for ((r = 0; r < B7_ROUNDS; r++)); do
    for ((k = 0; k < nb; k++)); do
      id=${B7_ROWS[$(((k + r) % nb))]}
      b7_burst "$id" "$r"
    done
    log "  round $((r + 1)) done"
  done
  for id in "${B7_ROWS[@]}"; do
    # shellcheck disable=SC2086
    log "  $id: ADD p50 $(pct 0.5 ${B7_ADD[$id]}) ms, DEL p50 $(pct 0.5 ${B7_DEL[$id]}) ms"
  done
fi

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# Report

echo "# B1 / B7 run of $DATE"
echo
echo "- command: \`$CMDLINE\` ($ENVLINE)"
echo "- kernel $KERNEL; CPU: $NCPU × $CPU; load average at start $LOAD_START, at end $LOAD_END"
echo "- tortie binaries: \`${TORTIE_BIN_DIR#"$ROOT"/}\` ($PROFILE); $IPERF_VER; containernetworking-plugins $CNI_PKG"
if ((SKIP_B1 == 0)); then
  echo
  echo "## B1: pod-to-pod TCP throughput (one iperf3 stream, median of $RUNS × ${SECS} s)"
  echo
  echo "Ratios: to the bare routed namespaces of the same shape (same node → b-same, cross node → b-cross-br),"
  echo "to the bare veth (a), and to ptp of the same shape. CPU: iperf3 sender + receiver process CPU"
  echo "(user + system, % of one core), median; per Gbit/s = median CPU / median Gbit/s."
  echo
  echo "| case | what | median Gbit/s | runs | vs bare routed | vs bare veth | vs ptp | CPU % | CPU %/Gbit/s |"
  echo "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
  for id in "${CASES[@]}"; do
    runs=$(for g in ${GBPS[$id]}; do printf '%.1f ' "$g"; done)
    case ${SHAPE[$id]} in
      same) rb=$(ratio "${MED[$id]}" "${MED[b-same]}") rp=$(ratio "${MED[$id]}" "${MED[c-same]}") ;;
      cross) rb=$(ratio "${MED[$id]}" "${MED[b-cross-br]}") rp=$(ratio "${MED[$id]}" "${MED[c-cross]}") ;;
      *) rb="—" rp="—" ;;
    esac
    [[ $id == b-same || $id == b-cross-br ]] && rb="1.00× (ref)"
    [[ $id == c-same || $id == c-cross ]] && rp="1.00× (ref)"
    [[ $id == b-* ]] && rp="—"
    printf '| %s | %s | %.2f | %s| %s | %s | %s | %.0f | %.1f |\n' "$id" "${DESC[$id]}" "${MED[$id]}" "$runs" \
      "$rb" "$(ratio "${MED[$id]}" "${MED[a]}")" "$rp" "${MEDCPU[$id]}" \
      "$(awk -v c="${MEDCPU[$id]}" -v g="${MED[$id]}" 'BEGIN { print (g > 0 ? c / g : 0) }')"
  done
fi
if ((SKIP_B7 == 0)); then
  nsamp=$((B7_ROUNDS * B7_PODS))
  echo
  echo "## B7: CNI ADD / DEL latency (ms; $B7_ROUNDS rounds × $B7_PODS sequential pods = $nsamp samples per plugin)"
  echo
  echo "Each call is \`ip netns exec NODE plugin\` with the CNI env and config on stdin, as a runtime"
  echo "makes it; a round is $B7_PODS ADDs then their $B7_PODS DELs per plugin, plugins rotated between rounds."
  echo "p99 is the nearest-rank percentile of $nsamp samples (the maximum when there are fewer than 100)."
  echo "ADD pods/s = samples / total ADD time (sequential)."
  echo
  echo "| plugin | ADD p50 | ADD p99 | DEL p50 | DEL p99 | ADD pods/s | ADD p50 ÷ ptp's |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  # shellcheck disable=SC2086
  printf '| floor: `ip netns exec NODE true` | %s | %s | — | — | — | — |\n' "$(pct 0.5 $floor)" "$(pct 0.99 $floor)"
  # shellcheck disable=SC2086
  ptp50=$(pct 0.5 ${B7_ADD[ptp]})
  for id in "${B7_ROWS[@]}"; do
    # shellcheck disable=SC2086
    {
      a50=$(pct 0.5 ${B7_ADD[$id]})
      a99=$(pct 0.99 ${B7_ADD[$id]})
      d50=$(pct 0.5 ${B7_DEL[$id]})
      d99=$(pct 0.99 ${B7_DEL[$id]})
      rate=$(printf '%s\n' ${B7_ADD[$id]} | awk '{ s += $1 } END { printf "%.0f", NR * 1000 / s }')
    }
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${B7_DESC[$id]}" "$a50" "$a99" "$d50" "$d99" "$rate" \
      "$(ratio "$a50" "$ptp50")"
  done
fi
log "done"
