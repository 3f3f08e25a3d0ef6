package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// The filter table (table inet brindle) on the lab, without Kubernetes:
// from the first packet, across brindled's restart, and after an `nft
// flush ruleset` behind its back.

func needNft(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIP: needs the nft binary (Debian package nftables)")
	}
}

func filterNft(t *testing.T, n *lab.Node, args ...string) (string, error) {
	t.Helper()
	return lab.Run(n.NS, append([]string{"nft"}, args...)...)
}

// TestFilterFirstPacket: ADD returns only once the pod's endpoint is in its
// node's table, so the very first packet passes anti-spoofing; brindled
// stopped, a new pod's ADD waits (bounded) and the pod stays in default deny
// until brindled is back.
func TestFilterFirstPacket(t *testing.T) {
	needNft(t)
	l := newLab(t, lab.Config{Nodes: 1})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	n := l.Nodes[0]
	a, err := n.AddPod(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p, err := n.AddPod(ctx, fmt.Sprintf("p%d", i))
		if err != nil {
			t.Fatal(err)
		}
		// Right after ADD: in the table, and the first echo answered.
		if out, err := filterNft(t, n, "get", "element", "inet", "brindle", "eps4", fmt.Sprintf(`{ "%s" . %s }`, p.HostVeth, p.Addr)); err != nil {
			t.Fatalf("%s not in eps4 when ADD returned: %v %s", p.Name, err, out)
		}
		// One echo, answered (however late, on a loaded machine).
		if err := testenv.PingOne(p.NS, a.Addr, 15*time.Second); err != nil {
			t.Fatalf("first ping from %s right after ADD: %v", p.Name, err)
		}
	}

	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	late, err := n.AddPod(ctx, "late")
	if err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	if waited < 4*time.Second {
		t.Errorf("ADD with brindled down returned after %s, want it to wait for its endpoint (5s)", waited)
	}
	if testenv.Ping(late.NS, a.Addr, 1) == nil || testenv.Ping(a.NS, late.Addr, 1) == nil {
		t.Fatal("a pod whose endpoint is not in the table reaches or is reached")
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Ping(late.NS, a.Addr, 10); err != nil {
		t.Fatalf("after brindled came back: %v", err)
	}
	t.Logf("ADD with brindled down waited %s; the pod was in default deny until brindled returned", waited)
}

// TestFilterRestartAndFlush: the table stays while brindled is stopped
// (spoofing still dropped, traffic flowing), brindled's restart loses no
// packet, and after `nft flush ruleset` the table is back within a second.
func TestFilterRestartAndFlush(t *testing.T) {
	needNft(t)
	l := newLab(t, lab.Config{Nodes: 2})
	ctx := t.Context()
	if err := l.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	n1 := l.Nodes[0]
	a, err := n1.AddPod(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Nodes[1].AddPod(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	pctx, stopPing := context.WithCancel(ctx)
	done := make(chan testenv.PingStats, 1)
	go func() {
		st, _ := testenv.PingLoop(pctx, a.NS, b.Addr, 10*time.Millisecond)
		done <- st
	}()
	time.Sleep(300 * time.Millisecond)
	if err := n1.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := filterNft(t, n1, "list", "table", "inet", "brindle"); err != nil || !strings.Contains(out, "antispoof") {
		t.Fatalf("table gone with brindled stopped: %v\n%s", err, out)
	}
	time.Sleep(500 * time.Millisecond)
	if err := n1.Start(); err != nil {
		t.Fatal(err)
	}
	if err := n1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	stopPing()
	st := <-done
	if len(st.Lost) > 0 || st.Received == 0 {
		t.Errorf("across brindled's restart: %d received, lost %v", st.Received, st.Lost)
	}

	if out, err := filterNft(t, n1, "flush", "ruleset"); err != nil {
		t.Fatalf("nft flush ruleset: %v %s", err, out)
	}
	start := time.Now()
	for {
		out, err := filterNft(t, n1, "list", "table", "inet", "brindle")
		if err == nil && strings.Contains(out, `"`+a.HostVeth+`"`) {
			break
		}
		// A bound against hanging on a loaded machine, not the target
		// (the time is logged; docs/policy.md has the figures).
		if time.Since(start) > 30*time.Second {
			t.Fatalf("table inet brindle not back 30s after nft flush ruleset:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	restored := time.Since(start)
	if err := testenv.Ping(a.NS, b.Addr, 3); err != nil {
		t.Errorf("after the table came back: %v", err)
	}
	t.Logf("restart: %d echoes, none lost; table back %s after nft flush ruleset", st.Received, restored)
}
