package routed

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// flushConntrack deletes the host's conntrack entries that involve any of
// addrs, in either direction, so that an address given to a new pod does
// not inherit a dead pod's flows (a NAT mapping, an established state).
// One dump of the table per family. A kernel without conntrack has nothing
// to flush; that is not an error.
func flushConntrack(addrs []netip.Addr) (uint, error) {
	var total uint
	for _, fam := range []struct {
		family netlink.InetFamily
		v6     bool
	}{{unix.AF_INET, false}, {unix.AF_INET6, true}} {
		var filters []netlink.CustomConntrackFilter
		for _, a := range addrs {
			if a.Is6() != fam.v6 {
				continue
			}
			ip := net.IP(a.AsSlice())
			for _, tp := range []netlink.ConntrackFilterType{netlink.ConntrackOrigSrcIP, netlink.ConntrackOrigDstIP, netlink.ConntrackReplyAnyIP} {
				f := &netlink.ConntrackFilter{}
				if err := f.AddIP(tp, ip); err != nil {
					return total, err
				}
				filters = append(filters, f)
			}
		}
		if len(filters) == 0 {
			continue
		}
		n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam.family, filters...)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// linkAddrs lists the pod addresses routed to a host veth (its host
// routes), before the veth goes and takes them along.
func linkAddrs(l netlink.Link) []netip.Addr {
	var out []netip.Addr
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, _ := netlink.RouteList(l, fam)
		for _, r := range rs {
			if r.Dst == nil {
				continue
			}
			ones, bits := r.Dst.Mask.Size()
			if a, ok := netip.AddrFromSlice(r.Dst.IP); ok && ones == bits {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}
