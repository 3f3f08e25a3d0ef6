package faults

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// etcdOutage is how long TestEtcdGone keeps etcd down: 3 minutes in the
// full run (make test-faults), BRINDLE_FAULTS_ETCD_OUTAGE (60s in make test,
// for CI time) when set, or the flag.
var etcdOutage = flag.Duration("faults.etcd-outage", outageDefault(), "how long TestEtcdGone keeps etcd down (the full run is 3 minutes)")

func outageDefault() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("BRINDLE_FAULTS_ETCD_OUTAGE")); err == nil && d > 0 {
		return d
	}
	return 3 * time.Minute
}

// TestEtcdGone: etcd stopped for -faults.etcd-outage (3 minutes in the full
// run) under a 3-node lab. Must hold: pods keep full connectivity across
// nodes the whole time (a 100 ms ping between pods on every pair of nodes
// loses nothing); a brindled restarted in that window comes back from its
// last known state and keeps its routes (its pods' pings lose nothing
// either); ADD fails within timeout_seconds with a message naming etcd;
// within 10 s of etcd's return every node is ready again and a new pod is
// reachable from the other nodes.
func TestEtcdGone(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 3})
	ctx := t.Context()
	var pods []*lab.Pod
	for i, n := range l.Nodes {
		p, err := n.AddPod(ctx, fmt.Sprintf("p%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, from := range pods {
		for _, to := range pods {
			if from != to {
				if err := testenv.Ping(from.NS, to.Addr, 5); err != nil {
					t.Fatalf("before the outage, %s -> %s: %v", from.Name, to.Name, err)
				}
			}
		}
	}
	time.Sleep(3 * time.Second) // every node's state on disk is current

	pctx, stopPings := context.WithCancel(ctx)
	type result struct {
		from, to string
		st       testenv.PingStats
		err      error
	}
	results := make(chan result, len(pods)*len(pods))
	var wg sync.WaitGroup
	for _, from := range pods {
		for _, to := range pods {
			if from == to {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := testenv.PingLoop(pctx, from.NS, to.Addr, 100*time.Millisecond)
				results <- result{from.Name, to.Name, st, err}
			}()
		}
	}
	time.Sleep(time.Second)
	l.StopEtcd()
	outageStart := time.Now()

	// ADD fails, within timeout_seconds (the lab's default, 10), naming etcd.
	start := time.Now()
	_, err := l.Nodes[0].AddPod(ctx, "during")
	addTook := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "etcd") {
		t.Errorf("ADD with etcd down: want an error naming etcd, got %v", err)
	}
	if addTook > 13*time.Second {
		t.Errorf("ADD with etcd down took %s; timeout_seconds is 10", addTook)
	}
	// A brindled restarted during the outage.
	restarted := l.Nodes[2]
	time.Sleep(min(*etcdOutage/6, 30*time.Second))
	if err := restarted.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := eventually(30*time.Second, func() error { return aliveAndEstablished(l, restarted) }); err != nil {
		t.Fatalf("brindled restarted during the outage: %v", err)
	}
	restartedUp := time.Since(outageStart)
	if rest := *etcdOutage - time.Since(outageStart); rest > 0 {
		time.Sleep(rest)
	}

	if err := l.StartEtcd(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if err := l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Errorf("not ready within 10 s of etcd's return: %v", err)
	}
	readyAfter := time.Since(back)
	newPod, err := l.Nodes[0].AddPod(ctx, "after")
	if err != nil {
		t.Fatalf("ADD after etcd returned: %v", err)
	}
	for _, from := range []*lab.Pod{pods[1], pods[2]} {
		if err := eventually(10*time.Second-time.Since(back), func() error { return testenv.Ping(from.NS, newPod.Addr, 1) }); err != nil {
			t.Errorf("new pod %s not reachable from %s within 10 s of etcd's return: %v", newPod.Addr, from.Name, err)
		}
	}
	convergedAfter := time.Since(back)
	stopPings()
	wg.Wait()
	close(results)
	sent, lost := 0, 0
	for r := range results {
		if r.err != nil {
			t.Errorf("ping %s -> %s: %v", r.from, r.to, r.err)
		}
		sent += r.st.Sent
		lost += len(r.st.Lost)
		if len(r.st.Lost) > 0 {
			t.Errorf("ping %s -> %s: %d of %d lost (seq %v...)", r.from, r.to, len(r.st.Lost), r.st.Sent, r.st.Lost[:min(5, len(r.st.Lost))])
		}
	}
	figures(t, "etcd down %s: pod-to-pod pings between all 3 nodes %d sent, %d lost; ADD failed in %s naming etcd; brindled restarted in the outage peered again %s after it began; after etcd's return every node ready in %s, a new pod reachable from the other nodes in %s",
		(*etcdOutage).Round(time.Second), sent, lost, addTook.Round(10*time.Millisecond), restartedUp.Round(100*time.Millisecond),
		readyAfter.Round(10*time.Millisecond), convergedAfter.Round(10*time.Millisecond))
}
