# Helpers shared by the cluster scripts (sourced).
# shellcheck shell=bash

log() { printf '%s k8s: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'k8s: %s\n' "$*" >&2; exit 1; }

need_root() {
	[ "$(id -u)" -eq 0 ] || die "needs root (network and mount namespaces, cgroups)"
}

# retry SECONDS CMD...: runs CMD every second until it succeeds.
retry() {
	local deadline=$(( $(date +%s) + $1 )); shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 1
	done
}

# in_net NODE CMD...: CMD in the node's network namespace only (the host's
# mounts), as the control plane's processes and the e2e runner run.
in_net() { local n=$1; shift; nsenter --net="/run/netns/$(node_ns "$n")" -- "$@"; }

# in_node NODE CMD...: CMD inside the node: its network, mount and UTS
# namespaces, as the node's containerd and kubelet see the machine.
in_node() {
	local n=$1; shift
	nsenter --net="/run/netns/$(node_ns "$n")" --mount="$STATE/ns/$n.mnt" --uts="$STATE/ns/$n.uts" -- "$@"
}

kctl() { in_net control-plane "$K8S_BIN/kubectl" --kubeconfig "$STATE/pki/admin.kubeconfig" "$@"; }

# The cgroups of the cluster: every process it starts is in
# <hierarchy>/k8s-$CLUSTER/<group>, so that `down` finds and stops all of
# them, container shims included. The memory hierarchy is left alone for
# the daemons (they stay where they were started) but kubelet's pod cgroup
# root must exist there too.
cgroup_hierarchies() {
	local h
	for h in /sys/fs/cgroup/*; do
		[ -d "$h" ] && [ "$(basename "$h")" != unified ] && mountpoint -q "$h" && echo "$h"
	done
}

# cgroup_make PATH: the cgroup in every v1 hierarchy, cpuset filled in from
# its parent at each level (a cpuset without cpus and mems takes no task).
cgroup_make() {
	local h rel part cur
	for h in $(cgroup_hierarchies); do
		cur=$h
		IFS=/ read -ra rel <<<"${1#/}"
		for part in "${rel[@]}"; do
			[ -d "$cur/$part" ] || mkdir "$cur/$part"
			if [ -f "$cur/cpuset.cpus" ] && [ -z "$(cat "$cur/$part/cpuset.cpus")" ]; then
				cat "$cur/cpuset.cpus" >"$cur/$part/cpuset.cpus"
				cat "$cur/cpuset.mems" >"$cur/$part/cpuset.mems"
			fi
			cur=$cur/$part
		done
	done
}

# cgroup_pids PATH: every process in the cgroup tree (pids hierarchy).
cgroup_pids() {
	local d=/sys/fs/cgroup/pids/${1#/}
	[ -d "$d" ] || return 0
	find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
}

# cgroup_remove PATH: the cgroup trees, deepest first (they must be empty).
cgroup_remove() {
	local h
	for h in $(cgroup_hierarchies); do
		[ -d "$h/${1#/}" ] && find "$h/${1#/}" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	return 0
}

# start NAME GROUP CMD...: CMD in the background, in cgroup GROUP (pids,
# freezer and cpu hierarchies), logging to logs/NAME.log, pid in pids/NAME.
start() {
	local name=$1 group=$2; shift 2
	mkdir -p "$STATE/logs" "$STATE/pids"
	cgroup_make "k8s-$CLUSTER/$group"
	# in_net/in_node are functions: spell out their nsenter for exec.
	case $1 in
	in_net) set -- nsenter --net="/run/netns/$(node_ns "$2")" -- "${@:3}" ;;
	in_node) set -- nsenter --net="/run/netns/$(node_ns "$2")" --mount="$STATE/ns/$2.mnt" --uts="$STATE/ns/$2.uts" -- "${@:3}" ;;
	esac
	# shellcheck disable=SC2016
	setsid bash -c '
		for h in pids freezer cpu cpuacct; do
			[ -d "/sys/fs/cgroup/$h/$0" ] && echo $$ > "/sys/fs/cgroup/$h/$0/cgroup.procs"
		done
		exec "$@"' "k8s-$CLUSTER/$group" "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$STATE/pids/$name"
}

running() { [ -f "$STATE/pids/$1" ] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }
