package smoke

// Addresses chosen by the user (issue 10), on the real cluster: fixed
// addresses by annotation, refusals that name pod, annotation and address
// with nothing allocated, and pools per Namespace and per pod.

import (
	"net/netip"
	"strings"
	"testing"
)

// The pools of these tests: Manual, so no other pod ever gets an address
// from them, and outside the node network (172.30.N.0/24), the Service
// CIDR (10.96.0.0/16) and the cluster's pool (10.244.0.0/16).
const addrPools = `apiVersion: brindle.net/v1
kind: IPPool
metadata: {name: smoke-fixed}
spec: {cidr: 10.70.0.0/24, assignmentMode: Manual}
---
apiVersion: brindle.net/v1
kind: IPPool
metadata: {name: smoke-off}
spec: {cidr: 10.70.1.0/24, assignmentMode: Manual, disabled: true}
`

// Calico's IPReservation, as calicoctl takes it.
const addrReservation = `apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: smoke-gateways}
spec:
  reservedCIDRs: [10.70.0.1/32]
`

// TestKubeFixedAddresses: brindle.net/ipAddrs and
// cni.projectcalico.org/ipAddrs give a pod exactly the address asked for,
// on eth0, reachable from a pod on the other worker; a taken, a reserved, an
// outside-every-pool and a disabled-pool address are refused with an event
// naming the pod, the annotation and the address, nothing is allocated for
// them, and `ipam check` is clean.
func TestKubeFixedAddresses(t *testing.T) {
	c := connect(t)
	w := c.workers()
	a, b := w[0].Name, w[1].Name
	c.removeAtEnd(a, []string{"smoke-fixed", "smoke-off"}, []string{"smoke-gateways"})
	c.apply(a, "pool", addrPools)
	if out := c.apply(a, "reservation", addrReservation); !strings.Contains(out, "ipreservation/smoke-gateways") {
		t.Fatalf("reservation apply: %q", out)
	}

	c.annotated(c.ns, "fixed", a, map[string]string{"brindle.net/ipAddrs": `["10.70.0.7"]`})
	c.annotated(c.ns, "calico", b, map[string]string{"cni.projectcalico.org/ipAddrs": `["10.70.0.8"]`})
	cliA := c.pod("client-a", a, netexec(), nil)
	cliB := c.pod("client-b", b, netexec(), nil)
	for _, tc := range []struct{ pod, node, ip, client string }{
		{"fixed", a, "10.70.0.7", cliB.Name}, {"calico", b, "10.70.0.8", cliA.Name},
	} {
		p := c.running(c.ns, tc.pod)
		if p.Status.PodIP != tc.ip {
			t.Errorf("pod %s: address %s, want %s", tc.pod, p.Status.PodIP, tc.ip)
			continue
		}
		if got := c.sh(tc.pod, "ip -4 -o addr show dev eth0 | awk '{print $4}'"); got != tc.ip+"/32" {
			t.Errorf("pod %s: eth0 has %q, want %s/32", tc.pod, got, tc.ip)
		}
		if got := c.curl(c.ns, tc.client, tc.ip, "/hostname"); got != tc.pod {
			t.Errorf("%s (other worker) -> %s at %s: %q", tc.client, tc.pod, tc.ip, got)
		}
		info := c.lookup(a, tc.ip)
		if !info.Allocated || info.Attrs["pod"] != tc.pod || info.Attrs["namespace"] != c.ns {
			t.Errorf("IPAM for %s: %+v, want allocated to %s/%s", tc.ip, info, c.ns, tc.pod)
		}
		t.Logf("%s on %s: %s (block %s, affinity %s)", tc.pod, tc.node, tc.ip, info.Block, info.Affinity)
	}

	for _, tc := range []struct {
		pod, annotation, ip, why string
	}{
		{"taken", "brindle.net/ipAddrs", "10.70.0.7", "already in use"},
		{"reserved", "cni.projectcalico.org/ipAddrs", "10.70.0.1", `reserved by IPReservation "smoke-gateways"`},
		{"outside", "brindle.net/ipAddrs", "192.168.77.1", "not inside any ip pool"},
		{"disabled", "brindle.net/ipAddrs", "10.70.1.5", `"smoke-off" is disabled`},
	} {
		c.annotated(c.ns, tc.pod, b, map[string]string{tc.annotation: `["` + tc.ip + `"]`})
		msg := c.refused(c.ns, tc.pod, "pod "+c.ns+"/"+tc.pod, "annotation "+tc.annotation, tc.ip, tc.why)
		t.Logf("%s: %s", tc.pod, msg[max(0, strings.Index(msg, "pod "+c.ns)):])
	}
	for _, ip := range []string{"10.70.0.1", "192.168.77.1", "10.70.1.5"} {
		if info := c.lookup(a, ip); info.Allocated {
			t.Errorf("refused address %s is allocated: %+v", ip, info)
		}
	}
	if info := c.lookup(a, "10.70.0.7"); info.Attrs["pod"] != "fixed" {
		t.Errorf("10.70.0.7 after the refused second pod: %+v, want still pod fixed's", info)
	}
	c.ipamClean(a, "after the refusals")
}

// TestKubeNamespacePools: brindle.net/ipv4pools on a Namespace picks the
// pool of its pods; cni.projectcalico.org/ipv4pools on a pod, naming a pool
// by its CIDR, wins over the Namespace's.
func TestKubeNamespacePools(t *testing.T) {
	c := connect(t)
	w := c.workers()
	a := w[0].Name
	c.removeAtEnd(a, []string{"smoke-ns", "smoke-cidr"}, nil)
	c.apply(a, "pool", `apiVersion: brindle.net/v1
kind: IPPool
metadata: {name: smoke-ns}
spec: {cidr: 10.71.0.0/24, assignmentMode: Manual}
---
apiVersion: brindle.net/v1
kind: IPPool
metadata: {name: smoke-cidr}
spec: {cidr: 10.71.1.0/24, assignmentMode: Manual}
`)
	ns := c.namespace("team-b", map[string]string{"brindle.net/ipv4pools": `["smoke-ns"]`})
	c.annotated(ns, "from-namespace", a, nil)
	c.annotated(ns, "by-cidr", w[1].Name, map[string]string{"cni.projectcalico.org/ipv4pools": `["10.71.1.0/24"]`})
	for _, tc := range []struct{ pod, cidr string }{{"from-namespace", "10.71.0.0/24"}, {"by-cidr", "10.71.1.0/24"}} {
		p := c.running(ns, tc.pod)
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !netip.MustParsePrefix(tc.cidr).Contains(ip) {
			t.Errorf("pod %s/%s: address %q, want one from %s", ns, tc.pod, p.Status.PodIP, tc.cidr)
			continue
		}
		t.Logf("%s/%s: %s", ns, tc.pod, ip)
	}
	// Each reaches the other across the workers.
	nsIP := c.running(ns, "from-namespace").Status.PodIP
	if got := c.curl(ns, "by-cidr", nsIP, "/hostname"); got != "from-namespace" {
		t.Errorf("by-cidr -> from-namespace at %s: %q", nsIP, got)
	}
}
