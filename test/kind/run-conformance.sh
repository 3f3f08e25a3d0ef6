#!/usr/bin/env bash
# Kubernetes network conformance for brindle on kind:
#   build the image, create a kind cluster without a CNI, load the image,
#   install brindle (optional etcd, then conf/k8s/), wait for every node to
#   be Ready, run the [sig-network] [Conformance] tests with the e2e.test
#   binary of the cluster's own Kubernetes version, and print pass/fail
#   counts.
#
# Usage: test/kind/run-conformance.sh [all|image|cluster|install|e2e|down]...
#   (default: all = image cluster install e2e, then down unless KEEP=1)
#
# Needs go, make, docker, kind, kubectl, curl and tar (and network access to
# dl.k8s.io and the image registries). Without kind, against any cluster in
# the current kubeconfig whose nodes can pull $IMAGE:
#   USE_KIND=0 test/kind/run-conformance.sh install e2e
#
# Environment:
#   CLUSTER          kind cluster name (brindle)
#   IMAGE            brindle image (ghcr.io/brindle-net/brindle:dev, as in conf/k8s)
#   KIND_NODE_IMAGE  kind node image, e.g. kindest/node:v1.34.0 (kind's default)
#   USE_KIND         1: make and use a kind cluster; 0: the current kubeconfig
#   INSTALL_ETCD     1: also apply conf/k8s/etcd/ (kind has no etcd for brindle)
#   FOCUS, SKIP      ginkgo regexps (see below)
#   PARALLEL         ginkgo processes (4)
#   ARTIFACTS        reports and logs (_artifacts/conformance)
#   KEEP             1: keep the kind cluster afterwards
set -Eeuo pipefail
trap 'printf "run-conformance: failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

CLUSTER=${CLUSTER:-brindle}
DEFAULT_IMAGE=ghcr.io/brindle-net/brindle:dev
IMAGE=${IMAGE:-$DEFAULT_IMAGE}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-}
USE_KIND=${USE_KIND:-1}
INSTALL_ETCD=${INSTALL_ETCD:-1}
# The network conformance tests...
FOCUS=${FOCUS:-'\[sig-network\].*\[Conformance\]'}
# ...less the usual skips: tests that must run alone or break the cluster,
# known-flaky or slow ones, optional features, and IPv6/SCTP/load
# balancers, which this IPv4 kind cluster does not have.
SKIP=${SKIP:-'\[Serial\]|\[Disruptive\]|\[Flaky\]|\[Slow\]|\[Feature:[^]]+\]|IPv6|SCTP|LoadBalancer'}
PARALLEL=${PARALLEL:-4}
ARTIFACTS=${ARTIFACTS:-$root/_artifacts/conformance}
KEEP=${KEEP:-0}
ETCD_IMAGE=quay.io/coreos/etcd:v3.6.5
NS=brindle-system

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'run-conformance: %s\n' "$*" >&2; exit 1; }

need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || die "$t is not installed (needed for this step)"
	done
}

kctl() {
	if [[ $USE_KIND == 1 ]]; then
		kubectl --context "kind-$CLUSTER" "$@"
	else
		kubectl "$@"
	fi
}

step_image() {
	need go make
	log "building $IMAGE (scripts/image.sh, the image the test cluster runs too)"
	make -C "$root" image IMAGE="$IMAGE"
}

step_cluster() {
	need docker kind kubectl
	if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
		log "kind cluster $CLUSTER exists; reusing it"
	else
		log "creating kind cluster $CLUSTER (no default CNI)"
		local args=(create cluster --name "$CLUSTER" --config "$here/kind-config.yaml")
		if [[ -n $KIND_NODE_IMAGE ]]; then
			args+=(--image "$KIND_NODE_IMAGE")
		fi
		kind "${args[@]}"
	fi
	log "loading $IMAGE into the nodes"
	kind load image-archive "$root/bin/brindle-image.tar" --name "$CLUSTER"
	if [[ $INSTALL_ETCD == 1 ]]; then
		# Best effort: the nodes can pull it themselves.
		if docker pull -q "$ETCD_IMAGE" >/dev/null; then
			kind load docker-image "$ETCD_IMAGE" --name "$CLUSTER" || true
		fi
	fi
}

# apply_manifests applies files with the image replaced by $IMAGE.
apply_manifests() {
	local f
	for f in "$@"; do
		sed "s#$DEFAULT_IMAGE#$IMAGE#g" "$f"
		printf '\n---\n'
	done | kctl apply -f -
}

