package routed

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// flushConntrack deletes the host's conntrack entries that involve any of
// addrs, in either direction, so that an address given to a new pod does
// not inherit a dead pod's flows (a NAT mapping, an established state).
// One dump of the table per family, unless the namespace's table is empty:
// a kernel without conntrack, or a host whose rules never made it track a
// flow, has nothing to flush, and skipping the dump saves its cost (the
// kernel walks every bucket of the shared hash table for it, 5 ms for
// 262,144 buckets, whatever this namespace holds).
func flushConntrack(addrs []netip.Addr) (uint, error) {
	if conntrackEmpty() {
		return 0, nil
	}
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

// conntrackCount is the number of conntrack entries of the calling
// thread's network namespace; the file is there only when the kernel has
// conntrack.
const conntrackCount = "/proc/sys/net/netfilter/nf_conntrack_count"

// conntrackEmpty reports whether this namespace's conntrack table holds
// no entry at all (or the kernel has none): then no flow can be stale. The
// kernel makes the same test before its own flush (nf_ct_iterate_cleanup_net
// returns at once when the namespace's count is 0). An entry made after the
// test is a new flow, as one made after a dump would be. In doubt (the
// count cannot be read) the table is not empty: the dump decides.
func conntrackEmpty() bool {
	b, err := os.ReadFile(conntrackCount)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && strings.TrimSpace(string(b)) == "0"
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
