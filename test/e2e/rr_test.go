package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// TestBrindleRouteReflectors: the mesh off and two of brindle's own nodes
// as route reflectors (one by its flag, one by its label, same cluster ID):
// every other node has exactly one session per reflector, every pod
// reaches every pod, and with one reflector stopped the pods on the other
// nodes keep reaching each other without losing a ping, their routes kept.
func TestBrindleRouteReflectors(t *testing.T) {
	mesh := false
	l := newLab(t, lab.Config{Nodes: 5, BGP: &conf.BGPConfiguration{Spec: conf.BGPSpec{NodeToNodeMesh: &mesh}},
		NodeArgs: func(i int) []string {
			switch i {
			case 0:
				return []string{"--route-reflector-cluster-id", "224.0.0.1"}
			case 1:
				return []string{"--labels", conf.RouteReflectorLabel + "=224.0.0.1"}
			}
			return nil
		}})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	rr1, rr2 := l.Nodes[0], l.Nodes[1]
	for i, n := range l.Nodes {
		if _, err := n.AddPod(ctx, fmt.Sprintf("p%d", i+1)); err != nil {
			t.Fatal(err)
		}
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range st.Peers {
			got = append(got, p.Name+"/"+p.Kind)
		}
		slices.Sort(got)
		want := []string{"node-1/rr", "node-2/rr"}
		switch n {
		case rr1:
			want = []string{"node-2/rr", "node-3/rr-client", "node-4/rr-client", "node-5/rr-client"}
		case rr2:
			want = []string{"node-1/rr", "node-3/rr-client", "node-4/rr-client", "node-5/rr-client"}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s sessions %v, want %v", n.Name, got, want)
		}
	}
	ps := pods(l)
	reachAll(t, ps, ps, 15*time.Second)

	// Pings between pods of the nodes that stay, while a reflector stops.
	var survivors []endpoint
	for _, n := range l.Nodes[1:] {
		for _, p := range n.Pods() {
			survivors = append(survivors, endpoint{n.Name + "/" + p.Name, p.NS, p.Addr})
		}
	}
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]testenv.PingStats{}
	for i, from := range survivors {
		to := survivors[(i+1)%len(survivors)]
		wg.Go(func() {
			st, err := testenv.PingLoop(pctx, from.ns, to.addr, 20*time.Millisecond)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			results[from.name+" -> "+to.name] = st
			mu.Unlock()
		})
	}
	time.Sleep(500 * time.Millisecond)
	before := map[string][]string{}
	for _, n := range l.Nodes[2:] {
		before[n.Name], _ = n.Routes()
	}
	if err := rr1.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s stopped", rr1.Name)
	// Longer than the hold time (9 s): the sessions with rr1 are gone.
	time.Sleep(12 * time.Second)
	for _, n := range l.Nodes[2:] {
		after, err := n.Routes()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range before[n.Name] {
			if !slices.Contains(after, r) {
				t.Errorf("%s lost route %s with %s stopped (has %v)", n.Name, r, rr1.Name, after)
			}
		}
	}
	stop()
	wg.Wait()
	for pair, st := range results {
		t.Logf("%s: %d sent, %d received", pair, st.Sent, st.Received)
		if st.Sent < 100 || len(st.Lost) > 0 {
			t.Errorf("%s: lost %d of %d pings with a reflector stopped (seq %v)", pair, len(st.Lost), st.Sent, st.Lost)
		}
	}
}
