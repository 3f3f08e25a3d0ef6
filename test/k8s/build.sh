#!/usr/bin/env bash
# Builds the test cluster's Kubernetes v1.34.4 from the Go module proxy into
# a cache outside the repository, once per version:
#   $BRINDLE_K8S_CACHE/<version>/bin/{kube-apiserver,kube-controller-manager,
#     kube-scheduler,kubelet,kube-proxy,kubectl,e2e.test,agnhost,etcd,coredns,pause}
# A binary already in the cache is not rebuilt. Usage: build.sh [binary...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/k8s/env.sh
. "$here/env.sh"

mkdir -p "$K8S_BIN"
cd "$here"

# Upstream's release build: static, trimmed, stripped, with the version
# stamped where `kubectl version` and the nodes' status read it.
vpkg=k8s.io/component-base/version
cpkg=k8s.io/client-go/pkg/version
stamp=""
for p in $vpkg $cpkg; do
	stamp+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=${K8S_VERSION_MAJOR} -X $p.gitMinor=${K8S_VERSION_MINOR}"
	stamp+=" -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z -X $p.gitCommit=module-proxy-$K8S_VERSION"
done
export CGO_ENABLED=0
flags=(-trimpath -tags selinux,notest,grpcnotrace -ldflags "-s -w $stamp")

declare -A pkg=(
	[kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
	[kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
	[kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
	[kubelet]=k8s.io/kubernetes/cmd/kubelet
	[kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
	[kubectl]=k8s.io/kubernetes/cmd/kubectl
	[agnhost]=k8s.io/kubernetes/test/images/agnhost
	[regression-issue-74839]=k8s.io/kubernetes/test/images/regression-issue-74839
	[ginkgo]=github.com/onsi/ginkgo/v2/ginkgo
	[e2esum]=./tools/e2esum
	[etcd]=./tools/etcd
)
order=(kubectl kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd agnhost regression-issue-74839 mkimage coredns pause ginkgo e2esum e2e.test)
want=("$@")
[ ${#want[@]} -eq 0 ] && want=("${order[@]}")

for b in "${want[@]}"; do
	out=$K8S_BIN/$b
	if [ -x "$out" ]; then
		continue
	fi
	start=$(date +%s)
	echo "build: $b" >&2
	case $b in
	e2e.test)
		# Tests build without the release tags' notest.
		go test -c -trimpath -ldflags "-s -w $stamp" -o "$out.tmp" ./e2e ;;
	coredns)
		# CoreDNS's own module (no replace directives), as `go install` builds it.
		GOBIN=$K8S_BIN/.coredns go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
		mv "$K8S_BIN/.coredns/coredns" "$out.tmp"; rmdir "$K8S_BIN/.coredns" ;;
	mkimage)
		# Its own module (go-containerregistry), apart from Kubernetes' pins.
		(cd tools/mkimage && go build -trimpath -ldflags "-s -w" -o "$out.tmp" .) ;;
	pause)
		# Upstream's pause.c, from the kubernetes module, static.
		src=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
		gcc -Os -Wall -static -DVERSION=v3.10.1-brindle -o "$out.tmp" "$src"
		strip "$out.tmp" ;;
	*)
		[ -n "${pkg[$b]:-}" ] || { echo "build: unknown binary $b" >&2; exit 2; }
		go build "${flags[@]}" -o "$out.tmp" "${pkg[$b]}" ;;
	esac
	mv "$out.tmp" "$out"
	echo "build: $b done in $(( $(date +%s) - start ))s ($(du -m "$out" | cut -f1) MB)" >&2
done