step_install() {
	need kubectl
	log "installing brindle"
	apply_manifests "$root/conf/k8s/00-namespace.yaml"
	if [[ $INSTALL_ETCD == 1 ]]; then
		apply_manifests "$root"/conf/k8s/etcd/*.yaml
		kctl -n "$NS" rollout status deployment/brindle-etcd --timeout=300s
	fi
	apply_manifests "$root"/conf/k8s/*.yaml
	log "waiting for brindle-node on every node, the pools and the nodes"
	kctl -n "$NS" rollout status daemonset/brindle-node --timeout=300s
	kctl -n "$NS" wait --for=condition=complete job/brindle-ippools --timeout=300s
	kctl wait --for=condition=Ready nodes --all --timeout=300s
	kctl -n kube-system rollout status deployment/coredns --timeout=300s
	kctl get nodes -o wide
	kctl -n "$NS" get pods -o wide
}

# e2e_binaries fetches e2e.test and ginkgo of the server's version into
# $ARTIFACTS/../bin/<version>/ and prints that directory.
e2e_binaries() {
	local version arch dir
	version=$(kctl version -o json | sed -n 's/.*"gitVersion": *"\(v[^"]*\)".*/\1/p' | tail -1)
	[[ -n $version ]] || die "cannot read the server's version"
	case $(uname -m) in
	x86_64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) die "no e2e binaries for $(uname -m)" ;;
	esac
	dir="$(dirname "$ARTIFACTS")/bin/$version"
	if [[ ! -x $dir/e2e.test || ! -x $dir/ginkgo ]]; then
		mkdir -p "$dir"
		log "downloading e2e.test and ginkgo $version"
		curl -fsSL "https://dl.k8s.io/$version/kubernetes-test-linux-$arch.tar.gz" |
			tar -xz -C "$dir" --strip-components=3 kubernetes/test/bin/e2e.test kubernetes/test/bin/ginkgo
	fi
	printf '%s\n' "$dir"
}

step_e2e() {
	need kubectl curl tar
	local bin kubeconfig workers rc=0
	bin=$(e2e_binaries)
	mkdir -p "$ARTIFACTS"
	kubeconfig="$ARTIFACTS/kubeconfig"
	kctl config view --minify --flatten >"$kubeconfig"
	workers=$(kctl get nodes -l '!node-role.kubernetes.io/control-plane' --no-headers | wc -l)
	log "running $FOCUS (skip $SKIP) on $workers nodes, $PARALLEL at a time"
	"$bin/ginkgo" --nodes="$PARALLEL" --focus="$FOCUS" --skip="$SKIP" --no-color \
		"$bin/e2e.test" -- \
		--kubeconfig="$kubeconfig" --provider=skeleton --num-nodes="$workers" \
		--report-dir="$ARTIFACTS" --disable-log-dump=true \
		2>&1 | tee "$ARTIFACTS/e2e.log" || rc=$?
	report
	return "$rc"
}

# report prints the counts from ginkgo's summary and the JUnit report,
# and the names of the failed tests.
report() {
	local summary junit
	summary=$(grep -E '^(SUCCESS|FAIL)! -- [0-9]+ Passed' "$ARTIFACTS/e2e.log" | tail -1 || true)
	junit=$(find "$ARTIFACTS" -maxdepth 1 -name 'junit*.xml' | head -1)
	printf '\n==== brindle network conformance ====\n'
	if [[ -n $summary ]]; then
		printf '%s\n' "$summary" | sed -E 's/^(SUCCESS|FAIL)! -- ([0-9]+) Passed \| ([0-9]+) Failed \| ([0-9]+) Pending \| ([0-9]+) Skipped.*/result: \1  passed: \2  failed: \3  pending: \4  skipped: \5/'
	else
		printf 'no ginkgo summary in %s\n' "$ARTIFACTS/e2e.log"
	fi
	if [[ -n $junit ]]; then
		local total failed skipped
		total=$(grep -c '<testcase ' "$junit" || true)
		failed=$(grep -c '<failure' "$junit" || true)
		skipped=$(grep -c '<skipped' "$junit" || true)
		printf 'junit: %s passed, %s failed, %s skipped (%s)\n' \
			"$((total - failed - skipped))" "$failed" "$skipped" "$junit"
		awk '/<testcase /{ match($0, /name="[^"]*"/); name=substr($0, RSTART+6, RLENGTH-7) }
			/<failure/{ print "FAILED: " name }' "$junit"
	fi
}

step_down() {
	if [[ $USE_KIND == 1 ]]; then
		need kind
		mkdir -p "$ARTIFACTS"
		kind export logs "$ARTIFACTS/kind-logs" --name "$CLUSTER" >/dev/null 2>&1 || true
		log "deleting kind cluster $CLUSTER"
		kind delete cluster --name "$CLUSTER"
	fi
}

main() {
	local steps=("$@") s
	if [[ ${#steps[@]} -eq 0 || ${steps[0]} == all ]]; then
		steps=(image cluster install e2e)
		if [[ $KEEP != 1 ]]; then
			trap 'step_down' EXIT
		fi
	fi
	for s in "${steps[@]}"; do
		case $s in
		image | cluster | install | e2e | down) ;;
		*) die "unknown step $s (want all, image, cluster, install, e2e, down)" ;;
		esac
	done
	# Each step runs under set -e: the first failing command ends the run
	# (and, for all, takes the kind cluster down after exporting its logs).
	for s in "${steps[@]}"; do
		if [[ $USE_KIND != 1 && ($s == image || $s == cluster) ]]; then
			log "USE_KIND=0: skipping $s"
			continue
		fi
		"step_$s"
	done
}

main "$@"
