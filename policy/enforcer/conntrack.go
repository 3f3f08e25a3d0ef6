package enforcer

import (
	"net/netip"
	"runtime"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/sysctl"
	"github.com/brindle-net/brindle/policy"
)

// flushDenied deletes the conntrack entries of local pods' connections that
// the model no longer allows. The table accepts packets of established
// connections before any policy rule, so without this a connection opened
// while a policy allowed it would outlive the policy's removal or
// tightening. Connections opened by the host itself are kept: the node may
// always reach its pods (kubelet probes), and the table never filters them.
func flushDenied(h *netlink.Handle, m *policy.Model, local map[netip.Addr]bool, host map[netip.Addr]bool) (uint, error) {
	f := &deniedFilter{m: m, local: local, host: host}
	var total uint
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

type deniedFilter struct {
	m           *policy.Model
	local, host map[netip.Addr]bool
}

// MatchConntrackFlow: the client is the original source, the server the
// reply's source (after any Service DNAT), the port the server's.
func (f *deniedFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	client, ok1 := netip.AddrFromSlice(flow.Forward.SrcIP)
	server, ok2 := netip.AddrFromSlice(flow.Reverse.SrcIP)
	if !ok1 || !ok2 {
		return false
	}
	client, server = client.Unmap(), server.Unmap()
	if f.host[client] || (!f.local[client] && !f.local[server]) {
		return false
	}
	return !f.m.Evaluate(client, server, flow.Forward.Protocol, flow.Reverse.SrcPort).Allowed
}

// hostAddrs are the node's own addresses.
func hostAddrs(h *netlink.Handle) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out[ip.Unmap()] = true
		}
	}
	return out
}

// conntrackEntries is the number of conntrack entries in network namespace
// nsh (0: the calling thread's), or -1 when it cannot be read. The count
// is per namespace, while a dump walks the kernel's table of every
// namespace (262,144 buckets here): with no entry there is nothing to
// check, and the dump is spared.
func conntrackEntries(nsh netns.NsHandle) int {
	read := func() int {
		v, err := sysctl.Get("net/netfilter/nf_conntrack_count")
		if err != nil {
			return -1
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return -1
		}
		return n
	}
	if nsh == 0 {
		return read()
	}
	// On a thread of its own: one left in the wrong namespace ends with
	// its goroutine instead of being reused.
	out := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			out <- -1
			return
		}
		defer orig.Close()
		if err := netns.Set(nsh); err != nil {
			runtime.UnlockOSThread()
			out <- -1
			return
		}
		n := read()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		out <- n
	}()
	return <-out
}
