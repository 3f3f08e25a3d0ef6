# The control plane (sourced): etcd, kube-apiserver, kube-controller-manager
# and kube-scheduler as processes in the control-plane node's network
# namespace, like kubeadm's static pods (hostNetwork) on a kind node.
# shellcheck shell=bash

controlplane_up() {
	local P=$STATE/pki
	mkdir -p "$STATE/etcd"
	# The apiserver's own etcd, on the node's loopback. brindle's etcd
	# (conf/k8s/etcd) uses 6666/6667 on the same node.
	start etcd control-plane/daemons in_net control-plane "$K8S_BIN/etcd" \
		--name=control-plane --data-dir="$STATE/etcd" \
		--listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
		--listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
		--initial-cluster=control-plane=http://127.0.0.1:2380 --listen-metrics-urls=http://127.0.0.1:2381 \
		--quota-backend-bytes=4294967296 --snapshot-count=10000 --log-level=warn
	retry 30 in_net control-plane curl -sf http://127.0.0.1:2381/health || die "etcd did not start: $STATE/logs/etcd.log"

	start kube-apiserver control-plane/daemons in_net control-plane "$K8S_BIN/kube-apiserver" \
		--advertise-address="$CP_IP" --bind-address=0.0.0.0 --secure-port=6443 \
		--etcd-servers=http://127.0.0.1:2379 \
		--service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
		--tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
		--client-ca-file="$P/ca.crt" \
		--kubelet-client-certificate="$P/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$P/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types=InternalIP \
		--service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
		--service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
		--allow-privileged=true --profiling=false --v=1
	retry 90 kctl get --raw /readyz || die "kube-apiserver is not ready: $STATE/logs/kube-apiserver.log"

	start kube-controller-manager control-plane/daemons in_net control-plane "$K8S_BIN/kube-controller-manager" \
		--kubeconfig="$P/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$P/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$P/controller-manager.kubeconfig" \
		--service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
		--use-service-account-credentials=true \
		--cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
		--controllers='*,bootstrapsigner,tokencleaner' --allocate-node-cidrs=false \
		--leader-elect=false --bind-address=127.0.0.1 --profiling=false --v=1
	start kube-scheduler control-plane/daemons in_net control-plane "$K8S_BIN/kube-scheduler" \
		--kubeconfig="$P/scheduler.kubeconfig" \
		--authentication-kubeconfig="$P/scheduler.kubeconfig" \
		--authorization-kubeconfig="$P/scheduler.kubeconfig" \
		--leader-elect=false --bind-address=127.0.0.1 --profiling=false --v=1
	# Pods wait for their namespace's service account, which the
	# controller-manager creates.
	retry 60 kctl -n default get serviceaccount default || die "no default service account: $STATE/logs/kube-controller-manager.log"
}
