package bgpd

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/internal/testenv"
)

// Defect 13 (issue 12): a node whose BGP address is on lo (or a dummy)
// takes the MTU of the interface that reaches its peers (the default
// route's), not lo's 65536; an MTU above what a veth takes is clamped.
func TestUnderlayMTUFromLoopbackAddress(t *testing.T) {
	testenv.RequireRoot(t)
	n := testenv.NewNS(t)
	var mtu int
	var how string
	var old int
	err := testenv.Do(t, n, func() error {
		lo, _ := netlink.LinkByName("lo")
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.0.0.5/32"))}); err != nil {
			return err
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink", MTU: 1400}, PeerName: "uplink-peer"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		up, _ := netlink.LinkByName("uplink")
		if err := netlink.LinkSetUp(up); err != nil {
			return err
		}
		if err := netlink.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("192.0.2.2/24"))}); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: []byte{192, 0, 2, 1}}); err != nil {
			return err
		}
		l, err := linkHolding(netip.MustParseAddr("10.0.0.5"))
		if err != nil {
			return err
		}
		old = l.Attrs().MTU // what brindled used to take
		mtu, how, err = UnderlayMTU(netip.MustParseAddr("10.0.0.5"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the interface holding the address has MTU %d; underlay MTU %d (%s)", old, mtu, how)
	if mtu != 1400 || !strings.Contains(how, "lo") || !strings.Contains(how, "uplink") {
		t.Fatalf("underlay MTU %d (%q), want 1400 from uplink, the default route's device", mtu, how)
	}
}
