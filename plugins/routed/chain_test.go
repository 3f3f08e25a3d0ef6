package routed_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/plugins/routed"
)

// TestParallelAdds: 20 pods attached at once on one host get 20 distinct
// addresses and 20 working veths; 20 DELs at once leave nothing.
func TestParallelAdds(t *testing.T) {
	r := newRig(t)
	l := r.list("1.1.0", r.hostLocal("10.244.1.0/24"), nil)
	const n = 20
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = r.newPod(fmt.Sprintf("par-%02d", i))
	}
	addrs := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() {
			res, err := r.add(l, p)
			if err == nil {
				addrs[i] = podAddr(t, res, false)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD %d: %v\n%s", i, err, r.log())
		}
		if j, dup := seen[addrs[i]]; dup {
			t.Fatalf("pods %d and %d both got %s", j, i, addrs[i])
		}
		seen[addrs[i]] = i
	}
	if got := len(r.hostLinks("bri")); got != n {
		t.Fatalf("%d host veths, want %d", got, n)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		if err := testenv.Ping(pods[i].ns, addrs[(i+1)%n], 3); err != nil {
			t.Error(err)
		}
	}
	for i, p := range pods {
		wg.Go(func() { errs[i] = r.del(l, p) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
	}
	if links := r.hostLinks("bri"); len(links) != 0 {
		t.Errorf("host veths left: %v", links)
	}
	if ips := r.allocated(); len(ips) != 0 {
		t.Errorf("addresses left: %v", ips)
	}
}

// TestChainPortmapBandwidth: brindle first in a conflist, the reference
// portmap and bandwidth plugins after it. They get brindle's result as
// prevResult and work from it: a connection to the host's mapped port
// reaches the pod, the pod's host veth carries the shaping qdisc, and CHECK
// of the whole chain passes.
func TestChainPortmapBandwidth(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("SKIP: the reference portmap plugin needs the iptables binary: apt-get install iptables (scripts/install-deps.sh)")
	}
	r := newRig(t)
	l := r.list("1.1.0", r.hostLocal("10.244.1.0/24"), nil,
		map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}})
	p := r.newPod("web")
	p.rt.CapabilityArgs = map[string]any{
		"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}},
		"bandwidth":    map[string]any{"ingressRate": 100_000_000, "ingressBurst": 1_000_000, "egressRate": 100_000_000, "egressBurst": 1_000_000},
	}
	res := r.mustAdd(l, p)
	ip := podAddr(t, res, false)
	if res.Interfaces[0].Name != p.veth() || res.Interfaces[1].Sandbox != p.ns.Path() {
		t.Fatalf("chained result lost brindle's interfaces: %+v", res.Interfaces)
	}

	// A server in the pod, a client in the world namespace dialing the host.
	var ln net.Listener
	if err := p.ns.Do(func(ns.NetNS) (err error) { ln, err = net.Listen("tcp4", ":8080"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello from %s\n", ip)
			c.Close()
		}
	}()
	var got []byte
	err := r.host.World.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", net.JoinHostPort(r.host.Addr.String(), "18080"), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		got, err = io.ReadAll(c)
		return err
	})
	if err != nil || string(got) != "hello from "+ip.String()+"\n" {
		t.Fatalf("through hostPort 18080: got %q, err %v", got, err)
	}

	_ = r.in(func() error {
		hl, err := netlink.LinkByName(p.veth())
		if err != nil {
			t.Fatal(err)
		}
		qs, _ := netlink.QdiscList(hl)
		found := false
		for _, q := range qs {
			found = found || q.Type() == "tbf"
		}
		if !found {
			t.Errorf("no tbf qdisc on %s from the bandwidth plugin: %v", p.veth(), qs)
		}
		return nil
	})
	if err := r.check(l, p); err != nil {
		t.Fatalf("CHECK of the chain: %v", err)
	}
	if err := r.del(l, p); err != nil {
		t.Fatalf("DEL of the chain: %v", err)
	}
	if links := r.hostLinks("bri"); len(links) != 0 {
		t.Errorf("host veths left: %v", links)
	}
}

// TestSpecVersions: configs of every supported spec version are accepted
// and produce a result of that version.
func TestSpecVersions(t *testing.T) {
	r := newRig(t)
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			l := r.list(v, r.hostLocal("10.244.1.0/24"), nil)
			p := r.newPod("v" + v)
			var res types.Result
			err := r.in(func() (err error) {
				res, err = r.cni.AddNetworkList(t.Context(), l, p.runtime())
				return err
			})
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Errorf("result version %s, want %s", res.Version(), v)
			}
			if err := testenv.Ping(p.ns, r.host.Addr, 3); err != nil {
				t.Error(err)
			}
			if v >= "0.4.0" {
				if err := r.check(l, p); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if err := r.del(l, p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		})
	}
}

