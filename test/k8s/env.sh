# Shared settings of the test cluster's scripts (sourced, not run).
# shellcheck shell=bash
K8S_VERSION=${K8S_VERSION:-v1.34.4}
K8S_VERSION_MAJOR=${K8S_VERSION#v}; K8S_VERSION_MAJOR=${K8S_VERSION_MAJOR%%.*}
K8S_VERSION_MINOR=${K8S_VERSION#v*.}; K8S_VERSION_MINOR=${K8S_VERSION_MINOR%%.*}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.1}
# Built binaries and images live outside the repository, once per version.
BRINDLE_K8S_CACHE=${BRINDLE_K8S_CACHE:-/var/cache/brindle-k8s}
K8S_BIN=$BRINDLE_K8S_CACHE/$K8S_VERSION/bin
K8S_IMAGES=${K8S_IMAGES:-$BRINDLE_K8S_CACHE/images}

# One cluster per name; CLUSTER_INDEX picks its underlay (172.30.<index>.0/24)
# so that two clusters can run side by side.
CLUSTER=${CLUSTER:-brindle}
CLUSTER_INDEX=${CLUSTER_INDEX:-0}
STATE=${BRINDLE_K8S_STATE:-/var/lib/brindle-k8s}/$CLUSTER
NS_PREFIX=k8s-$CLUSTER
UNDERLAY=172.30.$CLUSTER_INDEX
GW_IP=$UNDERLAY.1
CP_IP=$UNDERLAY.10
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
POD_CIDR=10.244.0.0/16
CLUSTER_DOMAIN=cluster.local
# Node names as kind spells them; the control plane is a node too (it runs
# brindle, so the apiserver reaches pod addresses), tainted NoSchedule.
# WORKERS=N (default 2; a running cluster keeps the number it was made with)
# workers: worker, worker2, ... at .11, .12, ...;
# worker i is in zone ((i-1) mod ZONES)+1 (topology.kubernetes.io/zone zone-1,
# ...; ZONES defaults to one zone per worker), the control plane in zone-1.
WORKERS=${WORKERS:-$(cat "$STATE/workers" 2>/dev/null || echo 2)}
ZONES=${ZONES:-$WORKERS}
NODES=(control-plane)
declare -A NODE_IP=([control-plane]=$UNDERLAY.10)
declare -A NODE_ZONE=([control-plane]=zone-1)
for ((_i = 1; _i <= WORKERS; _i++)); do
	_n=worker; [ "$_i" -gt 1 ] && _n=worker$_i
	NODES+=("$_n"); NODE_IP[$_n]=$UNDERLAY.$((10 + _i)); NODE_ZONE[$_n]=zone-$(( (_i - 1) % ZONES + 1 ))
done
unset _i _n
node_name() { if [ "$1" = control-plane ]; then echo "$CLUSTER-control-plane"; else echo "$CLUSTER-$1"; fi; }
node_ns() { echo "$NS_PREFIX-$1"; }
GW_NS=$NS_PREFIX-gw
