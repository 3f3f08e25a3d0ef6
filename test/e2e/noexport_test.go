package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/test/lab"
)

// TestDisableBGPExportKeptFromOutside: a pool with disableBGPExport is not
// announced to an external peer (BIRD), while the other node still routes
// to its pods; turning the flag on and off at run time withdraws the block
// from BIRD and announces it again, without restarts.
func TestDisableBGPExportKeptFromOutside(t *testing.T) {
	needBird(t)
	l := newLab(t, lab.Config{Nodes: 2})
	ctx := t.Context()
	birdAddr := netip.MustParseAddr("198.19.1.252")
	b, err := l.StartBird("outside", birdAddr, `router id {{ROUTER_ID}};
protocol device {}
template bgp node {
  local as 65002;
  ipv4 { import all; export none; };
}
protocol bgp node1 from node { neighbor 198.19.1.11 as 64512; }
protocol bgp node2 from node { neighbor 198.19.1.12 as 64512; }
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.PutBGPPeer(ctx, conf.BGPPeer{Metadata: conf.ObjectMeta{Name: "outside"},
		Spec: conf.BGPPeerSpec{PeerIP: birdAddr.String(), ASNumber: 65002}}); err != nil {
		t.Fatal(err)
	}
	pod, err := l.Nodes[0].AddPod(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := l.Nodes[0].Status(ctx)
	block := st.Blocks[0]
	waitBird(t, b, "show route "+block, 20*time.Second, block)

	setExport := func(disable bool) {
		t.Helper()
		p := lab.DefaultPool()
		p.Spec.DisableBGPExport = disable
		if err := l.PutPool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	setExport(true)
	waitNoBirdRoute(t, b, block, 30*time.Second)
	// Inside the cluster nothing changed: node-2 routes to the pod.
	waitRoutes(t, l.Nodes[1], 10*time.Second, "route to "+block, func(rs []string) bool { return hasPrefix(rs, block) })
	reachAll(t, []endpoint{{"node-2", l.Nodes[1].NS, l.Nodes[1].Addr.Addr()}}, []endpoint{{"web", pod.NS, pod.Addr}}, 15*time.Second)
	// And it stays away (the sessions came back without it).
	waitBird(t, b, "show protocols", 30*time.Second, "node1      BGP        ---        up", "node2      BGP        ---        up")
	time.Sleep(time.Second)
	if out, _ := b.Cmd("show route " + block); strings.Contains(out, block) {
		t.Fatalf("BIRD learned the no-export block again:\n%s", out)
	}

	setExport(false)
	waitBird(t, b, "show route "+block, 30*time.Second, block)
}

func waitNoBirdRoute(t *testing.T, b *lab.Bird, prefix string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := b.Cmd("show route " + prefix)
		// birdc exits non-zero for "Network not found".
		if strings.Contains(out, "Network not found") || err == nil && !strings.Contains(out, prefix) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("BIRD still has %s after %s:\n%s", prefix, within, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
