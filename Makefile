# brindle: build, test, lint, benchmarks and the demo. Everything that needs
# namespaces runs as root; tests that need root skip (loudly) without it.

GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/brindle-net/brindle/internal/buildinfo.Version=$(VERSION)
CMDS      := $(patsubst cmd/%/main.go,%,$(wildcard cmd/*/main.go))
# The reference plugins, from the version pinned in go.mod, for tests and
# benchmarks that compare against them.
REFPLUGINS := github.com/containernetworking/plugins/plugins/main/ptp \
              github.com/containernetworking/plugins/plugins/ipam/host-local \
              github.com/containernetworking/plugins/plugins/meta/portmap \
              github.com/containernetworking/plugins/plugins/meta/bandwidth
# Test programs: the lab's etcd (an embedded etcd in a process of its own).
TESTBINS  := ./test/lab/labetcd
IMAGE     ?= ghcr.io/brindle-net/brindle:dev
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TESTFLAGS ?= -race -count=1 -timeout 40m
# How long test/faults keeps etcd down in `make test` (the full run,
# `make test-faults`, is 3 minutes; docs/faults.md), and each fuzz test's time.
FAULTS_ETCD_OUTAGE ?= 60s
FUZZTIME ?= 30s

.PHONY: all deps build refplugins testbins kubetest-bins test lint demo bench-cni bench-ipam bench-bgp bench-dataplane bench-capture bench-policy bench image kind-conformance clean k8s-build k8s-up k8s-down k8s-check k8s-e2e k8s-kube k8s-conformance k8s-network k8s-netpol

all: build

deps:
	@scripts/install-deps.sh

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

refplugins:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/ $(REFPLUGINS)

testbins:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $(TESTBINS)

# A real kube-apiserver and etcd (v1.34.4) for the tests of code that talks
# to Kubernetes (internal/kubetest), built once into /var/cache/brindle-k8s
# by the test cluster's build script.
kubetest-bins:
	test/k8s/build.sh kube-apiserver etcd

# The whole suite: unit tests, and as root the integration and e2e tests in
# network namespaces, against the binaries built here.
test: deps build refplugins testbins kubetest-bins
	$(GO) vet ./...
	BRINDLE_BIN_DIR=$(abspath $(BIN)) BRINDLE_FAULTS_ETCD_OUTAGE=$(FAULTS_ETCD_OUTAGE) $(GO) test $(TESTFLAGS) ./...
	@$(MAKE) --no-print-directory fuzz

.PHONY: test-faults fuzz

# The fault-injection suite alone (test/faults; docs/faults.md), with etcd
# down for the full 3 minutes; `make test` runs it with FAULTS_ETCD_OUTAGE.
test-faults: build testbins
	BRINDLE_BIN_DIR=$(abspath $(BIN)) BRINDLE_FAULTS_ETCD_OUTAGE=3m $(GO) test -count=1 -timeout 30m -v ./test/faults > $(BIN)/faults.log 2>&1; \
	rc=$$?; grep -E '^(FIGURES|--- |ok|FAIL)' $(BIN)/faults.log; echo "full log: $(BIN)/faults.log"; exit $$rc

# Every fuzz test of a parser of outside input, FUZZTIME each (scripts/fuzz.sh).
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

lint:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# The lab: 3 nodes (network namespaces) running brindled, 2 pods each
# attached through the real plugins, a ping matrix, BGP sessions and routes;
# everything removed at the end.
demo: build testbins
	$(GO) run ./test/demo -bin $(abspath $(BIN))

# Every benchmark first installs what it needs (scripts/install-deps.sh, as
# `make test` does; as root with apt) and then stops with one line naming
# anything still missing. A benchmark leaves no namespace, process or route
# behind, even when it fails half way (test/benchreport).

# ADD/DEL latency through libcni, brindle + brindle-ipam against ptp +
# host-local at 1 and 8 at a time, and 110 pods ADDed at once; pod
# annotations read through a real kube-apiserver (kubetest-bins).
bench-cni: deps build refplugins testbins kubetest-bins
	$(GO) run ./test/benchcni -bin $(abspath $(BIN))

# IPAM allocations/s (1, 8, 32 workers; 1 and 10 nodes; real etcd), with
# and without the node-local queue, then bench-cni (which compares against
# ptp + host-local in the same run).
bench-ipam: deps build refplugins testbins kubetest-bins
	$(GO) run ./test/benchipam
	$(GO) run ./test/benchcni -bin $(abspath $(BIN))

# Labs of 10, 50 and 100 nodes with two route reflectors (cold start, claim
# -> route, watch traffic per ADD, a reflector stopped, memory), the mesh at
# 10, route sync at 10,000 and 100,000 routes, 10,000 and 100,000 routes from
# BIRD (5 runs each).
bench-bgp: deps build testbins
	$(GO) run ./test/benchbgp -bin $(abspath $(BIN))

# iperf3 single-stream throughput and TCP request latency: pod to pod on one
# node, across nodes natively and through VXLAN, against raw baselines
# measured in the same run (root, iperf3).
bench-dataplane: deps build testbins
	$(GO) run ./test/benchdataplane -bin $(abspath $(BIN))

# NetworkPolicy: policy created in the API -> in every node's kernel
# (p50/p99) with 1,000 pods and 500 policies, rule-sync CPU per change,
# pod-to-pod iperf3 throughput with the policies against none (root,
# iperf3, a real kube-apiserver from kubetest-bins).
bench-policy: deps kubetest-bins
	$(GO) run ./test/benchpolicy

# brindlectl capture against tcpdump on the same host veth, in one run: TCP
# and a UDP flood of small datagrams, packets captured, drops, CPU (root).
bench-capture: deps build testbins
	$(GO) run ./test/benchcapture -bin $(abspath $(BIN))

# Every benchmark above, one after another, into one report with the
# machine, the date, each table and each target met or not met:
# docs/benchmarks.md is regenerated from it (about 10 minutes on a quiet
# machine of this kind, 2026-12-02).
bench: deps build refplugins testbins kubetest-bins
	$(GO) run ./test/benchreport/compose -bin $(abspath $(BIN)) -o docs/benchmarks.md

# brindle's image (conf/k8s runs it), built without a container engine:
# bin/brindle-image.tar, for `ctr images import`, `docker load -i` or
# `kind load image-archive`. The test cluster and kind use this one.
image: build refplugins
	scripts/image.sh $(abspath $(BIN))/brindle-image.tar $(IMAGE)

# A real Kubernetes v1.34.4 (built from the Go module proxy into
# /var/cache/brindle-k8s) on this machine: a control-plane node and two
# workers in namespaces, brindle installed from conf/k8s/ (docs/kubernetes.md).
k8s-build:
	test/k8s/build.sh
k8s-up:
	test/k8s/cluster.sh up
k8s-down:
	test/k8s/cluster.sh down
k8s-check:
	test/k8s/cluster.sh check
# What must work on the cluster: pods across nodes, Services, HostPort, DNS,
# a DaemonSet rollout under traffic, address release, 50 pods at once.
k8s-e2e:
	test/k8s/smoke.sh
# Garbage collection from the API on a dead node (issue 10): a kubelet frozen,
# a pod force-deleted, a Node deleted; minutes of grace (docs/kubernetes.md).
k8s-kube:
	BRINDLE_SMOKE_DESTRUCTIVE=1 BRINDLE_SMOKE_NODECTL=$(CURDIR)/test/k8s/kubenode.sh test/k8s/smoke.sh -run 'TestKubeDestructive'
# Upstream's network conformance tests (the 45 [sig-network] [Conformance]).
k8s-conformance:
	test/k8s/e2e.sh conformance --label-filter='Conformance && sig-network'
# Upstream's NetworkPolicy suite (focus Netpol: 2 API, 42 TCP, 3 UDP, 3 SCTP
# specs). The 3 SCTP connectivity specs are skipped: this kernel has no SCTP
# (docs/policy.md); the 2 TCP specs about SCTP policies run.
k8s-netpol:
	test/k8s/e2e.sh netpol --focus='Netpol' --skip='Feature:SCTPConnectivity'
# The wider [sig-network] set, less what no CNI on a bare machine provides.
k8s-network:
	test/k8s/e2e.sh network --label-filter='sig-network && !Serial && !Disruptive && !Flaky && !Slow && Feature: isEmpty' \
		--skip='LoadBalancer|IPv6|SCTP|NetworkPolicy|Netpol|ESIPP|GCE|AWS|Azure'

# [sig-network] [Conformance] on a kind cluster: Docker, kind, kubectl, network.
kind-conformance:
	IMAGE=$(IMAGE) test/kind/run-conformance.sh

clean:
	rm -rf $(BIN)
