package faults

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

func needBird(t *testing.T) {
	t.Helper()
	if !lab.BirdAvailable() {
		t.Skip("SKIP: needs BIRD 2 as the hostile BGP peer: apt-get install bird2 (scripts/install-deps.sh)")
	}
}

// birdStatic is a BIRD config announcing routes (one "route ...;" line
// each, already formatted) to every node over eBGP from AS 65001, logging
// everything to logFile (what BIRD saw, e.g. the notifications it got,
// stays there when its status has moved on).
func birdStatic(l *lab.Lab, routes []string, logFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log %q all;\n", logFile)
	b.WriteString("router id {{ROUTER_ID}};\nprotocol device {}\nprotocol static hostile {\n  ipv4;\n")
	for _, r := range routes {
		b.WriteString("  " + r + "\n")
	}
	b.WriteString("}\ntemplate bgp node {\n  local as 65001;\n  error wait time 1, 2;\n  error forget time 1;\n  ipv4 { import all; export all; };\n}\n")
	for i, n := range l.Nodes {
		fmt.Fprintf(&b, "protocol bgp node%d from node { neighbor %s as 64512; }\n", i+1, n.Addr.Addr())
	}
	return b.String()
}

// peerStatus is the session of node n with the BGP peer named name.
func peerStatus(n *lab.Node, name string) (bgpd.PeerStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		return bgpd.PeerStatus{}, err
	}
	for _, p := range st.Peers {
		if p.Name == name {
			return p, nil
		}
	}
	return bgpd.PeerStatus{}, fmt.Errorf("%s has no session %q", n.Name, name)
}

