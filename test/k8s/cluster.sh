#!/usr/bin/env bash
# A real Kubernetes v1.34.4 on this machine, with brindle as its CNI,
# installed from conf/k8s/ the way the README tells an operator to.
#
#   cluster.sh up       build what is missing, start the cluster, install brindle
#   cluster.sh down     stop and remove everything up made
#   cluster.sh status   what is running
#   cluster.sh check    prove that nothing leaves the machine
#   cluster.sh reinstall  rebuild brindle's image from the tree, import it on
#                       every node and restart the DaemonSet
#
# Layout (docs/kubernetes.md): a switch namespace and three nodes —
# control-plane (etcd, apiserver, controller-manager and scheduler as
# processes, plus a kubelet so that it runs brindle and routes to pods,
# tainted NoSchedule as on kind), worker and worker2 — each with its own
# network, mount and UTS namespaces, containerd, kubelet and kube-proxy.
# CLUSTER=name (and CLUSTER_INDEX=N) run a second cluster beside the first;
# WORKERS=N makes N workers (default 2), ZONES=M spreads them over M zones
# (default: a zone each).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=test/k8s/env.sh
. "$HERE/env.sh"
for f in common net pki controlplane node images; do
	# shellcheck disable=SC1090
	. "$HERE/lib/$f.sh"
done

# Host sysctls kubelet and kube-proxy change (vm.overcommit_memory,
# kernel.panic, kernel.panic_on_oops): recorded before and restored after.
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

brindle_image() {
	log "brindle image from $ROOT"
	make -C "$ROOT" --no-print-directory -s build refplugins >&2
	BIN=$ROOT/bin "$ROOT/scripts/image.sh" "$STATE/brindle-image.tar" >&2
}

install_brindle() {
	log "brindle: kubectl apply -f conf/k8s/00-namespace.yaml -f conf/k8s/etcd/; kubectl apply -f conf/k8s/"
	kctl apply -f "$ROOT/conf/k8s/00-namespace.yaml" -f "$ROOT/conf/k8s/etcd/" >&2
	kctl apply -f "$ROOT/conf/k8s/" >&2
}

wait_ready() {
	log "waiting for the nodes to be Ready (brindle's CNI config makes them so)"
	kctl wait --for=condition=Ready node --all --timeout=300s >&2 ||
		{ kctl get nodes -o wide >&2; kctl -n brindle-system get pods -o wide >&2; die "nodes not Ready"; }
	kctl -n brindle-system rollout status daemonset/brindle-node --timeout=300s >&2
	kctl -n brindle-system wait --for=condition=complete job/brindle-ippools --timeout=300s >&2
	kctl apply -f "$HERE/manifests/coredns.yaml" >&2
	kctl -n kube-system rollout status deployment/coredns --timeout=300s >&2
}

