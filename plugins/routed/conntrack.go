package routed

import (
	"errors"
	"io/fs"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/sysctl"
)

// ctEntries is the host's conntrack table as one dump gave it: one raw
// message per entry, each starting with its nfgenmsg header.
type ctEntries [][]byte

// dumpConntrack reads the host namespace's conntrack table, both families
// in one dump. The kernel walks every bucket of the hash table all
// namespaces share to answer (262,144 here: about 5 ms, whatever this
// namespace holds), so an empty table (nf_conntrack_count 0) or a kernel
// without conntrack is not dumped at all: nothing can be stale there. A
// dump the kernel interrupted (entries changed under it) is kept as far as
// it went, and the error returned with it.
func dumpConntrack() (ctEntries, error) {
	if conntrackEmpty() {
		return nil, nil
	}
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: nl.NFNETLINK_V0})
	return req.Execute(unix.NETLINK_NETFILTER, 0)
}

// deleteMatching deletes the dumped entries that involve any of addrs, in
// either direction (original or reply, source or destination), so that an
// address given to a new pod does not inherit a dead pod's flows (a NAT
// mapping, an established state). Each is deleted by its own message: the
// kernel finds it by its original tuple and zone and checks its ID, so an
// entry made since the dump under the same tuple is not touched. One gone
// already is not an error.
func (e ctEntries) deleteMatching(addrs []netip.Addr) (uint, error) {
	var n uint
	var errs []error
	for _, m := range e {
		if !involves(m, addrs) {
			continue
		}
		req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
		req.AddRawData(m)
		if _, err := req.Execute(unix.NETLINK_NETFILTER, 0); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// involves reports whether a dumped entry's original or reply tuple has
// one of addrs as its source or destination.
func involves(m []byte, addrs []netip.Addr) bool {
	if len(m) < nl.SizeofNfgenmsg {
		return false
	}
	top, err := nl.ParseRouteAttr(m[nl.SizeofNfgenmsg:])
	if err != nil {
		return false
	}
	for _, t := range top {
		if typ := attrType(t); typ != nl.CTA_TUPLE_ORIG && typ != nl.CTA_TUPLE_REPLY {
			continue
		}
		tuple, _ := nl.ParseRouteAttr(t.Value)
		for _, ip := range tuple {
			if attrType(ip) != nl.CTA_TUPLE_IP {
				continue
			}
			ends, _ := nl.ParseRouteAttr(ip.Value)
			for _, a := range ends {
				if addr, ok := netip.AddrFromSlice(a.Value); ok && slices.Contains(addrs, addr.Unmap()) {
					return true
				}
			}
		}
	}
	return false
}

func attrType(a syscall.NetlinkRouteAttr) uint16 {
	return a.Attr.Type &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
}

// flushConntrack deletes the host's conntrack entries that involve any of
// addrs: one dump (none when the table is empty), then one delete per
// matching entry. A kernel without conntrack has nothing to flush; that is
// not an error.
func flushConntrack(addrs []netip.Addr) (uint, error) {
	e, err := dumpConntrack()
	if err != nil && !errors.Is(err, nl.ErrDumpInterrupted) {
		return 0, err
	}
	n, derr := e.deleteMatching(addrs)
	return n, errors.Join(err, derr)
}

// conntrackEmpty reports whether this namespace's conntrack table holds
// no entry at all (or the kernel has none): then no flow can be stale. The
// kernel makes the same test before its own flush (nf_ct_iterate_cleanup_net
// returns at once when the namespace's count is 0). An entry made after the
// test is a new flow, as one made after a dump would be. In doubt (the
// count cannot be read) the table is not empty: the dump decides.
//
// net.netfilter.nf_conntrack_count is the calling thread's namespace's;
// it is there only when the kernel has conntrack.
func conntrackEmpty() bool {
	n, err := sysctl.Get("net/netfilter/nf_conntrack_count")
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && n == "0"
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
