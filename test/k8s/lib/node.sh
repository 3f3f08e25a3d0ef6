# A node (sourced): its own network, mount and UTS namespaces, containerd,
# kubelet and kube-proxy, as in a kind node container. The host directories
# a node writes are private to it: each is a bind mount of
# $STATE/nodes/<node>/<dir> inside the node's mount namespace.
# shellcheck shell=bash

# Host paths each node has to itself.
NODE_DIRS=(/var/lib/kubelet /var/lib/containerd /run/containerd /run/netns /etc/cni/net.d
	/opt/cni/bin /var/lib/cni /var/log/pods /var/log/containers /var/lib/brindle /var/log/brindle
	/var/lib/brindle-etcd /etc/kubernetes)

# Registries the images could name: inside a node they resolve to loopback,
# where nothing listens, so a pull fails at once and never leaves the node.
REGISTRIES="registry.k8s.io gcr.io k8s.gcr.io quay.io ghcr.io docker.io registry-1.docker.io index.docker.io"

node_mounts() {
	local n=$1 d=$STATE/nodes/$1 p
	mkdir -p "$STATE/ns"
	if ! mountpoint -q "$STATE/ns"; then
		mount --bind "$STATE/ns" "$STATE/ns"
		mount --make-private "$STATE/ns"
	fi
	touch "$STATE/ns/$n.mnt" "$STATE/ns/$n.uts"
	unshare --mount="$STATE/ns/$n.mnt" --uts="$STATE/ns/$n.uts" --propagation private true
	for p in "${NODE_DIRS[@]}"; do
		mkdir -p "$d$p"
		if [ ! -e "$p" ]; then
			mkdir -p "$p"
			echo "$p" >>"$STATE/made-dirs"
		fi
	done
	# The runtime's own CNI plugin, as a kind node image has it: containerd
	# brings up every pod's lo with `loopback` from its bin_dir.
	install -m 0755 /usr/lib/cni/loopback "$d/opt/cni/bin/loopback"
	printf '%s\n' "# $CLUSTER test cluster: no resolver beyond the cluster" "nameserver 127.0.0.1" >"$STATE/resolv.conf"
	{ echo "127.0.0.1 localhost"; echo "${NODE_IP[$n]} $(node_name "$n")"; for p in $REGISTRIES; do echo "127.0.0.1 $p"; done; } >"$d/hosts"
	openssl rand -hex 16 >"$d/machine-id"
	# Inside the node: its hostname, shared propagation of its own (kubelet
	# wants it), the private directories, and a sysfs of its own network
	# namespace (the machine's would show the machine's interfaces) with the
	# machine's cgroup mounts moved under it.
	in_node "$n" bash -euc '
		d=$1; name=$2; shift 2
		hostname "$name"
		# (a mount can be moved only while its parent is private)
		mkdir -p "$d/.cgroup"
		mount --rbind /sys/fs/cgroup "$d/.cgroup"
		mount -t sysfs sysfs /sys
		mount --move "$d/.cgroup" /sys/fs/cgroup
		for p in "$@"; do mount --bind "$d$p" "$p"; done
		mount --bind "$d/hosts" /etc/hosts
		mount --bind "$d/machine-id" /etc/machine-id
		mount --bind "'"$STATE"'/resolv.conf" /etc/resolv.conf
		mount --make-rshared /
	' _ "$d" "$(node_name "$n")" "${NODE_DIRS[@]}"
}

node_containerd() {
	local n=$1 d=$STATE/nodes/$1
	cat >"$d/containerd.toml" <<-EOF
		version = 2
		root = "/var/lib/containerd"
		state = "/run/containerd"
		disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
		  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
		  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
		[grpc]
		  address = "/run/containerd/containerd.sock"
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "registry.k8s.io/pause:3.10.1"
		  # This machine's root lacks CAP_SYS_RESOURCE.
		  restrict_oom_score_adj = true
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "/opt/cni/bin"
		    conf_dir = "/etc/cni/net.d"
	EOF
	start "containerd-$n" "$n/daemons" in_node "$n" containerd --config "$d/containerd.toml"
	retry 30 in_node "$n" ctr -a /run/containerd/containerd.sock version || die "containerd on $n did not start: $STATE/logs/containerd-$n.log"
}

# node_images NODE TAR...: the images into the node's containerd, where the
# kubelet finds them (namespace k8s.io) and never pulls.
node_images() {
	local n=$1; shift
	local t
	for t in "$@"; do
		in_node "$n" ctr -a /run/containerd/containerd.sock -n k8s.io images import --no-unpack=false "$t" >/dev/null ||
			die "import $t on $n failed"
	done
}

node_kubelet() {
	local n=$1 d=$STATE/nodes/$1 P=$STATE/pki
	cgroup_make "k8s-$CLUSTER/$n/pods"
	# The memory hierarchy too: kubelet checks the root exists everywhere.
	mkdir -p "/sys/fs/cgroup/memory/k8s-$CLUSTER/$n/pods"
	cat >"$d/kubelet.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		# This machine has cgroup v1 only.
		failCgroupV1: false
		cgroupDriver: cgroupfs
		cgroupRoot: /k8s-$CLUSTER/$n/pods
		containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
		authentication:
		  anonymous: {enabled: false}
		  webhook: {enabled: true}
		  x509: {clientCAFile: $P/ca.crt}
		authorization: {mode: Webhook}
		tlsCertFile: $P/kubelet-$n-serving.crt
		tlsPrivateKeyFile: $P/kubelet-$n-serving.key
		clusterDomain: $CLUSTER_DOMAIN
		clusterDNS: [$DNS_SVC_IP]
		resolvConf: $STATE/resolv.conf
		volumePluginDir: /var/lib/kubelet/volume-plugins
		failSwapOn: false
		serializeImagePulls: false
		# Every node sees the whole machine's disk: do not evict for it.
		evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
		imageGCHighThresholdPercent: 100
		healthzBindAddress: 127.0.0.1
		readOnlyPort: 0
		maxPods: 110
		rotateCertificates: false
	EOF
	local taints=()
	[ "$n" = control-plane ] && taints=(--register-with-taints=node-role.kubernetes.io/control-plane:NoSchedule)
	start "kubelet-$n" "$n/daemons" in_node "$n" "$K8S_BIN/kubelet" \
		--config="$d/kubelet.yaml" --kubeconfig="$P/kubelet-$n.kubeconfig" \
		--node-ip="${NODE_IP[$n]}" --root-dir=/var/lib/kubelet "${taints[@]}" --v=1
}

node_kube_proxy() {
	local n=$1 d=$STATE/nodes/$1
	cat >"$d/kube-proxy.yaml" <<-EOF
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		mode: iptables
		clientConnection: {kubeconfig: $STATE/pki/kube-proxy.kubeconfig}
		hostnameOverride: $(node_name "$n")
		bindAddress: ${NODE_IP[$n]}
		clusterCIDR: $POD_CIDR
		metricsBindAddress: 127.0.0.1:10249
		healthzBindAddress: 127.0.0.1:10256
		# Not the machine's conntrack table size: a node is a namespace.
		conntrack: {maxPerCore: 0}
	EOF
	start "kube-proxy-$n" "$n/daemons" in_node "$n" "$K8S_BIN/kube-proxy" --config="$d/kube-proxy.yaml" --v=1
}

node_up() {
	node_mounts "$1"
	node_containerd "$1"
	node_images "$1" "$K8S_IMAGES"/*.tar "$STATE/brindle-image.tar"
	node_kubelet "$1"
	node_kube_proxy "$1"
}
