#!/usr/bin/env bash
# Runs upstream's e2e suite (e2e.test, v1.34.4) against the test cluster,
# from the control plane's network namespace, through the ginkgo CLI (which
# runs the parallel processes). Reports go to test/k8s/out/<name>/:
# junit.xml, report.json, and summary.txt ending with the line
# "N passed, N failed, N skipped".
#
#   e2e.sh NAME [ginkgo flags...] [-- e2e.test flags...]
#   e2e.sh conformance --label-filter='Conformance && sig-network'
#
# E2E_PROCS (default 2) sets the ginkgo processes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/k8s/env.sh
. "$here/env.sh"
name=${1:?usage: e2e.sh NAME [ginkgo flags...] [-- e2e.test flags...]}; shift
[ -f "$STATE/pki/admin.kubeconfig" ] || { echo "e2e: cluster $CLUSTER is not up (make k8s-up)" >&2; exit 1; }
"$here/build.sh" e2e.test ginkgo e2esum kubectl
ginkgo_flags=() test_flags=()
while [ $# -gt 0 ]; do
	if [ "$1" = -- ]; then shift; test_flags=("$@"); break; fi
	ginkgo_flags+=("$1"); shift
done
# Tests that need several nodes ask for the count of schedulable ones.
workers=$(nsenter --net="/run/netns/$NS_PREFIX-control-plane" -- "$K8S_BIN/kubectl" --kubeconfig "$STATE/pki/admin.kubeconfig" \
	get nodes -l '!node-role.kubernetes.io/control-plane' --no-headers | wc -l)
out=$here/out/$name
rm -rf "$out"; mkdir -p "$out"
start=$(date +%s)
set +e
nsenter --net="/run/netns/$NS_PREFIX-control-plane" -- \
	"$K8S_BIN/ginkgo" --procs="${E2E_PROCS:-2}" --timeout=4h --no-color \
	--output-dir="$out" --junit-report=junit.xml --json-report=report.json \
	"${ginkgo_flags[@]}" \
	"$K8S_BIN/e2e.test" -- \
	--kubeconfig="$STATE/pki/admin.kubeconfig" --provider=skeleton \
	--kubectl-path="$K8S_BIN/kubectl" --report-dir="$out" \
	--disable-log-dump --allowed-not-ready-nodes=0 --num-nodes="$workers" \
	"${test_flags[@]}" 2>&1 | tee "$out/e2e.log" | grep -E '^(•|\[FAIL\]|\[SKIPPED\]|Ran |FAIL|PASS|Ginkgo ran)' >&2
set -e
"$K8S_BIN/e2esum" "$out/report.json" | tee "$out/summary.txt"
rc=${PIPESTATUS[0]}
echo "e2e $name: $(( ($(date +%s) - start) / 60 )) min; reports in $out" >&2
exit "$rc"
