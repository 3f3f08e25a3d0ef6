package routed_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/testenv"
)

// Defect 7 (issue 12): a second brindle interface in one pod (eth0 and
// net1, two networks as with Multus) must not delete the first.
func TestTwoInterfacesOnePod(t *testing.T) {
	r := newRig(t)
	netA := r.list("1.0.0", r.hostLocal("10.91.0.0/24"), nil)
	netB := r.list("1.0.0", map[string]any{"type": "host-local", "dataDir": r.dir + "/ipam-b",
		"ranges": [][]map[string]string{{{"subnet": "10.92.0.0/24"}}}}, nil)
	netB.Name = "second"
	p := r.newPod("multi")
	r.mustAdd(netA, p)
	second := &pod{ns: p.ns, rt: &libcni.RuntimeConf{ContainerID: p.rt.ContainerID, IfName: "net1", Args: p.rt.Args}}
	if _, err := r.add(netB, second); err != nil {
		t.Fatalf("ADD net1: %v\n%s", err, r.log())
	}
	var names []string
	err := p.ns.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(names, ",")
	if !strings.Contains(joined, "eth0") || !strings.Contains(joined, "net1") {
		t.Fatalf("pod interfaces %v: want eth0 and net1 side by side", names)
	}
	if err := r.check(netA, p); err != nil {
		t.Errorf("CHECK eth0 after net1 was added: %v", err)
	}
	if err := testenv.Ping(p.ns, r.host.Addr, 3); err != nil {
		t.Errorf("pod to host through eth0 with net1 next to it: %v", err)
	}
	if err := r.check(netB, second); err != nil {
		t.Errorf("CHECK net1: %v", err)
	}
	// DEL of one leaves the other.
	if err := r.del(netB, second); err != nil {
		t.Fatal(err)
	}
	if err := r.check(netA, p); err != nil {
		t.Errorf("CHECK eth0 after net1 was deleted: %v", err)
	}
	if err := r.del(netA, p); err != nil {
		t.Fatal(err)
	}
	if left := r.hostLinks("bri"); len(left) != 0 {
		t.Errorf("host veths left: %v", left)
	}
}

// Defect 16 (issue 12): logLevel "debug" gives debug lines, from the plugin
// and from brindle-ipam, in the configured log file.
func TestDebugLogLevel(t *testing.T) {
	testenv.RequireRoot(t)
	r := newRig(t)
	l := r.list("1.0.0", r.hostLocal("10.93.0.0/24"), nil)
	p := r.newPod("chatty")
	r.mustAdd(l, p)
	if err := r.del(l, p); err != nil {
		t.Fatal(err)
	}
	var debug int
	for _, line := range strings.Split(r.log(), "\n") {
		if strings.Contains(line, `"level":"DEBUG"`) {
			debug++
		}
	}
	if debug == 0 {
		t.Fatalf("logLevel debug: no debug line in the log:\n%s", r.log())
	}
	t.Logf("%d debug lines", debug)
}

// conntrackFlow inserts a UDP flow from src to dst into the host's
// conntrack table, as a dead pod's traffic would have left it.
func conntrackFlow(t *testing.T, r *rig, src, dst netip.Addr) {
	t.Helper()
	flow := &netlink.ConntrackFlow{FamilyType: unix.AF_INET,
		Forward: netlink.IPTuple{SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice()), SrcPort: 40000, DstPort: 53, Protocol: unix.IPPROTO_UDP},
		Reverse: netlink.IPTuple{SrcIP: net.IP(dst.AsSlice()), DstIP: net.IP(src.AsSlice()), SrcPort: 53, DstPort: 40000, Protocol: unix.IPPROTO_UDP},
		TimeOut: 300}
	if err := r.in(func() error { return netlink.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, flow) }); err != nil {
		t.Skipf("SKIP: cannot create a conntrack entry here (nf_conntrack): %v", err)
	}
}

// flowsOf lists the host's conntrack flows that involve a.
func flowsOf(t *testing.T, r *rig, a netip.Addr) []string {
	t.Helper()
	var out []string
	err := r.in(func() error {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		for _, f := range flows {
			for _, ip := range []net.IP{f.Forward.SrcIP, f.Forward.DstIP, f.Reverse.SrcIP, f.Reverse.DstIP} {
				if ip.Equal(net.IP(a.AsSlice())) {
					out = append(out, f.String())
					break
				}
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Issue 12: conntrack entries of a released address are flushed, so a
// reused address does not inherit a dead pod's flows: at DEL for the pod's
// addresses, and at ADD for the addresses it is given.
func TestConntrackFlushedAtDelAndAdd(t *testing.T) {
	r := newRig(t)
	l := r.list("1.0.0", r.hostLocal("10.94.0.0/24"), nil)
	p := r.newPod("ct")
	ip := podAddr(t, r.mustAdd(l, p), false)
	other := netip.MustParseAddr("10.99.0.1")
	conntrackFlow(t, r, ip, other)
	conntrackFlow(t, r, other, ip)
	if got := flowsOf(t, r, ip); len(got) != 2 {
		t.Fatalf("setup: flows of %s: %v", ip, got)
	}
	if err := r.del(l, p); err != nil {
		t.Fatal(err)
	}
	if got := flowsOf(t, r, ip); len(got) != 0 {
		t.Errorf("after DEL, conntrack still has flows of %s: %v", ip, got)
	}
	// host-local hands out the next address; a flow left for it (a DEL
	// that never ran) is flushed by the ADD that gets it.
	next := ip.Next()
	conntrackFlow(t, r, next, other)
	q := r.newPod("ct2")
	if got := podAddr(t, r.mustAdd(l, q), false); got != next {
		t.Fatalf("setup: want %s, got %s", next, got)
	}
	if got := flowsOf(t, r, next); len(got) != 0 {
		t.Errorf("after ADD of %s, conntrack still has its old flows: %v", next, got)
	}
}
