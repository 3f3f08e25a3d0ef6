package e2e

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// twoSubnets is the lab: node-1 and node-2 on 198.19.1.0/24,
// node-3 on 198.19.2.0/24 behind the underlay router, one pod per node
// and a second one on node-1.
func twoSubnets(t *testing.T, pool conf.IPPool) (*lab.Lab, []*lab.Pod) {
	t.Helper()
	l := newLab(t, lab.Config{Nodes: 3, Subnets: 2, SecondSubnetNodes: 1, Pools: []conf.IPPool{pool}})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	var ps []*lab.Pod
	for _, name := range []string{"a1", "a2", "b", "c"} {
		n := l.Nodes[map[byte]int{'a': 0, 'b': 1, 'c': 2}[name[0]]]
		p, err := n.AddPod(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return l, ps
}

func endpoints(ps []*lab.Pod) []endpoint {
	var out []endpoint
	for _, p := range ps {
		out = append(out, endpoint{p.Node.Name + "/" + p.Name, p.NS, p.Addr})
	}
	return out
}

func nodeEndpoints(l *lab.Lab) []endpoint {
	var out []endpoint
	for _, n := range l.Nodes {
		out = append(out, endpoint{n.Name, n.NS, n.Addr.Addr()})
	}
	return out
}

// nodeRecord reads a node's record from etcd.
func nodeRecord(t *testing.T, l *lab.Lab, name string) conf.Node {
	t.Helper()
	res, err := l.Etcd.Get(t.Context(), "/brindle/v1/nodes/"+name)
	if err != nil || len(res.Kvs) != 1 {
		t.Fatalf("node %s record: %v", name, err)
	}
	n, err := conf.UnmarshalNode(res.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitTunnels waits until every node published a tunnel address and a VTEP MAC.
func waitTunnels(t *testing.T, l *lab.Lab) map[string]conf.Node {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := map[string]conf.Node{}
		for _, n := range l.Nodes {
			if r := nodeRecord(t, l, n.Name); r.TunnelIPv4 != "" && r.VXLANMAC != "" {
				out[n.Name] = r
			}
		}
		if len(out) == len(l.Nodes) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every node published a tunnel address: %v", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// captured pings from -> to while capturing on the underlay, and returns
// what the wire saw: the VXLAN packets between the two nodes, and the
// pings that crossed in the clear.
func captured(t *testing.T, c *lab.Capture, from *lab.Pod, to netip.Addr) (vxlan, clear int) {
	t.Helper()
	c.Reset()
	if err := dfPing(from, to, 1000); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, line := range c.Lines() {
		switch {
		case strings.Contains(line, ".4789: VXLAN"):
			vxlan++
		case !strings.HasPrefix(line, "IP ") && strings.Contains(line, " IP "+from.Addr.String()+" > "+to.String()+": ICMP echo request"):
			// An outer packet (a line of its own, not the inner packet
			// tcpdump prints under a VXLAN header).
			clear++
		}
	}
	return vxlan, clear
}

func requireTcpdump(t *testing.T) {
	if !lab.TcpdumpAvailable() {
		t.Skip("tcpdump is not installed (scripts/install-deps.sh installs it): cannot show what crosses the underlay")
	}
}

// TestVXLANCrossSubnet: with vxlanMode CrossSubnet, node-1 and node-2
// (one subnet) talk natively and node-3 (the other subnet) through
// VXLAN, as a capture on the underlay shows; every pod reaches every
// other; a node reaches remote pods from its tunnel address; pods get the
// host MTU less 50, and full-size DF pings and 1 MB TCP transfers work.
func TestVXLANCrossSubnet(t *testing.T) {
	requireTcpdump(t)
	l, ps := twoSubnets(t, encapPool(conf.EncapNever, conf.EncapCrossSubnet, false))
	recs := waitTunnels(t, l)
	reachAll(t, endpoints(ps), endpoints(ps), 10*time.Second)
	reachAll(t, nodeEndpoints(l), endpoints(ps), 15*time.Second)

	a1, b, c := ps[0], ps[2], ps[3]
	cap, err := l.Capture(t.Context(), "udp port 4789 or icmp")
	if err != nil {
		t.Fatal(err)
	}
	defer cap.Stop()
	if v, cl := captured(t, cap, a1, b.Addr); v != 0 || cl == 0 {
		t.Errorf("node-1 -> node-2 (same subnet): %d VXLAN packets, %d clear; want native:\n%s", v, cl, strings.Join(cap.Lines(), "\n"))
	}
	for _, pair := range [][2]*lab.Pod{{a1, c}, {b, c}, {c, a1}} {
		if v, cl := captured(t, cap, pair[0], pair[1].Addr); v == 0 || cl != 0 {
			t.Errorf("%s -> %s (across subnets): %d VXLAN packets, %d clear; want VXLAN only:\n%s", pair[0].Node.Name, pair[1].Node.Name, v, cl, strings.Join(cap.Lines(), "\n"))
		}
	}
	t.Logf("underlay, a1 -> c:\n%s", strings.Join(cap.Lines(), "\n"))

	// The node's own traffic to a remote pod leaves from its tunnel
	// address (a pod address, which the remote node routes back).
	n1 := l.Nodes[0]
	if out := onNode(n1, "ip", "route", "get", c.Addr.String()); !strings.Contains(out, "src "+recs["node-1"].TunnelIPv4) {
		t.Errorf("node-1 to %s does not use its tunnel address %s:\n%s", c.Addr, recs["node-1"].TunnelIPv4, out)
	}
	if _, err := tcpTransfer(n1.NS, c.NS, c.Addr, 1<<20); err != nil {
		t.Errorf("node-1 -> pod on node-3, 1 MB TCP: %v", err)
	}

	// The kernel objects on node-1: the device, and an FDB entry and a
	// neighbour for node-3 only (node-2 is native).
	link := onNode(n1, "ip", "-d", "link", "show", "vxlan.brindle")
	fdb := onNode(n1, "bridge", "fdb", "show", "dev", "vxlan.brindle")
	neigh := onNode(n1, "ip", "neigh", "show", "dev", "vxlan.brindle")
	t.Logf("node-1:\n%s%s%s", link, fdb, neigh)
	for _, want := range []string{"vxlan id 4096", "local 198.19.1.11", "dstport 4789", "nolearning", "mtu 1450", recs["node-1"].VXLANMAC} {
		if !strings.Contains(link, want) {
			t.Errorf("vxlan.brindle on node-1 lacks %q", want)
		}
	}
	if !strings.Contains(fdb, recs["node-3"].VXLANMAC+" dst 198.19.2.13") || strings.Contains(fdb, recs["node-2"].VXLANMAC) {
		t.Errorf("node-1 FDB: want node-3's VTEP only")
	}
	if !strings.Contains(neigh, recs["node-3"].TunnelIPv4+" lladdr "+recs["node-3"].VXLANMAC+" PERMANENT") || strings.Contains(neigh, recs["node-2"].TunnelIPv4+" ") {
		t.Errorf("node-1 neighbours: want node-3's tunnel address only")
	}

	for _, p := range ps {
		if m := podMTU(t, p); m != 1450 {
			t.Errorf("%s MTU %d, want 1450 (1500 less VXLAN's 50)", p.Name, m)
		}
	}
	fullSize(t, ps)
}

// TestVXLANAlways: every cross-node packet is encapsulated, in one subnet
// as across subnets.
func TestVXLANAlways(t *testing.T) {
	requireTcpdump(t)
	l, ps := twoSubnets(t, encapPool(conf.EncapNever, conf.EncapAlways, false))
	waitTunnels(t, l)
	reachAll(t, endpoints(ps), endpoints(ps), 10*time.Second)
	reachAll(t, nodeEndpoints(l), endpoints(ps), 15*time.Second)
	cap, err := l.Capture(t.Context(), "udp port 4789 or icmp")
	if err != nil {
		t.Fatal(err)
	}
	defer cap.Stop()
	a1, b, c := ps[0], ps[2], ps[3]
	for _, pair := range [][2]*lab.Pod{{a1, b}, {b, a1}, {a1, c}, {c, b}} {
		if v, cl := captured(t, cap, pair[0], pair[1].Addr); v == 0 || cl != 0 {
			t.Errorf("%s -> %s: %d VXLAN packets, %d clear; want VXLAN only:\n%s", pair[0].Node.Name, pair[1].Node.Name, v, cl, strings.Join(cap.Lines(), "\n"))
		}
	}
	// Same node: no encapsulation at all.
	if v, _ := captured(t, cap, a1, ps[1].Addr); v != 0 {
		t.Errorf("pods on one node: %d VXLAN packets on the underlay", v)
	}
	fullSize(t, ps)
}

// TestNativeFullSize: without encapsulation pods get the full host MTU,
// and full-size DF pings and TCP transfers work within a subnet.
func TestNativeFullSize(t *testing.T) {
	l, ps := twoSubnets(t, encapPool(conf.EncapNever, conf.EncapNever, false))
	same := ps[:3] // node-3 is across a router that knows no pod routes
	reachAll(t, endpoints(same), endpoints(same), 10*time.Second)
	for _, p := range ps {
		if m := podMTU(t, p); m != 1500 {
			t.Errorf("%s MTU %d, want 1500", p.Name, m)
		}
	}
	for _, n := range l.Nodes {
		if hasLink(n, "vxlan.brindle") {
			t.Errorf("%s has vxlan.brindle with no pool asking for it", n.Name)
		}
	}
	fullSize(t, same)
}

// TestIPIP would run the CrossSubnet scenario over IPIP; the rendering and
// the kernel objects are unit-tested in bgpd.
func TestIPIP(t *testing.T) {
	testenv.RequireRoot(t)
	if err := ipipAvailable(); err != nil {
		t.Skipf("this kernel has no ipip module (%v): IPIP is covered by the unit tests "+
			"bgpd.TestRenderPerMode, TestIPIPRoutesAsKernelObjects and TestTunnelsIPIPTranscript only", err)
	}
	l, ps := twoSubnets(t, encapPool(conf.EncapCrossSubnet, conf.EncapNever, false))
	waitTunnels(t, l)
	reachAll(t, endpoints(ps), endpoints(ps), 10*time.Second)
	for _, p := range ps {
		if m := podMTU(t, p); m != 1480 {
			t.Errorf("%s MTU %d, want 1480", p.Name, m)
		}
	}
	fullSize(t, ps)
}

// TestModeSwitchAtRunTime: a pool goes Never -> VXLAN Always ->
// CrossSubnet -> Never with pings running; after each switch settles
// every pod pair the mode can carry is reachable, tunnel devices come and
// go, and neighbour and FDB entries a mode no longer needs are removed.
func TestModeSwitchAtRunTime(t *testing.T) {
	l, ps := twoSubnets(t, encapPool(conf.EncapNever, conf.EncapNever, false))
	a1, b := ps[0], ps[2]
	sameSubnet := endpoints(ps[:3])
	reachAll(t, sameSubnet, sameSubnet, 10*time.Second)

	// A ping a1 -> b runs through every switch.
	pctx, stopPing := context.WithCancel(t.Context())
	type result struct {
		sent, recv int
		err        error
	}
	pinged := make(chan result, 1)
	go func() {
		st, err := testenv.PingLoop(pctx, a1.NS, b.Addr, 20*time.Millisecond)
		pinged <- result{st.Sent, st.Received, err}
	}()

	set := func(vx conf.EncapMode) {
		t.Helper()
		if err := l.PutPool(t.Context(), encapPool(conf.EncapNever, vx, false)); err != nil {
			t.Fatal(err)
		}
		t.Logf("vxlanMode %s", vx)
	}
	// settle lets the running ping see each mode for a while.
	settle := func() { time.Sleep(time.Second) }
	waitLink := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			ok := true
			for _, n := range l.Nodes {
				ok = ok && hasLink(n, "vxlan.brindle") == want
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("vxlan.brindle present should be %v on every node", want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	set(conf.EncapAlways)
	waitLink(true)
	recs := waitTunnels(t, l)
	reachAll(t, endpoints(ps), endpoints(ps), 10*time.Second)
	n1 := l.Nodes[0]
	if fdb := onNode(n1, "bridge", "fdb", "show", "dev", "vxlan.brindle"); !strings.Contains(fdb, recs["node-2"].VXLANMAC) {
		t.Errorf("Always: node-1 has no FDB entry for node-2:\n%s", fdb)
	}

	settle()

	set(conf.EncapCrossSubnet)
	waitRoutes(t, n1, 10*time.Second, "node-2's block native again", func(rs []string) bool {
		return slices.ContainsFunc(rs, func(r string) bool { return strings.HasSuffix(r, "via 198.19.1.12") })
	})
	reachAll(t, endpoints(ps), endpoints(ps), 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		fdb := onNode(n1, "bridge", "fdb", "show", "dev", "vxlan.brindle")
		neigh := onNode(n1, "ip", "neigh", "show", "dev", "vxlan.brindle")
		if !strings.Contains(fdb, recs["node-2"].VXLANMAC) && !strings.Contains(neigh, recs["node-2"].TunnelIPv4+" ") &&
			strings.Contains(fdb, recs["node-3"].VXLANMAC) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("CrossSubnet: node-1 keeps stale entries for node-2 (or lost node-3's):\n%s%s", fdb, neigh)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	settle()

	set(conf.EncapNever)
	waitLink(false)
	reachAll(t, sameSubnet, sameSubnet, 10*time.Second)
	settle()
	if r := nodeRecord(t, l, "node-1"); r.TunnelIPv4 != "" {
		t.Errorf("node-1 still publishes tunnel address %s with no pool encapsulating", r.TunnelIPv4)
	}
	// node-3 is unreachable natively in this lab (the router knows no pod
	// routes); back to CrossSubnet, it is reachable again.
	set(conf.EncapCrossSubnet)
	waitLink(true)
	reachAll(t, endpoints(ps), endpoints(ps), 15*time.Second)
	settle()

	stopPing()
	r := <-pinged
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("ping node-1 -> node-2 through four switches: %d sent, %d answered", r.sent, r.recv)
	if r.sent < 100 || r.recv < r.sent*95/100 {
		t.Errorf("ping through the switches: %d of %d answered", r.recv, r.sent)
	}
}