// Defect 10 (issue 12): an external peer sending a full table (200,000
// prefixes) is bounded by the peer's maxPrefixes: the session is closed
// (Cease, maximum number of prefixes reached) on every try and tried again
// only after maxPrefixesRestartSeconds, as configured; while it is down
// brindled holds nothing from the peer; its memory stays under one ceiling
// however often the peer tries again. GoBGP (v3.37) reads a session ahead
// of processing it, without backpressure, so during a try it holds more
// than the limit before the close takes effect — how much depends on how
// busy the machine is: that is measured, not bounded by the limit.
//
// The tries are counted from brindled's log (GoBGP's "Peer Up"/"Peer
// Down") and the Cease from BIRD's log, not from polled status: on a
// loaded machine a try can come and go between two polls, and BIRD's
// "last error" is overwritten by the next connection attempt.
func TestMaxPrefixesFromAFullTable(t *testing.T) {
	needBird(t)
	l := newLab(t, lab.Config{Nodes: 1})
	ctx := t.Context()
	n := l.Nodes[0]
	if err := l.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if !lab.TcpdumpAvailable() {
		t.Skip("SKIP: needs tcpdump (Debian package tcpdump, scripts/install-deps.sh) to see the Cease reach the peer on the underlay")
	}
	const flood, wantTries, within = 200000, 3, 4 * time.Minute
	routes := make([]string, 0, flood)
	for i := range flood {
		// 100.64.0.0/10: outside every pool, so policy rejects them all;
		// the limit is about what the session may make brindled hold.
		routes = append(routes, fmt.Sprintf("route 100.%d.%d.%d/32 blackhole;", 64+i>>16, (i>>8)&255, i&255))
	}
	birdAddr := netip.MustParseAddr("198.19.1.250")
	birdLog := filepath.Join(t.TempDir(), "bird-flood.log")
	// Every BGP NOTIFICATION Cease / maximum number of prefixes reached
	// (type 3, code 6, subcode 1) the node sends the peer, on the wire.
	bgp := "tcp[((tcp[12]&0xf0)>>2)"
	cease, err := l.Capture(ctx, fmt.Sprintf("src host %s and dst host %s and tcp port 179 and %s+18]=3 and %s+19]=6 and %s+20]=1",
		n.Addr.Addr(), birdAddr, bgp, bgp, bgp))
	if err != nil {
		t.Fatal(err)
	}
	defer cease.Stop()
	rssBefore, _ := n.RSS()
	b, err := l.StartBird("flood", birdAddr, birdStatic(l, routes, birdLog))
	if err != nil {
		t.Fatal(err)
	}
	peer := conf.BGPPeer{Metadata: conf.ObjectMeta{Name: "flood"}, Spec: conf.BGPPeerSpec{PeerIP: birdAddr.String(), ASNumber: 65001,
		MaxPrefixesRestartSeconds: 8}}
	peer.Default()
	limit := maxPrefixesOf(peer)
	if err := l.PutBGPPeer(ctx, peer); err != nil {
		t.Fatal(err)
	}
	started, sl := time.Now(), newSessionLog(n, birdAddr)
	// Watch until the peer has been closed wantTries times: the most
	// brindled held from it, anything held while the session was down,
	// its RSS a second after the first close and over all the tries.
	var maxReceived, heldWhileDown uint64
	var rssMax, rssFirst int64
	var ups []time.Time
	var downs []sessionEvent
	for {
		evs, err := sl.events()
		if err != nil {
			t.Fatal(err)
		}
		if ups, downs, err = tries(evs); err != nil {
			t.Fatal(err)
		}
		if len(downs) >= wantTries || time.Since(started) > within {
			break
		}
		if p, err := peerStatus(n, "flood"); err == nil {
			maxReceived = max(maxReceived, p.Received)
			if p.State != "Established" && len(downs) > 0 {
				heldWhileDown = max(heldWhileDown, p.Received)
			}
		}
		rss, err := n.RSS()
		if err == nil {
			rssMax = max(rssMax, rss)
			if rssFirst == 0 && len(downs) > 0 && time.Since(downs[0].At) > time.Second { // the queued updates drained
				rssFirst = rss
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A session that came up as the watch ended is closed too: every try
	// ends with the limit (generous wait: the close follows the first
	// 10,000 prefixes; on a loaded machine that can take a while).
	if len(ups) > len(downs) {
		if err := eventually(2*time.Minute, func() error {
			evs, err := sl.events()
			if err != nil {
				return err
			}
			if ups, downs, err = tries(evs); err != nil {
				return err
			}
			if len(ups) > len(downs) {
				return fmt.Errorf("the session established at %s is still up", ups[len(ups)-1].Format(time.TimeOnly))
			}
			return nil
		}); err != nil {
			t.Errorf("not every try of the peer was closed within 2 min: %v", err)
		}
	}
	mib := func(v int64) float64 { return float64(v) / (1 << 20) }
	var gaps []time.Duration
	for i, d := range downs {
		if i+1 < len(ups) {
			gaps = append(gaps, ups[i+1].Sub(d.At))
		}
	}
	t.Logf("limit %d: %d tries, %d closes in %s, down %v between tries; at most %d held from the peer; RSS %.1f MiB before, %.1f after the first close, %.1f at most",
		limit, len(ups), len(downs), time.Since(started).Round(time.Second), roundAll(gaps), maxReceived, mib(rssBefore), mib(rssFirst), mib(rssMax))
	if limit != conf.DefaultMaxPrefixes {
		t.Errorf("default maxPrefixes %d, want %d", limit, conf.DefaultMaxPrefixes)
	}
	if len(downs) < wantTries {
		out, _ := b.Cmd("show protocols all node1")
		t.Errorf("want the peer's session closed %d times within %s, saw %d sessions and %d closes (the lab runs brindled with --log-level debug, which logs GoBGP's Peer Up/Down):\n%s", wantTries, within, len(ups), len(downs), out)
	}
	// Each try was closed with a Cease for the limit (GoBGP's reason in
	// brindled's log), and each Cease reached the peer: seen on the
	// underlay, not in BIRD's log — BIRD, still sending when GoBGP closes
	// with unread data, often gets the kernel's reset first and logs only
	// "Connection reset by peer" (it logged the Cease in 1 to 2 of 3 tries
	// on a loaded machine).
	for i, d := range downs {
		if !strings.Contains(d.Reason, "notification-sent code 6") || !strings.Contains(d.Reason, "maximum number of prefixes") {
			t.Errorf("try %d was not closed with a Cease for the limit: %s", i+1, d.Reason)
		}
	}
	if err := eventually(30*time.Second, func() error {
		if got := len(cease.Lines()); got < len(downs) {
			return fmt.Errorf("%d Cease notifications on the wire for %d closes", got, len(downs))
		}
		return nil
	}); err != nil {
		t.Errorf("not every close reached the peer as a Cease (maximum number of prefixes): %v:\n%s", err, strings.Join(cease.Lines(), "\n"))
	}
	birdSaw := birdLogCount(t, birdLog, "Received: Maximum number of prefixes reached")
	for _, g := range gaps {
		if g < 7*time.Second {
			t.Errorf("the session came back %s after being closed; maxPrefixesRestartSeconds is 8", g)
		}
	}
	if heldWhileDown > 0 {
		t.Errorf("brindled held %d prefixes from the peer while its session was down", heldWhileDown)
	}
	// Without a limit brindled held all 200,000 for good at 186 MiB RSS.
	// With it a try costs what GoBGP read ahead (at most the table), and
	// the tries reuse that memory: one ceiling, however many tries.
	if rssMax-rssBefore > 250<<20 {
		t.Errorf("RSS not bounded: %.1f MiB idle, %.1f after the first close, %.1f at most", mib(rssBefore), mib(rssFirst), mib(rssMax))
	}
	if rs, _ := n.Routes(); len(rs) > 10 {
		t.Errorf("the kernel took routes from the flood: %d brindle routes", len(rs))
	}
	figures(t, "%d prefixes offered, maxPrefixes %d: closed with a Cease on each of %d tries (%d on the wire, BIRD logged %d; down %v between tries), at most %d held before a close took effect, RSS %.1f MiB idle, %.1f after the first close, %.1f at most",
		flood, limit, len(downs), len(cease.Lines()), birdSaw, roundAll(gaps), maxReceived, mib(rssBefore), mib(rssFirst), mib(rssMax))
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Millisecond)
	}
	return out
}

func maxPrefixesOf(p conf.BGPPeer) uint32 {
	if p.Spec.MaxPrefixes == nil {
		return 0
	}
	return *p.Spec.MaxPrefixes
}

// kernelRoutes is every route of a node's main table (any protocol), as
// `ip route` would print its essentials, for before/after comparisons.
func kernelRoutes(t *testing.T, n *lab.Node) []string {
	t.Helper()
	out, err := lab.Run(n.NS, "ip", "-4", "route", "show", "table", "main")
	if err != nil {
		t.Fatal(err)
	}
	var rs []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		rs = append(rs, strings.Join(strings.Fields(l), " "))
	}
	slices.Sort(rs)
	return rs
}

