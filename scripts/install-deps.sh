#!/usr/bin/env bash
# Installs the system packages tortie's build and tests need on Debian 12 (run as root).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config ca-certificates curl git
  protobuf-compiler libprotobuf-dev # etcd-client builds its protos: protoc + the well-known types (google/protobuf/*.proto)
  etcd-server etcd-client    # real etcd for the datastore conformance tests
  iproute2 nftables iptables # kernel networking (namespaced tests)
  conntrack                  # policy conformance: forget old flows between steps
  iputils-ping               # policy conformance: ICMP rules
  containernetworking-plugins # reference CNI plugins (host-local) for benchmark baselines
  iperf3 jq                  # scripts/bench-throughput.sh (B1 throughput, B7 CNI latency)
  podman runc conmon         # real container runtime on a tortie-cni network (podman_e2e)
  busybox-static             # the podman_e2e containers' root filesystem (no image pulls)
  sqlite3                    # inspecting the embedded store by hand
  bird2 frr gobgpd           # real BGP peers: interop tests and the B9/B10 benchmarks
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # The BGP daemons' packages would start system services (bird, frr) in the root namespace;
  # tests run their own inside namespaces. policy-rc.d tells the packages not to start any.
  blocker=/usr/sbin/policy-rc.d
  own_blocker=false
  if [[ ! -e $blocker ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$blocker"
    chmod +x "$blocker"
    own_blocker=true
  fi
  status=0
  apt-get install -y -q --no-install-recommends "${missing[@]}" || status=$?
  if $own_blocker; then rm -f "$blocker"; fi
  ((status == 0)) || exit "$status"
fi

# The Debian etcd package starts a system etcd on 127.0.0.1:2379; tests start their own on
# free ports, so stop the packaged service if it is running to keep the machine quiet.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install Rust 1.95 or newer (rustup)" >&2
  exit 1
fi
echo "install-deps: ok"
