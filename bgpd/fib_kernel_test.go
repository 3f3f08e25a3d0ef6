package bgpd

import (
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/testenv"
)

// Defect 1 (issue 12): a learned /32 that equals a local pod's address (a
// borrowed address, or a peer announcing a pool /32) must not replace the
// pod's `X/32 dev bri…` route, nor may a later sync delete it. Real
// netlink in a throwaway namespace; both with route changes one by one
// and in bulk through a RouteSocket.
func TestFIBNeverReplacesForeignRoutes(t *testing.T) {
	for _, bulk := range []bool{false, true} {
		t.Run(map[bool]string{false: "one by one", true: "bulk"}[bulk], func(t *testing.T) { testFIBNeverReplacesForeignRoutes(t, bulk) })
	}
}

func testFIBNeverReplacesForeignRoutes(t *testing.T, bulk bool) {
	testenv.RequireRoot(t)
	n := testenv.NewNS(t)
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "bripod"}, PeerName: "bripeer"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	up, _ := h.LinkByName("bripod")
	if err := h.LinkSetUp(up); err != nil {
		t.Fatal(err)
	}
	uplink, _ := h.LinkByName("bripeer")
	_ = h.LinkSetUp(uplink)
	if err := h.AddrAdd(uplink, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.0.0.1/24"))}); err != nil {
		t.Fatal(err)
	}
	pod := netip.MustParsePrefix("10.244.5.7/32")
	podRoute := &netlink.Route{Dst: ipNet(pod), LinkIndex: up.Attrs().Index, Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(podRoute); err != nil {
		t.Fatal(err)
	}
	table := Netlink{H: h}
	if bulk {
		if err := n.Do(func(ns.NetNS) error { table.Sock, err = OpenRouteSocket(); return err }); err != nil {
			t.Fatal(err)
		}
		defer table.Sock.Close()
	}
	fib := NewFIB(table, quiet(), false)
	res, err := fib.Set([]Route{
		{Dst: pod, Gw: netip.MustParseAddr("10.0.0.2")},
		{Dst: netip.MustParsePrefix("10.244.6.0/26"), Gw: netip.MustParseAddr("10.0.0.2")},
	})
	t.Logf("sync with a colliding /32: %+v, %v", res, err)
	checkPodRoute := func(when string) {
		t.Helper()
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipNet(pod), Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 1 || rs[0].LinkIndex != up.Attrs().Index || rs[0].Protocol == RouteProtocol {
			t.Fatalf("%s: the pod's route %s dev bripod is gone or replaced: %+v", when, pod, rs)
		}
	}
	checkPodRoute("after the sync")
	if res.Conflicts != 1 || res.Installed != 1 {
		t.Errorf("want 1 conflict and the /26 installed, got %+v", res)
	}
	if _, err := fib.Set(nil); err != nil {
		t.Fatal(err)
	}
	checkPodRoute("after the path is withdrawn")
}