// TestHostilePeers: an external peer (BIRD, eBGP) announces a default
// route, other networks' prefixes, the /32 of a pod running on node-1
// (inside node-1's block, next hop itself), and a flood (5,000 /32s outside
// every pool, 500 inside the pool where no node has a block). Must hold:
// the kernel of every node is what it was plus only what policy allows —
// prefixes outside the pools never; a pool prefix from outside the cluster
// only where no node announces it and not inside the node's own blocks, so
// here the 500 unclaimed pool /32s and nothing else; the victim pod keeps
// its route on node-1 and stays reachable from node-2; the session stays up
// (the flood is under the peer's maxPrefixes).
func TestHostilePeers(t *testing.T) {
	needBird(t)
	l := newLab(t, lab.Config{Nodes: 2})
	ctx := t.Context()
	victim, client := podPair(t, l, "victim", "client", 60*time.Second)
	// Start from the converged mesh: each node routes the other's pod
	// (the other's block may reach it after both are ready).
	before := waitMeshRoutes(t, l, 2*time.Minute)
	routes := []string{
		"route 0.0.0.0/0 blackhole;",
		"route 192.0.2.0/24 blackhole;",
		"route 198.51.100.0/24 blackhole;",
		"route 8.8.8.0/24 blackhole;",
		"route " + victim.Addr.String() + "/32 blackhole;", // a pod of node-1, announced by the peer
	}
	for i := range 5000 {
		routes = append(routes, fmt.Sprintf("route 100.%d.%d.%d/32 blackhole;", 64+i>>16, (i>>8)&255, i&255))
	}
	for i := range 500 {
		routes = append(routes, fmt.Sprintf("route 10.244.%d.%d/32 blackhole;", 250+i/250, i%250+1))
	}
	birdAddr := netip.MustParseAddr("198.19.1.250")
	b, err := l.StartBird("hostile", birdAddr, birdStatic(l, routes, filepath.Join(t.TempDir(), "bird-hostile.log")))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.PutBGPPeer(ctx, conf.BGPPeer{Metadata: conf.ObjectMeta{Name: "hostile"},
		Spec: conf.BGPPeerSpec{PeerIP: birdAddr.String(), ASNumber: 65001}}); err != nil {
		t.Fatal(err)
	}
	// Every node has received the whole announcement (generous waits: on
	// a loaded machine 5,505 routes take a while to arrive and install).
	want := uint64(len(routes))
	for _, n := range l.Nodes {
		if err := eventually(2*time.Minute, func() error {
			p, err := peerStatus(n, "hostile")
			if err != nil {
				return err
			}
			if p.State != "Established" || p.Received < want {
				return fmt.Errorf("%s: session %s, %d of %d received", n.Name, p.State, p.Received, want)
			}
			return nil
		}); err != nil {
			out, _ := b.Cmd("show protocols")
			t.Fatalf("%v\n%s", err, out)
		}
	}
	allowed := map[string]bool{}
	for i := range 500 {
		allowed[fmt.Sprintf("10.244.%d.%d via %s dev eth0 proto 98", 250+i/250, i%250+1, birdAddr)] = true
	}
	var unexpected []string
	if err := eventually(2*time.Minute, func() error {
		unexpected = nil
		for _, n := range l.Nodes {
			after := kernelRoutes(t, n)
			got := 0
			for _, r := range after {
				switch {
				case allowed[r]:
					got++
				case !slices.Contains(before[n.Name], r):
					unexpected = append(unexpected, n.Name+": "+r)
				}
			}
			for _, r := range before[n.Name] {
				if !slices.Contains(after, r) {
					unexpected = append(unexpected, n.Name+": lost "+r)
				}
			}
			if got != len(allowed) {
				return fmt.Errorf("%s: %d of the %d allowed routes", n.Name, got, len(allowed))
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	for i, u := range unexpected {
		if i < 10 {
			t.Errorf("not allowed by policy: %s", u)
		}
	}
	reach := testenv.Ping(client.NS, victim.Addr, 10)
	if reach != nil {
		t.Errorf("the victim pod %s is not reachable from node-2: %v", victim.Addr, reach)
	}
	st, _ := l.Nodes[0].Status(ctx)
	p, _ := peerStatus(l.Nodes[1], "hostile")
	figures(t, "peer announced 0/0, 3 foreign prefixes, a pod's /32, 5,000 /32s outside the pools and 500 unclaimed pool /32s (%d received, %d accepted into node-2's BGP table): kernels changed only by the %d allowed routes, %d other changes; victim pod reachable from node-2: %v; node-1 route conflicts %d; session %s",
		p.Received, p.Accepted, len(allowed), len(unexpected), reach == nil, st.LastSync.Conflicts, p.State)
}
