package routed_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/internal/testenv"
)

func podAddr(t *testing.T, res *current.Result, v6 bool) netip.Addr {
	t.Helper()
	for _, ipc := range res.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		a = a.Unmap()
		if a.Is6() == v6 {
			ones, bits := ipc.Address.Mask.Size()
			if ones != bits {
				t.Fatalf("result address %s is not a host prefix", ipc.Address.String())
			}
			return a
		}
	}
	t.Fatalf("result has no IPv6=%v address: %v", v6, res)
	return netip.Addr{}
}

// TestTwoPodsPing is the plugin's main path: two pods on one host, each with
// a /32 and a default route via 169.254.1.1, reach each other and the host,
// and the host reaches them; the kernel holds exactly the conventions of
// DESIGN.md; CHECK passes; DEL twice succeeds and leaves nothing.
func TestTwoPodsPing(t *testing.T) {
	r := newRig(t)
	l := r.list("1.1.0", r.hostLocal("10.244.1.0/24"), nil)
	a, b := r.newPod("a"), r.newPod("b")
	resA, resB := r.mustAdd(l, a), r.mustAdd(l, b)
	ipA, ipB := podAddr(t, resA, false), podAddr(t, resB, false)

	// Result shape: host veth, pod interface with its sandbox, /32, gateway.
	if len(resA.Interfaces) != 2 || resA.Interfaces[0].Name != a.veth() || resA.Interfaces[0].Mac != "ee:ee:ee:ee:ee:ee" ||
		resA.Interfaces[1].Name != "eth0" || resA.Interfaces[1].Sandbox != a.ns.Path() {
		t.Fatalf("result interfaces = %+v", resA.Interfaces)
	}
	if gw := resA.IPs[0].Gateway.String(); gw != "169.254.1.1" {
		t.Fatalf("result gateway = %s", gw)
	}

	for _, c := range []struct {
		from ns.NetNS
		to   netip.Addr
	}{{a.ns, ipB}, {b.ns, ipA}, {a.ns, r.host.Addr}, {r.host.NS, ipA}, {r.host.NS, ipB}} {
		if err := testenv.Ping(c.from, c.to, 3); err != nil {
			t.Errorf("%v", err)
		}
	}

	// Kernel conventions, host side.
	veth := a.veth()
	if !strings.HasPrefix(veth, "bri") || len(veth) != 15 {
		t.Fatalf("host veth name %q", veth)
	}
	for name, want := range map[string]string{
		"net/ipv4/conf/" + veth + "/proxy_arp":    "1",
		"net/ipv4/neigh/" + veth + "/proxy_delay": "0",
		"net/ipv4/conf/" + veth + "/forwarding":   "1",
		"net/ipv4/conf/" + veth + "/rp_filter":    "1",
	} {
		if got := sysctlIn(t, r.host.NS, name); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	_ = r.in(func() error {
		routes, err := netlink.RouteGet(net.IP(ipA.AsSlice()))
		if err != nil || len(routes) != 1 {
			t.Fatalf("route get %s: %v %v", ipA, routes, err)
		}
		hl, _ := netlink.LinkByName(veth)
		if routes[0].LinkIndex != hl.Attrs().Index {
			t.Errorf("host route to %s goes via ifindex %d, want %s (%d)", ipA, routes[0].LinkIndex, veth, hl.Attrs().Index)
		}
		return nil
	})
	// Pod side: /32 and the two routes.
	_ = a.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != ipA.String()+"/32" {
			t.Errorf("pod addresses = %v, want %s/32", addrs, ipA)
		}
		routes, _ := netlink.RouteList(l, netlink.FAMILY_V4)
		var got []string
		for _, rt := range routes {
			got = append(got, rt.String())
		}
		s := strings.Join(got, "\n")
		if !strings.Contains(s, "Dst: 169.254.1.1/32") || !strings.Contains(s, "Gw: 169.254.1.1") {
			t.Errorf("pod routes:\n%s", s)
		}
		return nil
	})

	if err := r.check(l, a); err != nil {
		t.Fatalf("CHECK after ADD: %v", err)
	}

	for i := range 2 {
		if err := r.del(l, a); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if err := r.del(l, b); err != nil {
		t.Fatal(err)
	}
	if links := r.hostLinks("bri"); len(links) != 0 {
		t.Errorf("host veths left after DEL: %v", links)
	}
	if ips := r.allocated(); len(ips) != 0 {
		t.Errorf("addresses still allocated after DEL: %v", ips)
	}
}