// TestGC: GC removes this network's veths whose attachment is not listed
// as valid, and leaves valid ones and other networks' alone.
func TestGC(t *testing.T) {
	r := newRig(t)
	l := r.list("1.1.0", r.hostLocal("10.244.1.0/24"), nil)
	keep, drop := r.newPod("keep"), r.newPod("drop")
	ipKeep := podAddr(t, r.mustAdd(l, keep), false)
	r.mustAdd(l, drop)

	otherConf := r.list("1.1.0", map[string]any{"type": "host-local", "dataDir": r.dir + "/ipam-other", "ranges": [][]map[string]string{{{"subnet": "10.245.0.0/24"}}}}, nil)
	other := r.newPod("other")
	otherBytes, _ := jsonWithName(otherConf.Bytes, "other-net")
	otherList, err := libcni.NetworkConfFromBytes(otherBytes)
	if err != nil {
		t.Fatal(err)
	}
	r.mustAdd(otherList, other)

	err = r.in(func() error {
		return r.cni.GCNetworkList(t.Context(), l, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: keep.rt.ContainerID, IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatalf("GC: %v\n%s", err, r.log())
	}
	links := map[string]bool{}
	for _, n := range r.hostLinks("bri") {
		links[n] = true
	}
	if !links[keep.veth()] || !links[other.veth()] || links[drop.veth()] {
		t.Fatalf("after GC host veths = %v; want %s and %s kept, %s removed", links, keep.veth(), other.veth(), drop.veth())
	}
	if err := testenv.Ping(r.host.NS, ipKeep, 3); err != nil {
		t.Error(err)
	}
}

// TestStatus: STATUS is delegated to the IPAM plugin.
func TestStatus(t *testing.T) {
	r := newRig(t)
	if err := r.in(func() error {
		return r.cni.GetStatusNetworkList(t.Context(), r.list("1.1.0", r.hostLocal("10.244.1.0/24"), nil))
	}); err != nil {
		t.Fatalf("STATUS with host-local: %v", err)
	}
	err := r.in(func() error {
		return r.cni.GetStatusNetworkList(t.Context(), r.list("1.1.0", map[string]any{"type": "nosuch-ipam"}, nil))
	})
	errContains(t, err, `ipam.type "nosuch-ipam"`)
}

// TestDualStack: IPAM gives an IPv4 and an IPv6 address; the pod gets both
// as host prefixes, IPv6 routed via the host veth's link-local address, and
// both families reach the other pod and the host.
func TestDualStack(t *testing.T) {
	r := newRig(t)
	l := r.list("1.1.0", r.hostLocal("10.244.1.0/24", "fd00:244:1::/64"), nil)
	a, b := r.newPod("a6"), r.newPod("b6")
	resA, resB := r.mustAdd(l, a), r.mustAdd(l, b)
	// The gateway is usable from the first packet: the host veth's
	// link-local address is not tentative (duplicate address detection
	// would keep it so, answering no neighbour solicitation, for ~2 s).
	if got := sysctlIn(t, r.host.NS, "net/ipv6/conf/"+a.veth()+"/accept_dad"); got != "0" {
		t.Errorf("host veth accept_dad = %s, want 0", got)
	}
	gatewayNotTentative(t, r, a.veth())
	for _, v6 := range []bool{false, true} {
		ipA, ipB := podAddr(t, resA, v6), podAddr(t, resB, v6)
		if err := testenv.Ping(a.ns, ipB, 3); err != nil {
			t.Error(err)
		}
		if err := testenv.Ping(r.host.NS, ipA, 3); err != nil {
			t.Error(err)
		}
	}
	if err := testenv.Ping(a.ns, netip.MustParseAddr("fd00:198:18::2"), 3); err != nil {
		t.Error(err)
	}
	if got := sysctlIn(t, r.host.NS, "net/ipv6/conf/"+a.veth()+"/proxy_ndp"); got != "1" {
		t.Errorf("proxy_ndp = %s", got)
	}
	if err := r.check(l, a); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	for _, p := range []*pod{a, b} {
		if err := r.del(l, p); err != nil {
			t.Fatal(err)
		}
	}
}

// gatewayNotTentative waits for the host veth's link-local address (the
// kernel adds it once both ends are up) and fails if it is tentative then.
func gatewayNotTentative(t *testing.T, r *rig, veth string) {
	t.Helper()
	gw := net.IP(routed.GatewayV6.AsSlice())
	deadline := time.Now().Add(10 * time.Second)
	for {
		var found *netlink.Addr
		err := r.in(func() error {
			l, err := netlink.LinkByName(veth)
			if err != nil {
				return err
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
			for i := range addrs {
				if addrs[i].IP.Equal(gw) {
					found = &addrs[i]
				}
			}
			return err
		})
		if err != nil {
			t.Fatalf("addresses of %s: %v", veth, err)
		}
		if found != nil {
			if found.Flags&unix.IFA_F_TENTATIVE != 0 {
				t.Errorf("gateway %s on %s is tentative (flags %#x): pods cannot reach it yet", gw, veth, found.Flags)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway %s never appeared on %s", gw, veth)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
