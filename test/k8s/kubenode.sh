#!/usr/bin/env bash
# A dead node on the test cluster, for test/k8s/smoke's TestKubeDestructive*
# (make k8s-kube, docs/kubernetes.md): the test calls it with the node's
# Kubernetes name (kube-worker, ...).
#
#   kubenode.sh freeze NODE [brindled]  SIGSTOP the node's kubelet (and its brindled)
#   kubenode.sh thaw NODE               SIGCONT both
#   kubenode.sh restart-kubelet NODE    kubelet stopped and started again: it
#                                       registers its Node anew after a deletion
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/k8s/env.sh
. "$here/env.sh"
for f in common node; do
	# shellcheck disable=SC1090
	. "$here/lib/$f.sh"
done
[ $# -ge 2 ] || die "usage: kubenode.sh freeze|thaw|restart-kubelet NODE [brindled]"
cmd=$1 n=${2#"$CLUSTER"-}
[ -n "${NODE_IP[$n]:-}" ] || die "no node $2 in cluster $CLUSTER"

kubelet_pid() { cat "$STATE/pids/kubelet-$n"; }

# brindled's pids: the processes named brindled among the node's pods.
brindled_pids() {
	local p
	for p in $(cgroup_pids "k8s-$CLUSTER/$n/pods"); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = brindled ] && echo "$p"
	done
	return 0
}

case $cmd in
freeze)
	kill -STOP "$(kubelet_pid)"
	if [ "${3:-}" = brindled ]; then
		pids=$(brindled_pids)
		[ -n "$pids" ] || die "no brindled on $n"
		# shellcheck disable=SC2086
		kill -STOP $pids
	fi
	;;
thaw)
	kill -CONT "$(kubelet_pid)" 2>/dev/null || true
	for p in $(brindled_pids); do kill -CONT "$p" 2>/dev/null || true; done
	;;
restart-kubelet)
	pid=$(kubelet_pid)
	kill -CONT "$pid" 2>/dev/null || true
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
	kill -9 "$pid" 2>/dev/null || true
	node_kubelet "$n"
	;;
*) die "unknown command $cmd" ;;
esac