// TestCheckDetectsDrift changes the kernel behind the plugin's back and
// expects CHECK to say exactly what is wrong.
func TestCheckDetectsDrift(t *testing.T) {
	r := newRig(t)
	l := r.list("1.1.0", r.hostLocal("10.244.1.0/24"), nil)
	p := r.newPod("drift")
	ip := podAddr(t, r.mustAdd(l, p), false)
	veth := p.veth()

	cases := []struct {
		name          string
		breakIt, mend func()
		want          []string
	}{{
		name: "host route removed",
		breakIt: func() {
			_ = r.in(func() error {
				err := netlink.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
				if err != nil {
					t.Fatalf("route del: %v", err)
				}
				return nil
			})
		},
		mend: func() {
			_ = r.in(func() error {
				hl, _ := netlink.LinkByName(veth)
				return netlink.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
			})
		},
		want: []string{"host route " + ip.String() + "/32 dev " + veth + " scope link missing"},
	}, {
		name:    "rp_filter off",
		breakIt: func() { writeSysctlIn(t, r.host.NS, "net/ipv4/conf/"+veth+"/rp_filter", "0") },
		mend:    func() { writeSysctlIn(t, r.host.NS, "net/ipv4/conf/"+veth+"/rp_filter", "1") },
		want:    []string{"sysctl net.ipv4.conf." + veth + ".rp_filter is 0, want 1"},
	}, {
		name:    "proxy_arp off",
		breakIt: func() { writeSysctlIn(t, r.host.NS, "net/ipv4/conf/"+veth+"/proxy_arp", "0") },
		mend:    func() { writeSysctlIn(t, r.host.NS, "net/ipv4/conf/"+veth+"/proxy_arp", "1") },
		want:    []string{"proxy_arp is 0, want 1"},
	}, {
		name: "pod default route removed",
		breakIt: func() {
			_ = p.ns.Do(func(ns.NetNS) error {
				l, _ := netlink.LinkByName("eth0")
				return netlink.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IPv4(169, 254, 1, 1)})
			})
		},
		mend: func() {
			_ = p.ns.Do(func(ns.NetNS) error {
				l, _ := netlink.LinkByName("eth0")
				return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IPv4(169, 254, 1, 1)})
			})
		},
		want: []string{"pod interface eth0", "default route via 169.254.1.1 missing"},
	}, {
		name: "pod address removed",
		breakIt: func() {
			_ = p.ns.Do(func(ns.NetNS) error {
				l, _ := netlink.LinkByName("eth0")
				return netlink.AddrDel(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}})
			})
		},
		mend: func() {
			_ = p.ns.Do(func(ns.NetNS) error {
				l, _ := netlink.LinkByName("eth0")
				if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
					return err
				}
				// Removing the only address took the routes with it.
				if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(169, 254, 1, 1), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
					return err
				}
				return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IPv4(169, 254, 1, 1)})
			})
		},
		want: []string{"address " + ip.String() + "/32 missing"},
	}, {
		name: "host veth down",
		breakIt: func() {
			_ = r.in(func() error { hl, _ := netlink.LinkByName(veth); return netlink.LinkSetDown(hl) })
		},
		mend: func() {
			_ = r.in(func() error {
				hl, _ := netlink.LinkByName(veth)
				if err := netlink.LinkSetUp(hl); err != nil {
					return err
				}
				// Down took the host route with it.
				return netlink.RouteReplace(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
			})
		},
		want: []string{"host veth " + veth, "is down"},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.breakIt()
			errContains(t, r.check(l, p), c.want...)
			c.mend()
			if err := r.check(l, p); err != nil {
				t.Fatalf("CHECK after mending: %v", err)
			}
		})
	}
	if err := testenv.Ping(p.ns, r.host.Addr, 3); err != nil {
		t.Errorf("after all mends: %v", err)
	}
}

// TestDelForgiving: DEL succeeds when the netns is gone, when nothing was
// ever added, and releases the address in every case.
func TestDelForgiving(t *testing.T) {
	r := newRig(t)
	l := r.list("1.1.0", r.hostLocal("10.244.1.0/24"), nil)

	p := r.newPod("gone")
	r.mustAdd(l, p)
	path := p.ns.Path()
	p.ns.Close()
	if err := testenvUnmount(p.ns); err != nil {
		t.Fatal(err)
	}
	p.rt.NetNS = path
	if err := r.in(func() error { return r.cni.DelNetworkList(t.Context(), l, p.rt) }); err != nil {
		t.Fatalf("DEL with netns gone: %v", err)
	}
	if links := r.hostLinks("bri"); len(links) != 0 {
		t.Errorf("host veths left: %v", links)
	}
	if ips := r.allocated(); len(ips) != 0 {
		t.Errorf("addresses left: %v", ips)
	}

	never := r.newPod("never")
	if err := r.del(l, never); err != nil {
		t.Fatalf("DEL of an attachment never added: %v", err)
	}
}

// TestStaleSandboxDel: a pod's new sandbox takes over the host veth name;
// a late DEL of the old sandbox must not cut the new one off.
func TestStaleSandboxDel(t *testing.T) {
	r := newRig(t)
	l := r.list("1.1.0", r.hostLocal("10.244.1.0/24"), nil)
	old := r.newPod("web")
	r.mustAdd(l, old)
	fresh := r.newPod("web")
	fresh.rt.ContainerID = "ctr-web-2"
	ip := podAddr(t, r.mustAdd(l, fresh), false)
	if err := r.del(l, old); err != nil {
		t.Fatalf("DEL of old sandbox: %v", err)
	}
	if err := r.check(l, fresh); err != nil {
		t.Fatalf("new sandbox broken by old DEL: %v", err)
	}
	if err := testenv.Ping(r.host.NS, ip, 3); err != nil {
		t.Fatal(err)
	}
}
