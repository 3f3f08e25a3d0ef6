package faults

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/brindle-net/brindle/test/lab"
)

// A pod sending with a spoofed IPv4 and IPv6 source — another local pod's
// address and one that is nobody's — is dropped on its own node whatever
// net.ipv4.conf.all.rp_filter says (0: off, 1: strict, 2: loose, which
// the kernel lets win over the veth's 1), as the underlay shows with
// tcpdump; its genuine traffic crosses. The drops are brindle's (table
// inet brindle, counter "spoofed"), and /readyz stays ready. The control
// run, with brindled's filter table off, shows the same packets leaving
// the node with rp_filter 0 and 2 (issue 12, defect 4).
func TestSpoofedSourceDropped(t *testing.T) {
	if !lab.TcpdumpAvailable() {
		t.Skip("SKIP: needs tcpdump (Debian package tcpdump) to watch the underlay")
	}
	leaked, dropped := spoofRun(t, true, "0", "1", "2")
	var summary []string
	for _, rp := range []string{"0", "1", "2"} {
		if leaked[rp] > 0 {
			t.Errorf("rp_filter=%s: %d spoofed packets left the node", rp, leaked[rp])
		}
		summary = append(summary, fmt.Sprintf("rp_filter=%s: %d/20 spoofed leaked", rp, leaked[rp]))
	}
	if dropped < 3*20 {
		t.Errorf("brindle counted %v spoofed drops, want at least 60", dropped)
	}
	control, _ := spoofRun(t, false, "0", "2")
	for _, rp := range []string{"0", "2"} {
		if control[rp] == 0 {
			t.Errorf("control without table inet brindle, rp_filter=%s: no spoofed packet left the node; the scenario cannot tell", rp)
		}
	}
	figures(t, "%v; %v dropped by table inet brindle (IPv4 and IPv6; another pod's address and nobody's); without the table: rp_filter=0 %d/20 and rp_filter=2 %d/20 leaked",
		summary, dropped, control["0"], control["2"])
}

// spoofRun sends genuine and spoofed UDP from a pod of node-1 to a pod of
// node-2 under each rp_filter value (all and the pod's veth), and returns
// how many spoofed packets the underlay saw per value, and how many drops
// brindled counted.
func spoofRun(t *testing.T, filter bool, rps ...string) (map[string]int, float64) {
	var args []string
	if !filter {
		args = []string{"--filter=false"}
	}
	l := filterLab(t, lab.Config{Nodes: 2, IPv6: true, DaemonArgs: args})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	n1, n2 := l.Nodes[0], l.Nodes[1]
	a, err := n1.AddPod(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	c, err := n1.AddPod(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n2.AddPod(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	cap, err := l.Capture(ctx, "udp port 9999")
	if err != nil {
		t.Fatal(err)
	}
	defer cap.Stop()
	// With foreign addresses on eth0 the pod's kernel may ask for the
	// gateway from one of them, and the answer goes nowhere: pin the
	// gateway's neighbour entry so that the genuine traffic flows.
	if out, err := lab.Run(a.NS, "ip", "-6", "neigh", "replace", "fe80::ecee:eeff:feee:eeee", "lladdr", "ee:ee:ee:ee:ee:ee", "dev", "eth0", "nud", "permanent"); err != nil {
		t.Fatalf("gateway neighbour: %v %s", err, out)
	}
	spoofs := []netip.Addr{c.Addr, netip.MustParseAddr("10.244.250.250"), c.Addr6, netip.MustParseAddr("fd00:244:ffff::dead")}
	for _, s := range spoofs {
		bits := 32
		if s.Is6() {
			bits = 128
		}
		if out, err := lab.Run(a.NS, "ip", "addr", "add", netip.PrefixFrom(s, bits).String(), "dev", "eth0", "nodad"); err != nil {
			t.Fatalf("spoofed address %s on a's eth0: %v %s", s, err, out)
		}
	}
	var before float64
	if filter {
		before = filterMetric(t, n1, `brindle_filter_drops_total{reason="spoofed"}`)
	}
	leaked := map[string]int{}
	for _, rp := range rps {
		for _, key := range []string{"all", a.HostVeth} {
			if out, err := lab.Run(n1.NS, "sh", "-c", fmt.Sprintf("echo %s > /proc/sys/net/ipv4/conf/%s/rp_filter", rp, key)); err != nil {
				t.Fatalf("rp_filter: %v %s", err, out)
			}
		}
		cap.Reset()
		for _, dst := range []netip.Addr{b.Addr, b.Addr6} {
			if err := filterSendUDP(a.NS, map[bool]netip.Addr{false: a.Addr, true: a.Addr6}[dst.Is6()], dst, 9999, 5); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range spoofs {
			dst := b.Addr
			if s.Is6() {
				dst = b.Addr6
			}
			if err := filterSendUDP(a.NS, s, dst, 9999, 5); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond)
		for _, genuine := range []netip.Addr{a.Addr, a.Addr6} {
			if n := filterCaptured(cap, genuine); n < 5 {
				t.Errorf("filter=%v rp_filter=%s: %d of 5 genuine packets from %s seen on the underlay\n%v", filter, rp, n, genuine, cap.Lines())
			}
		}
		for _, s := range spoofs {
			leaked[rp] += filterCaptured(cap, s)
		}
	}
	if !filter {
		return leaked, 0
	}
	if err := n1.Ready(ctx); err != nil {
		t.Errorf("/readyz with rp_filter loose and anti-spoofing in force: %v", err)
	}
	return leaked, filterMetric(t, n1, `brindle_filter_drops_total{reason="spoofed"}`) - before
}
