package bgpd

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/testenv"
)

// routeNS is a throwaway namespace with an uplink (10.0.0.1/24), a handle
// and a RouteSocket in it.
func routeNS(t *testing.T) (*netlink.Handle, *RouteSocket, netlink.Link) {
	t.Helper()
	n, h, up := uplinkNS(t, "10.0.0.1/24")
	var sock *RouteSocket
	err := n.Do(func(ns.NetNS) error {
		var err error
		sock, err = OpenRouteSocket()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return h, sock, up
}

// uplinkNS is a throwaway namespace with a handle in it and an uplink (a
// veth pair, both ends up) holding addrs, usable at once (no DAD).
func uplinkNS(t *testing.T, addrs ...string) (ns.NetNS, *netlink.Handle, netlink.Link) {
	t.Helper()
	testenv.RequireRoot(t)
	n := testenv.NewNS(t)
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1"}); err != nil {
		t.Fatal(err)
	}
	up, _ := h.LinkByName("up0")
	peer, _ := h.LinkByName("up1")
	for _, l := range []netlink.Link{up, peer} {
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range addrs {
		if err := h.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(a)), Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatal(err)
		}
	}
	return n, h, up
}

func TestRouteSocketTouchesOnlyBrindleRoutes(t *testing.T) {
	h, sock, up := routeNS(t)
	pod := netip.MustParsePrefix("10.244.5.7/32")
	foreign := netip.MustParsePrefix("10.9.0.0/16")
	for _, r := range []*netlink.Route{
		{Dst: ipNet(pod), LinkIndex: up.Attrs().Index, Scope: netlink.SCOPE_LINK},                           // a pod's route (proto boot)
		{Dst: ipNet(foreign), Gw: []byte{10, 0, 0, 9}, Protocol: netlink.RouteProtocol(unix.RTPROT_STATIC)}, // an operator's
	} {
		if err := h.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
	}
	route := func(dst string, gw string) *netlink.Route {
		k := routeKey{typ: unix.RTN_UNICAST}
		if gw == "" {
			k.typ = unix.RTN_BLACKHOLE
		} else {
			k.gw = netip.MustParseAddr(gw)
		}
		return k.route(netip.MustParsePrefix(dst))
	}
	errs, err := sock.Apply([]RouteOp{
		{Route: route("10.244.6.0/26", "10.0.0.2"), Kind: RouteAdd},
		{Route: route("10.244.7.0/26", ""), Kind: RouteAdd},
		{Route: route(pod.String(), "10.0.0.2"), Kind: RouteAdd},
		{Route: route("fd00:244::/122", ""), Kind: RouteAdd},
	})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], unix.EEXIST) || errs[3] != nil {
		t.Fatalf("adds: %v; want only the pod's destination refused (EEXIST)", errs)
	}
	dump := func() []string {
		t.Helper()
		var out []string
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			rs, err := sock.Dump(fam)
			if err != nil {
				t.Fatal(err)
			}
			for i := range rs {
				r := rs[i]
				r.LinkIndex = 0 // the kernel finds the device of a gateway
				out = append(out, describe(&r))
			}
		}
		slices.Sort(out)
		return out
	}
	if got, want := dump(), []string{"10.244.6.0/26 via 10.0.0.2", "blackhole 10.244.7.0/26", "blackhole fd00:244::/122"}; !slices.Equal(got, want) {
		t.Fatalf("dump %q, want %q (brindle's routes only)", got, want)
	}
	errs, err = sock.Apply([]RouteOp{
		{Route: route("10.244.6.0/26", "10.0.0.3"), Kind: RouteReplace},
		{Route: route(foreign.String(), "10.0.0.9"), Kind: RouteDelete},
		{Route: route(pod.String(), "10.0.0.2"), Kind: RouteDelete},
		{Route: route("10.244.7.0/26", ""), Kind: RouteDelete},
	})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || !errors.Is(errs[1], unix.ESRCH) || !errors.Is(errs[2], unix.ESRCH) || errs[3] != nil {
		t.Fatalf("replace and deletes: %v; want the deletes of routes of other protocols refused (ESRCH)", errs)
	}
	if got, want := dump(), []string{"10.244.6.0/26 via 10.0.0.3", "blackhole fd00:244::/122"}; !slices.Equal(got, want) {
		t.Fatalf("dump %q, want %q", got, want)
	}
	for _, dst := range []netip.Prefix{pod, foreign} {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipNet(dst), Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil || len(rs) != 1 || rs[0].Protocol == RouteProtocol {
			t.Fatalf("route of another owner at %s: %+v %v", dst, rs, err)
		}
	}
}

// Thousands of changes go in a few messages; the error of one of them is
// told apart from the others'.
func TestRouteSocketBatchErrors(t *testing.T) {
	h, sock, up := routeNS(t)
	taken := netip.MustParsePrefix("10.100.31.64/30") // index 2000 below
	if err := h.RouteAdd(&netlink.Route{Dst: ipNet(taken), LinkIndex: up.Attrs().Index, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	var ops []RouteOp
	for i := range 20000 {
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>14), byte(i >> 6), byte(i&63) << 2}), 30)
		ops = append(ops, RouteOp{Route: routeKey{typ: unix.RTN_UNICAST, gw: netip.MustParseAddr("10.0.0.2")}.route(dst), Kind: RouteAdd})
	}
	errs, err := sock.Apply(ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if (i == 2000) != (e != nil) || (e != nil && !errors.Is(e, unix.EEXIST)) {
			t.Fatalf("result %d (%s): %v", i, ops[i].Route.Dst, e)
		}
	}
	rs, err := sock.Dump(unix.AF_INET)
	if err != nil || len(rs) != 19999 {
		t.Fatalf("dump: %d routes (want 19,999), %v", len(rs), err)
	}
}