nodes_registered() { [ "$(kctl get nodes -o name | wc -l)" -eq ${#NODES[@]} ]; }
pod_succeeded() { kctl get pod "$1" -o jsonpath='{.status.phase}' | grep -qx Succeeded; }

cmd_up() {
	need_root
	if [ -d "$STATE" ] && [ -f "$STATE/up" ]; then
		die "cluster $CLUSTER is already up (cluster.sh down first)"
	fi
	"$ROOT/scripts/install-deps.sh" k8s
	log "building Kubernetes $K8S_VERSION into $K8S_BIN (skipped when there)"
	"$HERE/build.sh" kubectl kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd agnhost regression-issue-74839 coredns pause mkimage
	images_build
	mkdir -p "$STATE"
	touch "$STATE/up"
	echo "$WORKERS" >"$STATE/workers"
	local s
	if [ ! -f "$STATE/../sysctls.saved" ]; then
		for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$STATE/../sysctls.saved"
	fi
	brindle_image
	log "network: $GW_NS and a namespace per node on $UNDERLAY.0/24"
	net_up
	pki_up
	log "control plane on $CP_IP"
	controlplane_up
	local n
	for n in "${NODES[@]}"; do
		log "node $(node_name "$n") (${NODE_IP[$n]})"
		node_up "$n"
	done
	retry 120 nodes_registered ||
		die "not every kubelet registered: $STATE/logs/"
	kctl label node "$(node_name control-plane)" node-role.kubernetes.io/control-plane= --overwrite >&2
	for n in "${NODES[@]}"; do
		kctl label node "$(node_name "$n")" "topology.kubernetes.io/zone=${NODE_ZONE[$n]}" --overwrite >&2
	done
	install_brindle
	wait_ready
	cmd_check
	kctl get nodes -o wide
	kctl get pods -A -o wide
}

cmd_reinstall() {
	need_root
	brindle_image
	local n
	for n in "${NODES[@]}"; do node_images "$n" "$STATE/brindle-image.tar"; done
	install_brindle
	kctl -n brindle-system rollout restart daemonset/brindle-node >&2
	kctl -n brindle-system rollout status daemonset/brindle-node --timeout=300s >&2
}

stop_all() {
	local pids pass
	# kubelets first (they would restart what we stop), then everything in
	# the cluster's cgroups: daemons, container shims and containers.
	for pass in TERM TERM KILL KILL KILL; do
		pids=$(cgroup_pids "k8s-$CLUSTER")
		[ -n "$pids" ] || return 0
		# shellcheck disable=SC2086
		kill -s "$pass" $pids 2>/dev/null || true
		sleep 2
	done
	pids=$(cgroup_pids "k8s-$CLUSTER")
	[ -z "$pids" ] || echo "k8s: processes survived: $pids" >&2
}

cmd_down() {
	need_root
	local n p
	log "stopping cluster $CLUSTER"
	for n in "${NODES[@]}"; do
		if [ -f "$STATE/pids/kubelet-$n" ]; then kill "$(cat "$STATE/pids/kubelet-$n")" 2>/dev/null || true; fi
	done
	stop_all
	# The node mount namespaces go with their last reference; containers'
	# mounts and network namespaces were made inside them.
	for n in "${NODES[@]}"; do
		umount "$STATE/ns/$n.mnt" 2>/dev/null || true
		umount "$STATE/ns/$n.uts" 2>/dev/null || true
	done
	mountpoint -q "$STATE/ns" 2>/dev/null && umount "$STATE/ns"
	net_down
	cgroup_remove "k8s-$CLUSTER"
	if [ -f "$STATE/made-dirs" ]; then
		sort -ru "$STATE/made-dirs" | while read -r p; do rmdir "$p" 2>/dev/null || true; done
	fi
	# The machine's sysctls back as they were, once the last cluster is down.
	local other=0 u
	for u in "$STATE"/../*/up; do [ -e "$u" ] && [ "$u" != "$STATE/../$CLUSTER/up" ] && other=1; done
	if [ -f "$STATE/../sysctls.saved" ] && [ $other -eq 0 ]; then
		while IFS='=' read -r k v; do sysctl -qw "$k=$v" || true; done <"$STATE/../sysctls.saved"
		rm -f "$STATE/../sysctls.saved"
	fi
	# Keep nothing but the logs of the last run.
	if [ -d "$STATE" ]; then
		rm -rf "$STATE.logs"; mv "$STATE/logs" "$STATE.logs" 2>/dev/null || true
		rm -rf "$STATE"
	fi
	log "cluster $CLUSTER removed (logs of the run: $STATE.logs)"
}

cmd_status() {
	if [ ! -f "$STATE/up" ]; then echo "cluster $CLUSTER: down"; return 0; fi
	echo "cluster $CLUSTER: up ($STATE)"
	local f
	for f in "$STATE"/pids/*; do
		printf '  %-32s %s\n' "$(basename "$f")" "$(running "$(basename "$f")" && echo running || echo STOPPED)"
	done
	kctl get nodes -o wide 2>/dev/null || true
}

# cmd_check: nothing leaves the machine. Structure (no link out, every
# default route to the switch, which routes nothing), then packets: from
# the control plane's namespace, a node, and a pod, packets to addresses
# outside the cluster must all end in the switch's drop counter; and a pull
# from a registry fails on the node itself.
cmd_check() {
	need_root
	log "check: nothing leaves the machine"
	net_isolated || die "check: the cluster's namespaces have a way out"
	local before after sent=0 dst
	before=$(leaving_packets)
	# 192.0.2.1 and 198.51.100.1 are documentation addresses; 8.8.8.8 is
	# what a misconfigured resolver would try.
	for dst in 192.0.2.1 198.51.100.1 8.8.8.8; do
		in_net control-plane ping -c 2 -W 1 "$dst" >/dev/null 2>&1 && die "check: $dst answered the control plane"
		in_node worker ping -c 2 -W 1 "$dst" >/dev/null 2>&1 && die "check: $dst answered a node"
		sent=$((sent + 4))
	done
	kctl run brindle-check-egress --image=registry.k8s.io/e2e-test-images/agnhost:2.56 --restart=Never \
		--overrides='{"spec":{"nodeName":"'"$(node_name worker2)"'"}}' --command -- \
		sh -c 'for d in 192.0.2.1 198.51.100.1 8.8.8.8; do ping -c 2 -W 1 $d && exit 1; done; nslookup -timeout=1 example.com && exit 1; exit 0' >/dev/null
	if ! retry 90 pod_succeeded brindle-check-egress; then
		kctl logs brindle-check-egress >&2 || true
		kctl delete pod brindle-check-egress --now >/dev/null 2>&1 || true
		die "check: a pod reached outside the cluster, or did not run"
	fi
	kctl delete pod brindle-check-egress --now >/dev/null
	sent=$((sent + 6))
	after=$(leaving_packets)
	[ $((after - before)) -ge "$sent" ] ||
		die "check: $sent packets sent to outside addresses but the switch counted $((after - before)): they went elsewhere"
	# The registries resolve to the node's loopback: a pull fails on the node.
	if in_node worker timeout 20 ctr -a /run/containerd/containerd.sock -n k8s.io images pull registry.k8s.io/brindle-no-such-image:0 >/dev/null 2>&1; then
		die "check: a registry answered a pull"
	fi
	log "check: ok — no link out; $((after - before)) packets to outside addresses from the control plane, a node and a pod all dropped at the switch; registry pulls fail on the node"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
check) cmd_check ;;
reinstall) cmd_reinstall ;;
*) echo "usage: cluster.sh up|down|status|check|reinstall" >&2; exit 2 ;;
esac
