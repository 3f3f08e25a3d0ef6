#!/usr/bin/env bash
# Installs what brindle's tests need from Debian's packages, if missing.
# Idempotent and quiet when everything is there; called by `make test` and
# by .ci/run, because CI and a new session may start on a fresh machine.
set -euo pipefail
# Usage: install-deps.sh [k8s]   (k8s: also what the test cluster needs)

# command -> Debian package
declare -A need=(
  [ip]=iproute2          # the lab and troubleshooting docs
  [iptables]=iptables    # the reference portmap plugin in the chaining test
  [nft]=nftables         # inspecting brindle's NAT table
  [bird]=bird2           # the independent BGP peer in the e2e tests and bench-bgp
  [birdc]=bird2
  [ss]=iproute2
  [bridge]=iproute2      # inspecting vxlan.brindle's FDB
  [tcpdump]=tcpdump      # the encapsulation e2e tests capture on the underlay
  [iperf3]=iperf3        # make bench-dataplane
  [ping]=iputils-ping    # full-size DF pings in the dataplane e2e tests
  [tshark]=tshark        # the capture e2e test reads brindlectl capture's files with it
  [curl]=curl            # HTTP traffic in the capture e2e test
)
if [ "${1:-}" = k8s ]; then
  need+=(
    [containerd]=containerd   # the test cluster's nodes (test/k8s)
    [ctr]=containerd
    [runc]=runc
    [debootstrap]=debootstrap # the e2e test images' rootfs
    [openssl]=openssl         # the cluster's certificates
    [nsenter]=util-linux
    [conntrack]=conntrack     # kube-proxy
    [curl]=curl
    [/usr/lib/cni/loopback]=containernetworking-plugins  # the nodes' loopback plugin
  )
fi
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
  exit 0  # the tests that need them say so and skip or fail with the reason
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
