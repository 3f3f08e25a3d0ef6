package bgpd

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/testenv"
)

// TestRouteDeleteFilter: of the route notifications, the socket filter
// lets through only the deletion of a brindle route.
func TestRouteDeleteFilter(t *testing.T) {
	for _, c := range []struct {
		typ   uint16
		proto byte
		pass  bool
	}{
		{unix.RTM_DELROUTE, byte(RouteProtocol), true},
		{unix.RTM_NEWROUTE, byte(RouteProtocol), false}, // brindled's own adds
		{unix.RTM_DELROUTE, unix.RTPROT_BOOT, false},    // a pod's host route
		{unix.RTM_DELROUTE, unix.RTPROT_STATIC, false},
		{unix.RTM_NEWROUTE, unix.RTPROT_BOOT, false},
	} {
		msg := make([]byte, unix.NLMSG_HDRLEN+12)
		binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
		binary.NativeEndian.PutUint16(msg[4:], c.typ)
		msg[unix.NLMSG_HDRLEN] = unix.AF_INET
		msg[unix.NLMSG_HDRLEN+5] = c.proto
		if pass := testenv.FilterPasses(t, routeDeleteFilter(), msg); pass != c.pass {
			t.Errorf("type %d protocol %d: filter passes %v, want pass=%v", c.typ, c.proto, pass, c.pass)
		}
	}
}

// TestWatchRouteDeletes: a brindle route deleted by someone else is
// signalled, IPv4 and IPv6, every time.
func TestWatchRouteDeletes(t *testing.T) {
	n, h, _ := uplinkNS(t, "10.0.0.1/24", "fd00::1/64")
	ready := make(chan struct{})
	dial := func() (*mdnetlink.Conn, error) {
		var c *mdnetlink.Conn
		err := n.Do(func(ns.NetNS) error {
			var err error
			c, err = dialRouteDeletes()
			return err
		})
		if err == nil {
			close(ready)
		}
		return c, err
	}
	ch := watchRouteDeletes(t.Context(), slog.New(slog.DiscardHandler), dial)
	select {
	case <-ready:
	case <-time.After(time.Minute):
		t.Fatal("the watch did not start")
	}
	for _, p := range []string{"10.244.1.0/26", "10.244.2.0/26", "fd00:244::/122"} {
		gw := netip.MustParseAddr("10.0.0.9").AsSlice()
		if netip.MustParsePrefix(p).Addr().Is6() {
			gw = netip.MustParseAddr("fd00::9").AsSlice()
		}
		r := &netlink.Route{Dst: ipNet(netip.MustParsePrefix(p)), Gw: gw, Protocol: RouteProtocol}
		if err := h.RouteAdd(r); err != nil {
			t.Fatalf("add %s: %v", p, err)
		}
		if err := h.RouteDel(r); err != nil {
			t.Fatalf("delete %s: %v", p, err)
		}
		select {
		case <-ch:
		case <-time.After(time.Minute):
			t.Fatalf("deleting %s was not signalled", p)
		}
	}
}
