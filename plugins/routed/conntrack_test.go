package routed

import (
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/testenv"
)

// TestConntrackEmpty: a namespace that never tracked a flow has nothing to
// flush and the dump is skipped; once it holds entries one dump gives both
// families, and a flush deletes exactly the entries of the addresses given.
func TestConntrackEmpty(t *testing.T) {
	testenv.RequireRoot(t)
	n := testenv.NewNS(t)
	pod, other, bystander := netip.MustParseAddr("10.98.0.5"), netip.MustParseAddr("10.98.0.9"), netip.MustParseAddr("10.98.0.7")
	pod6, other6 := netip.MustParseAddr("fd98::5"), netip.MustParseAddr("fd98::9")
	err := n.Do(func(ns.NetNS) error {
		if !conntrackEmpty() {
			t.Fatal("a new namespace's conntrack table is not empty (net.netfilter.nf_conntrack_count)")
		}
		if got, err := flushConntrack([]netip.Addr{pod}); got != 0 || err != nil {
			t.Errorf("flush of an empty table: %d entries, %v", got, err)
		}
		for _, src := range []netip.Addr{pod, bystander, pod6} {
			family, dst := uint8(unix.AF_INET), other
			if src.Is6() {
				family, dst = unix.AF_INET6, other6
			}
			flow := &netlink.ConntrackFlow{FamilyType: family,
				Forward: netlink.IPTuple{SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice()), SrcPort: 40000, DstPort: 53, Protocol: unix.IPPROTO_UDP},
				Reverse: netlink.IPTuple{SrcIP: net.IP(dst.AsSlice()), DstIP: net.IP(src.AsSlice()), SrcPort: 53, DstPort: 40000, Protocol: unix.IPPROTO_UDP},
				TimeOut: 300}
			if err := netlink.ConntrackCreate(netlink.ConntrackTable, netlink.InetFamily(family), flow); err != nil {
				t.Skipf("SKIP: cannot create a conntrack entry here (nf_conntrack): %v", err)
			}
		}
		if conntrackEmpty() {
			t.Fatal("conntrackEmpty with three entries in the table")
		}
		// One dump holds both families.
		all, err := dumpConntrack()
		if err != nil || len(all) != 3 {
			t.Fatalf("dump: %d entries, %v; want 3 (two IPv4, one IPv6)", len(all), err)
		}
		// The dump is what ADD takes while IPAM runs: an entry gone since
		// is no error.
		if got, err := all.deleteMatching([]netip.Addr{pod6}); got != 1 || err != nil {
			t.Errorf("delete of %s's entries from the dump: %d, %v; want 1", pod6, got, err)
		}
		if got, err := all.deleteMatching([]netip.Addr{pod6}); err != nil {
			t.Errorf("delete of %s's entries again: %d, %v; want no error", pod6, got, err)
		}
		if got, err := flushConntrack([]netip.Addr{pod}); got != 1 || err != nil {
			t.Errorf("flush of %s: %d entries, %v; want 1", pod, got, err)
		}
		left, err := dumpConntrack()
		if err != nil || len(left) != 1 || !involves(left[0], []netip.Addr{bystander}) {
			t.Errorf("after the flushes %d entries left (%v); want only %s's", len(left), err, bystander)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
