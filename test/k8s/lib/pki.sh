# The cluster's certificates and kubeconfigs (sourced), made with openssl the
# way kubeadm lays them out: one CA, the apiserver's serving certificate, a
# client certificate per component and per kubelet, the service-account key.
# shellcheck shell=bash

# cert NAME CN [O] [SANS]: an EC key and a certificate signed by the CA.
cert() {
	local name=$1 cn=$2 o=${3:-} sans=${4:-} subj ext=()
	subj="/CN=$cn"
	[ -n "$o" ] && subj="/O=$o$subj"
	[ -n "$sans" ] && ext=(-addext "subjectAltName=$sans")
	openssl ecparam -name prime256v1 -genkey -noout -out "$P/$name.key" 2>/dev/null
	openssl req -new -key "$P/$name.key" -subj "$subj" "${ext[@]}" -out "$P/$name.csr" 2>/dev/null
	openssl x509 -req -in "$P/$name.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial \
		-days 3650 -copy_extensions copyall -out "$P/$name.crt" 2>/dev/null
	rm -f "$P/$name.csr"
	chmod 600 "$P/$name.key"
}

# kubeconfig NAME CERT: a kubeconfig for the apiserver with that client cert.
kubeconfig() {
	local name=$1 c=$2
	cat >"$P/$name.kubeconfig" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: $CLUSTER
		  cluster:
		    server: https://$CP_IP:6443
		    certificate-authority-data: $(base64 -w0 "$P/ca.crt")
		users:
		- name: $name
		  user:
		    client-certificate-data: $(base64 -w0 "$P/$c.crt")
		    client-key-data: $(base64 -w0 "$P/$c.key")
		contexts:
		- name: $CLUSTER
		  context: {cluster: $CLUSTER, user: $name}
		current-context: $CLUSTER
	EOF
	chmod 600 "$P/$name.kubeconfig"
}

pki_up() {
	P=$STATE/pki
	mkdir -p "$P"
	[ -f "$P/admin.kubeconfig" ] && return 0
	openssl ecparam -name prime256v1 -genkey -noout -out "$P/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$P/ca.key" -subj "/CN=$CLUSTER-ca" -days 3650 -out "$P/ca.crt" 2>/dev/null
	cert apiserver kube-apiserver "" \
		"IP:$CP_IP,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
	cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
	cert admin kubernetes-admin system:masters
	cert controller-manager system:kube-controller-manager
	cert scheduler system:kube-scheduler
	cert kube-proxy system:kube-proxy
	kubeconfig admin admin
	kubeconfig controller-manager controller-manager
	kubeconfig scheduler scheduler
	kubeconfig kube-proxy kube-proxy
	local n name
	for n in "${NODES[@]}"; do
		name=$(node_name "$n")
		cert "kubelet-$n" "system:node:$name" system:nodes
		cert "kubelet-$n-serving" "$name" "" "IP:${NODE_IP[$n]},DNS:$name"
		kubeconfig "kubelet-$n" "kubelet-$n"
	done
	openssl genrsa -out "$P/sa.key" 2048 2>/dev/null
	openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
	chmod 600 "$P/sa.key"
}
