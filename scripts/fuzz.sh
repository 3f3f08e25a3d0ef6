#!/usr/bin/env bash
# Runs every fuzz test of brindle's parsers of outside input for FUZZTIME
# each (default 30s). `make fuzz` and `make test` call it. A finding (a
# crasher written under testdata/fuzz/) fails the run; the fuzzing engine
# itself giving up without a finding (it can, on a loaded machine:
# "context deadline exceeded") is retried once and then reported as such.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-30s}"
GO="${GO:-go}"
targets=(
  "./conf FuzzParseNetConf"      # the brindle plugin's network config
  "./conf FuzzLoadIPAMNetConf"   # brindle-ipam's config
  "./conf FuzzParseIPPools"      # pool YAML (brindle and Calico forms)
  "./conf FuzzParseBGPDocs"      # BGPConfiguration / BGPPeer YAML
  "./conf FuzzParseSelector"     # node selectors in pools and peers
  "./conf FuzzEtcdValues"        # node, pool, BGP and reservation records from etcd
  "./ipam FuzzBlockRecords"      # IPAM blocks, handles, claims, endpoints from etcd
  "./conf FuzzParseIPReservations" # IPReservation YAML (brindle and Calico forms)
  "./kube/podinfo FuzzParse"     # pod and namespace annotations from the Kubernetes API
  "./internal/http1 FuzzReadResponse" # HTTP responses from etcd, the apiserver and brindled (the CNI plugins' reader)
  "./bgpd FuzzParseRouteMsg"     # route messages read back from the kernel (route sync)
)
# How many inputs the engine has written for a target (0 when it has no
# testdata/fuzz directory: find fails there, which pipefail would turn into
# the end of the script).
corpus() { if [ -d "$1" ]; then find "$1" -type f | wc -l; else echo 0; fi; }
start=$SECONDS
for t in "${targets[@]}"; do
  set -- $t
  pkg=$1 name=$2
  for try in 1 2; do
    before=$(corpus "$pkg/testdata/fuzz/$name")
    if "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" >"/tmp/brindle-fuzz-$name.log" 2>&1; then
      echo "fuzz $name: $(grep -o 'execs: [0-9]*' "/tmp/brindle-fuzz-$name.log" | tail -1) in $FUZZTIME, no finding"
      break
    fi
    after=$(corpus "$pkg/testdata/fuzz/$name")
    if [ "$after" -gt "$before" ]; then
      echo "fuzz $name: FINDING (see $pkg/testdata/fuzz/$name):" >&2
      tail -30 "/tmp/brindle-fuzz-$name.log" >&2
      exit 1
    fi
    if [ "$try" = 2 ]; then
      echo "fuzz $name: the fuzzing engine failed twice without a finding:" >&2
      tail -10 "/tmp/brindle-fuzz-$name.log" >&2
      exit 1
    fi
    echo "fuzz $name: the engine stopped without a finding ($(tail -1 "/tmp/brindle-fuzz-$name.log")); once more" >&2
  done
done
echo "fuzz: ${#targets[@]} targets in $((SECONDS - start)) s"
