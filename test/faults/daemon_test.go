package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/test/lab"
)

// established reports an error unless node n has an Established session
// with every other node of l.
func established(l *lab.Lab, n *lab.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		return err
	}
	up := map[string]bool{}
	for _, p := range st.Peers {
		up[p.Address] = p.State == "Established"
	}
	for _, o := range l.Nodes {
		if o != n && !up[o.Addr.Addr().String()] {
			return fmt.Errorf("%s: no established session with %s (%v)", n.Name, o.Name, peersOf(st))
		}
	}
	return nil
}

// aliveAndEstablished is established, failing first if n's brindled has
// exited: for a brindled just restarted.
func aliveAndEstablished(l *lab.Lab, n *lab.Node) error {
	if !n.Alive() {
		return fmt.Errorf("brindled exited")
	}
	return established(l, n)
}

// establishedWithAS is established, with every session to another node
// configured with the cluster AS asn: both ends have applied it (a mesh
// session with a node still on the old AS does not establish), not just
// kept the sessions they had.
func establishedWithAS(l *lab.Lab, n *lab.Node, asn uint32) error {
	if err := established(l, n); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		return err
	}
	for _, p := range st.Peers {
		for _, o := range l.Nodes {
			if o != n && p.Address == o.Addr.Addr().String() && (p.ASN != asn || p.State != "Established") {
				return fmt.Errorf("%s: session with %s on AS %d (%s), want AS %d established", n.Name, o.Name, p.ASN, p.State, asn)
			}
		}
	}
	return nil
}

func peersOf(st *bgpd.Status) []string {
	var out []string
	for _, p := range st.Peers {
		out = append(out, p.Address+"="+p.State)
	}
	return out
}

// Defect 6 (issue 12): a run-time change of the cluster's AS number is
// applied consistently (the speaker restarts in place with the new AS), so
// the sessions come back instead of all breaking at once.
func TestASNumberChangeAtRunTime(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 2})
	ctx := t.Context()
	a, b := podPair(t, l, "a", "b", 30*time.Second)
	cfg := conf.DefaultBGPConfiguration()
	cfg.Spec.ASNumber = 64600
	start := time.Now()
	if err := l.PutBGPConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// Established on the new AS: the sessions of before, still up until a
	// node applies the change, do not count (they made this pass in 0 s).
	for _, n := range l.Nodes {
		if err := eventually(2*time.Minute, func() error { return establishedWithAS(l, n, cfg.Spec.ASNumber) }); err != nil {
			t.Fatalf("after the AS change: %v", err)
		}
	}
	took := time.Since(start)
	if err := eventually(time.Minute, func() error { return testenv.Ping(a.NS, b.Addr, 1) }); err != nil {
		t.Fatalf("pod to pod after the AS change: %v", err)
	}
	figures(t, "AS 64512 -> 64600 at run time: every session Established again after %s", took.Round(100*time.Millisecond))
}

// Defect 9 (issue 12): a brindled restarted while etcd is down comes up
// from its last known state (kept on disk), peers again and keeps its
// routes; when etcd returns it catches up.
func TestBrindledStartsDuringEtcdOutage(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 2})
	ctx := t.Context()
	a, b := podPair(t, l, "a", "b", 30*time.Second)
	time.Sleep(3 * time.Second) // the state on disk catches up (written within 2 s of a change)
	l.StopEtcd()
	n := l.Nodes[0]
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := eventually(30*time.Second, func() error { return aliveAndEstablished(l, n) }); err != nil {
		t.Fatalf("brindled restarted during the outage: %v", err)
	}
	up := time.Since(start)
	if !n.Alive() {
		t.Fatal("brindled exited")
	}
	routes, _ := n.Routes()
	if err := testenv.Ping(a.NS, b.Addr, 3); err != nil {
		t.Fatalf("pod to pod with etcd down after the restart: %v (routes %v)", err, routes)
	}
	if err := l.StartEtcd(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatalf("after etcd returned: %v", err)
	}
	figures(t, "brindled restarted with etcd down: sessions up after %s; ready %s after etcd returned",
		up.Round(100*time.Millisecond), time.Since(back).Round(100*time.Millisecond))
}

// Defect 11 (issue 12): a second host under a node's name (a cloned host)
// is detected at registration: it neither overwrites the node's record nor
// runs BGP as that node, and says why.
func TestDuplicateNodeNameRefused(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 2})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	clone := l.Nodes[1]
	if err := clone.Stop(); err != nil {
		t.Fatal(err)
	}
	clone.ExtraArgs = []string{"--nodename", l.Nodes[0].Name}
	if err := clone.Start(); err != nil {
		t.Fatal(err)
	}
	var why error
	if err := eventually(20*time.Second, func() error {
		why = clone.Ready(ctx)
		if why != nil && strings.Contains(why.Error(), "in use") {
			return nil
		}
		return fmt.Errorf("clone's readiness: %v", why)
	}); err != nil {
		t.Fatal(err)
	}
	res, err := l.Etcd.Get(ctx, ipam.Prefix+"nodes/"+l.Nodes[0].Name)
	if err != nil || len(res.Kvs) != 1 {
		t.Fatalf("node record: %v %v", res, err)
	}
	rec, _ := conf.UnmarshalNode(res.Kvs[0].Value)
	if rec.IPv4Address != l.Nodes[0].Addr.String() {
		t.Fatalf("the clone overwrote %s's record: ipv4Address %s, want %s", l.Nodes[0].Name, rec.IPv4Address, l.Nodes[0].Addr)
	}
	if err := l.Nodes[0].Ready(ctx); err != nil && !strings.Contains(err.Error(), l.Nodes[1].Name) {
		t.Errorf("the real node-1: %v", err)
	}
	reason := ""
	for _, line := range strings.Split(why.Error(), "\n") {
		if strings.Contains(line, "in use") {
			reason = strings.TrimSpace(line)
		}
	}
	figures(t, "clone of %s at %s refused, its record kept (%s): %s", l.Nodes[0].Name, clone.Addr.Addr(), rec.IPv4Address, reason)
}
