package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/test/lab"
)

func needBird(t *testing.T) {
	t.Helper()
	if !lab.BirdAvailable() {
		t.Skip("SKIP: needs BIRD 2 as the independent BGP implementation: apt-get install bird2 (scripts/install-deps.sh)")
	}
}

// waitBird polls a birdc command until its output contains every want.
func waitBird(t *testing.T, b *lab.Bird, cmd string, within time.Duration, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := b.Cmd(cmd)
		ok := err == nil
		for _, w := range want {
			ok = ok && strings.Contains(out, w)
		}
		if ok {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("bird %q: want %q within %s; got:\n%s (err %v)", cmd, want, within, out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHostilePeerRejected: an external peer (BIRD, eBGP with a TCP MD5
// password) announces a default route, another network's prefix, the whole
// pool as one aggregate and a prefix outside every pool. brindled takes
// none of them into its kernel, while BIRD does learn the nodes' blocks.
func TestHostilePeerRejected(t *testing.T) {
	needBird(t)
	l := newLab(t, lab.Config{Nodes: 2})
	ctx := t.Context()
	birdAddr := netip.MustParseAddr("198.19.1.250")
	hostile := []string{"0.0.0.0/0", "192.0.2.0/24", "10.244.0.0/16", "10.245.7.0/26"}
	cfg := `router id {{ROUTER_ID}};
protocol device {}
protocol static hostile {
  ipv4;
`
	for _, p := range hostile {
		cfg += "  route " + p + " blackhole;\n"
	}
	cfg += `}
template bgp node {
  local as 65001;
  password "s3cret-md5";
  ipv4 { import all; export all; };
}
protocol bgp node1 from node { neighbor 198.19.1.11 as 64512; }
protocol bgp node2 from node { neighbor 198.19.1.12 as 64512; }
`
	b, err := l.StartBird("hostile", birdAddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.PutBGPPeer(ctx, conf.BGPPeer{Metadata: conf.ObjectMeta{Name: "hostile"},
		Spec: conf.BGPPeerSpec{PeerIP: birdAddr.String(), ASNumber: 65001, Password: "s3cret-md5"}}); err != nil {
		t.Fatal(err)
	}
	pod, err := l.Nodes[0].AddPod(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := l.Nodes[0].Status(ctx)
	block := st.Blocks[0]
	// Both sessions up (MD5 agreed), and BIRD learned node-1's block.
	waitBird(t, b, "show protocols", 20*time.Second, "node1      BGP        ---        up", "node2      BGP        ---        up")
	waitBird(t, b, "show route "+block, 10*time.Second, block)

	// node-2 received the hostile prefixes: wait until it has, then check
	// none reached the kernel and the cluster's own route still stands.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st2, err := l.Nodes[1].Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got *uint64
		for _, p := range st2.Peers {
			if p.Name == "hostile" && p.State == "Established" {
				got = &p.Received
				if p.Received >= uint64(len(hostile)) {
					t.Logf("node-2 from BIRD: %d received, %d accepted", p.Received, p.Accepted)
				}
			}
		}
		if got != nil && *got >= uint64(len(hostile)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-2 never received the hostile prefixes: %+v", st2.Peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The import policy kept them out of the BGP table itself...
	st2, err := l.Nodes[1].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range st2.Learned {
		for _, h := range hostile {
			if strings.HasPrefix(path, h+" ") {
				t.Errorf("node-2's BGP table took hostile path %s", path)
			}
		}
	}
	for _, p := range st2.Peers {
		if p.Name == "hostile" && p.Accepted != 0 {
			t.Errorf("node-2 accepted %d paths from the hostile peer; learned: %v", p.Accepted, st2.Learned)
		}
	}
	// ... and out of the kernel.
	rs := waitRoutes(t, l.Nodes[1], 5*time.Second, "route to "+block, func(rs []string) bool { return hasPrefix(rs, block) })
	for _, h := range hostile {
		if hasPrefix(rs, h) {
			t.Errorf("node-2 installed hostile prefix %s: %v", h, rs)
		}
	}
	all := allRoutes(t, l.Nodes[1])
	for _, h := range []string{"default via 198.19.1.250", "192.0.2.0/24", "10.244.0.0/16", "10.245.7.0/26"} {
		if strings.Contains(all, h) {
			t.Errorf("node-2's kernel has %q:\n%s", h, all)
		}
	}
	reachAll(t, []endpoint{{"node-2", l.Nodes[1].NS, l.Nodes[1].Addr.Addr()}}, []endpoint{{"web", pod.NS, pod.Addr}}, 15*time.Second)
}

// TestBirdRouteReflector: the mesh off and BIRD as the route reflector of
// all nodes: each node has exactly one session, and pods on all nodes reach
// each other through the routes BIRD reflects.
func TestBirdRouteReflector(t *testing.T) {
	needBird(t)
	mesh := false
	l := newLab(t, lab.Config{Nodes: 3, BGP: &conf.BGPConfiguration{Spec: conf.BGPSpec{NodeToNodeMesh: &mesh}}})
	ctx := t.Context()
	rr := netip.MustParseAddr("198.19.1.251")
	cfg := `router id {{ROUTER_ID}};
protocol device {}
template bgp rrclient {
  local as 64512;
  rr client;
  rr cluster id 1.1.1.1;
  ipv4 { import all; export all; };
}
`
	for i, n := range l.Nodes {
		cfg += fmt.Sprintf("protocol bgp node%d from rrclient { neighbor %s as 64512; }\n", i+1, n.Addr.Addr())
	}
	b, err := l.StartBird("rr", rr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.PutBGPPeer(ctx, conf.BGPPeer{Metadata: conf.ObjectMeta{Name: "bird-rr"},
		Spec: conf.BGPPeerSpec{PeerIP: rr.String(), ASNumber: 64512}}); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		for i := range 2 {
			if _, err := n.AddPod(ctx, fmt.Sprintf("%s-p%d", n.Name, i)); err != nil {
				t.Fatal(err)
			}
		}
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Peers) != 1 || st.Peers[0].Address != rr.String() {
			t.Fatalf("%s peers = %+v; want only the reflector %s", n.Name, st.Peers, rr)
		}
	}
	ps := pods(l)
	reachAll(t, ps, ps, 10*time.Second)
	out, _ := b.Cmd("show route")
	t.Logf("BIRD's table:\n%s", out)
}
