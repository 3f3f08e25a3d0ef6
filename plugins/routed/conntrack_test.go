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
// flush and the dump is skipped; once it holds an entry the flush dumps and
// deletes exactly the entries of the addresses given.
func TestConntrackEmpty(t *testing.T) {
	testenv.RequireRoot(t)
	n := testenv.NewNS(t)
	pod, other, bystander := netip.MustParseAddr("10.98.0.5"), netip.MustParseAddr("10.98.0.9"), netip.MustParseAddr("10.98.0.7")
	err := n.Do(func(ns.NetNS) error {
		if !conntrackEmpty() {
			t.Fatalf("a new namespace's conntrack table is not empty (%s)", conntrackCount)
		}
		if got, err := flushConntrack([]netip.Addr{pod}); got != 0 || err != nil {
			t.Errorf("flush of an empty table: %d entries, %v", got, err)
		}
		for _, src := range []netip.Addr{pod, bystander} {
			flow := &netlink.ConntrackFlow{FamilyType: unix.AF_INET,
				Forward: netlink.IPTuple{SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(other.AsSlice()), SrcPort: 40000, DstPort: 53, Protocol: unix.IPPROTO_UDP},
				Reverse: netlink.IPTuple{SrcIP: net.IP(other.AsSlice()), DstIP: net.IP(src.AsSlice()), SrcPort: 53, DstPort: 40000, Protocol: unix.IPPROTO_UDP},
				TimeOut: 300}
			if err := netlink.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, flow); err != nil {
				t.Skipf("SKIP: cannot create a conntrack entry here (nf_conntrack): %v", err)
			}
		}
		if conntrackEmpty() {
			t.Fatal("conntrackEmpty with two entries in the table")
		}
		if got, err := flushConntrack([]netip.Addr{pod}); got != 1 || err != nil {
			t.Errorf("flush of %s: %d entries, %v; want 1", pod, got, err)
		}
		if conntrackEmpty() {
			t.Errorf("the flush of %s took %s's entry too", pod, bystander)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
