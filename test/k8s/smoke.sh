#!/usr/bin/env bash
# What must work on the test cluster (`make k8s-e2e`): test/k8s/smoke's Go
# tests, compiled here and run from the control plane's network namespace
# against the cluster from `make k8s-up`. Output in test/k8s/out/smoke/.
#   smoke.sh [go test flags, e.g. -run TestServices, -skip TestFiftyPods]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/k8s/env.sh
. "$here/env.sh"
[ -f "$STATE/pki/admin.kubeconfig" ] || { echo "smoke: cluster $CLUSTER is not up (make k8s-up)" >&2; exit 1; }
out=$here/out/smoke
mkdir -p "$out"
(cd "$here" && go test -c -o "$out/smoke.test" ./smoke)
# The test binary spells go test's flags -test.run, -test.skip, ...
args=()
for a in "$@"; do
	case $a in
	-run | -skip | -count | -timeout | -failfast | -parallel | -shuffle) args+=("-test.${a#-}") ;;
	-run=* | -skip=* | -count=* | -timeout=* | -parallel=* | -shuffle=*) args+=("-test.${a#-}") ;;
	*) args+=("$a") ;;
	esac
done
set +e
# brindlectl from the tree, for `kubectl brindle capture`; kubectl in PATH.
make -C "$here/../.." --no-print-directory -s build >&2
PATH=$K8S_BIN:$PATH nsenter --net="/run/netns/$NS_PREFIX-control-plane" -- \
	"$out/smoke.test" -test.v -test.timeout=30m -kubeconfig="$STATE/pki/admin.kubeconfig" \
	-brindlectl="$(cd "$here/../.." && pwd)/bin/brindlectl" ${args[@]+"${args[@]}"} 2>&1 | tee "$out/smoke.log"
rc=${PIPESTATUS[0]}
set -e
grep -E '^(--- |ok|FAIL|PASS)|smoke_test.go:[0-9]+: ' "$out/smoke.log" >"$out/summary.txt" || true
exit "$rc"
