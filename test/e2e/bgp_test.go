package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/test/lab"
)

// waitRoutes polls a node's brindle routes until ok accepts them.
func waitRoutes(t *testing.T, n *lab.Node, within time.Duration, what string, ok func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rs, err := n.Routes()
		if err == nil && ok(rs) {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not reached within %s; routes: %v (err %v)", n.Name, what, within, rs, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasPrefix(rs []string, p string) bool {
	return slices.ContainsFunc(rs, func(r string) bool { return strings.HasPrefix(r, p+" ") || r == p })
}

// TestNewBlockReachable: with 4-address blocks, more pods on a node make it
// claim new blocks, which the other nodes learn and route to at once.
func TestNewBlockReachable(t *testing.T) {
	pool := lab.DefaultPool()
	pool.Spec.BlockSize = 30
	l := newLab(t, lab.Config{Nodes: 3, Pools: []conf.IPPool{pool}})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		if _, err := n.AddPod(ctx, n.Name+"-a"); err != nil {
			t.Fatal(err)
		}
	}
	// Six more on node-1: at least two more blocks.
	for i := range 6 {
		if _, err := l.Nodes[0].AddPod(ctx, fmt.Sprintf("node-1-more-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := l.Nodes[0].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Blocks) < 2 {
		t.Fatalf("node-1 has blocks %v; want at least 2 with 7 pods in /30 blocks", st.Blocks)
	}
	for _, b := range st.Blocks {
		for _, other := range l.Nodes[1:] {
			waitRoutes(t, other, 5*time.Second, "route to "+b, func(rs []string) bool { return hasPrefix(rs, b) })
		}
	}
	ps := pods(l)
	reachAll(t, ps, ps, 15*time.Second)
}

// TestNodeRemovalWithdraws: deleting a node's record makes the others drop
// the session and the node's routes; when it registers again they peer
// with it again.
func TestNodeRemovalWithdraws(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 3})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	gone := l.Nodes[2]
	if _, err := gone.AddPod(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}
	st, err := gone.Status(ctx)
	if err != nil || len(st.Blocks) != 1 {
		t.Fatalf("status of %s: %+v, %v", gone.Name, st, err)
	}
	block := st.Blocks[0]
	for _, n := range l.Nodes[:2] {
		waitRoutes(t, n, 5*time.Second, "route to "+block, func(rs []string) bool { return hasPrefix(rs, block) })
	}
	if err := gone.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Etcd.Delete(ctx, ipam.Prefix+"nodes/"+gone.Name); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes[:2] {
		waitRoutes(t, n, 5*time.Second, "withdrawal of "+block, func(rs []string) bool { return !hasPrefix(rs, block) })
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.Name == gone.Name {
				t.Errorf("%s still has a session with %s: %+v", n.Name, gone.Name, p)
			}
		}
	}
	// The node joins again: it registers, the others peer with it without a
	// restart, and its block is routed again.
	if err := gone.Start(); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes[:2] {
		waitRoutes(t, n, 15*time.Second, "route to "+block+" after rejoin", func(rs []string) bool { return hasPrefix(rs, block) })
	}
}

// TestRestartDuringPing: restarting brindled on both ends of a ping loses
// not one packet (graceful restart keeps the routes on the peers, and the
// restarted daemon keeps its kernel routes until it has relearned them).
func TestRestartDuringPing(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 3})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	a, err := l.Nodes[0].AddPod(ctx, "pinger")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Nodes[1].AddPod(ctx, "target")
	if err != nil {
		t.Fatal(err)
	}
	reachAll(t, []endpoint{{"pinger", a.NS, a.Addr}}, []endpoint{{"target", b.NS, b.Addr}}, 15*time.Second)

	pctx, stop := context.WithCancel(ctx)
	res := make(chan testenv.PingStats, 1)
	go func() {
		st, err := testenv.PingLoop(pctx, a.NS, b.Addr, 10*time.Millisecond)
		if err != nil {
			t.Error(err)
		}
		res <- st
	}()
	time.Sleep(300 * time.Millisecond)
	for _, n := range []*lab.Node{l.Nodes[1], l.Nodes[0]} {
		start := time.Now()
		if err := n.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s restarted and ready in %s", n.Name, time.Since(start).Round(time.Millisecond))
		time.Sleep(300 * time.Millisecond)
	}
	stop()
	st := <-res
	t.Logf("ping across two restarts: %d sent, %d received", st.Sent, st.Received)
	if st.Sent < 50 || len(st.Lost) > 0 {
		t.Fatalf("lost %d of %d pings (seq %v)", len(st.Lost), st.Sent, st.Lost)
	}
}

// allRoutes is `ip route show` of a node.
func allRoutes(t *testing.T, n *lab.Node) string {
	t.Helper()
	out, err := lab.Run(n.NS, "ip", "route", "show")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRouteSyncMendsDrift: a brindle route deleted by hand comes back at
// once; a route of another protocol in the same range is never touched;
// /metrics shows the sessions and routes.
func TestRouteSyncMendsDrift(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 2})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Nodes[1].AddPod(ctx, "far"); err != nil {
		t.Fatal(err)
	}
	st, _ := l.Nodes[1].Status(ctx)
	block := st.Blocks[0]
	n := l.Nodes[0]
	waitRoutes(t, n, 5*time.Second, "route to "+block, func(rs []string) bool { return hasPrefix(rs, block) })
	run := func(args ...string) string {
		out, err := lab.Run(n.NS, args...)
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return out
	}
	// Someone else's route, of protocol static, inside the pool.
	run("ip", "route", "add", "10.244.250.0/24", "via", "198.19.1.254", "proto", "static")
	start := time.Now()
	run("ip", "route", "del", block)
	waitRoutes(t, n, 2*time.Second, "route to "+block+" restored", func(rs []string) bool { return hasPrefix(rs, block) })
	t.Logf("route deleted by hand restored in %s", time.Since(start).Round(time.Millisecond))
	// A resync (forced by another change) leaves the foreign route alone.
	if _, err := l.Nodes[1].AddPod(ctx, "far2"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if out := run("ip", "route", "show", "10.244.250.0/24"); !strings.Contains(out, "proto static") {
		t.Errorf("foreign route gone or changed: %q", out)
	}

	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+lab.HealthAddr+"/metrics", nil)
	res, err := n.HTTP().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, want := range []string{`brindle_bgp_peers{state="Established"} 1`, "brindle_routes_installed 1", "brindle_blocks 0", "brindle_route_sync_duration_seconds_count"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
