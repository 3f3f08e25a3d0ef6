package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/test/lab"
)

// TestMeshReachability: 3 nodes in a full mesh, 2 pods each: every pod
// reaches every other pod, and every node reaches every remote pod.
func TestMeshReachability(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 3})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		for i := range 2 {
			if _, err := n.AddPod(ctx, fmt.Sprintf("%s-pod-%d", n.Name, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ps := pods(l)
	reachAll(t, ps, ps, 15*time.Second)
	var nodes []endpoint
	for _, n := range l.Nodes {
		nodes = append(nodes, endpoint{n.Name, n.NS, n.Addr.Addr()})
	}
	reachAll(t, nodes, ps, 15*time.Second)
	logStatus(t, l)

	// The operator's view: brindlectl on node-1.
	out, err := l.Nodes[0].Ctl("node", "status")
	if err != nil || strings.Count(out, "Established") != 2 || !strings.Contains(out, "(ready)") {
		t.Errorf("brindlectl node status: err %v, want 2 Established sessions and ready:\n%s", err, out)
	}
	t.Logf("brindlectl node status on node-1:\n%s", out)
	out, err = l.Nodes[0].Ctl("node", "list")
	if err != nil || strings.Count(out, "198.19.1.") != 3 || strings.Count(out, "/26") != 3 {
		t.Errorf("brindlectl node list: err %v, want 3 nodes with one /26 each:\n%s", err, out)
	}
	t.Logf("brindlectl node list:\n%s", out)
}

func logStatus(t *testing.T, l *lab.Lab) {
	for _, n := range l.Nodes {
		st, err := n.Status(t.Context())
		if err != nil {
			t.Logf("%s status: %v", n.Name, err)
			continue
		}
		t.Logf("%s: exports %v blocks %v routes %v errors %v", n.Name, st.Exports, st.Blocks, st.Routes, st.Errors)
	}
}

// TestDualStackAcrossNodes: with an IPv6 pool, blocks of both families
// go over the same (IPv4) sessions, and pods reach each other over IPv6
// across nodes as over IPv4.
func TestDualStackAcrossNodes(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 3, IPv6: true})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	var v4, v6 []endpoint
	for _, n := range l.Nodes {
		p, err := n.AddPod(ctx, n.Name+"-ds")
		if err != nil {
			t.Fatal(err)
		}
		if !p.Addr6.IsValid() {
			t.Fatalf("%s got no IPv6 address", p.Name)
		}
		v4 = append(v4, endpoint{p.Name, p.NS, p.Addr})
		v6 = append(v6, endpoint{p.Name, p.NS, p.Addr6})
	}
	reachAll(t, v4, v4, 15*time.Second)
	reachAll(t, v6, v6, 15*time.Second)
	st, _ := l.Nodes[0].Status(ctx)
	t.Logf("node-1 routes: %v", st.Routes)
	if len(st.Routes) != 6 {
		t.Errorf("node-1 routes %v; want a blackhole and two remote blocks per family", st.Routes)
	}
}
