package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/test/lab"
)

// TestNATOutgoing: with natOutgoing, a pod reaches a host outside the
// cluster (which has no route to the pods) and that host sees the node's
// address; between pods the pod's own address is kept. The nftables
// table is not rewritten when nothing changed, and is removed when the
// pool stops asking for NAT, after which the outside host cannot answer.
func TestNATOutgoing(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 2, Pools: []conf.IPPool{encapPool(conf.EncapNever, conf.EncapNever, true)}})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	out, err := l.AddOutside()
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.Nodes[0].AddPod(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Nodes[1].AddPod(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	reachAll(t, endpoints([]*lab.Pod{a, b}), endpoints([]*lab.Pod{a, b}), 10*time.Second)
	n1 := l.Nodes[0]

	var src = func() string {
		s, err := tcpTransfer(a.NS, out.NS, out.Addr, 1<<20)
		if err != nil {
			return "error: " + err.Error()
		}
		return s.String()
	}
	if got := src(); got != n1.Addr.Addr().String() {
		t.Errorf("outside host saw pod traffic from %s, want node-1's %s", got, n1.Addr.Addr())
	}
	if s, err := tcpTransfer(a.NS, b.NS, b.Addr, 1<<20); err != nil || s != a.Addr {
		t.Errorf("pod to pod: the other pod saw %s (err %v), want the pod's own %s", s, err, a.Addr)
	}

	table := onNode(n1, "nft", "-a", "list", "table", "ip", "brindle")
	t.Logf("node-1:\n%s", table)
	for _, want := range []string{"type nat hook postrouting priority srcnat", "ip daddr 10.244.0.0/16 return", "ip saddr 10.244.0.0/16 masquerade"} {
		if !strings.Contains(table, want) {
			t.Errorf("table ip brindle lacks %q", want)
		}
	}
	// Idempotent: re-storing the pool (a config change event) rewrites nothing.
	if err := l.PutPool(ctx, encapPool(conf.EncapNever, conf.EncapNever, true)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if again := onNode(n1, "nft", "-a", "list", "table", "ip", "brindle"); again != table {
		t.Errorf("table rewritten with nothing changed:\n%s", again)
	}

	// NAT off: the table goes, and the outside host cannot answer pods.
	if err := l.PutPool(ctx, encapPool(conf.EncapNever, conf.EncapNever, false)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := lab.Run(n1.NS, "nft", "list", "table", "ip", "brindle"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("table ip brindle still there with no pool asking for NAT")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := src(); !strings.HasPrefix(got, "error") {
		t.Errorf("without NAT the outside host still answered (saw %s)", got)
	}
}
