package kube

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Two brindleds contend for the Lease: one runs the controller at a time,
// and when it stops the other takes over. Real apiserver, brindle-node's
// RBAC (a Role in brindle-system only).
func TestOneControllerAtATime(t *testing.T) {
	a := startAPI(t)
	var mu sync.Mutex
	running := map[string]bool{}
	most := 0
	start := func(id string) context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		go RunElected(ctx, Election{Clients: a.node, Identity: id, Log: quietLog(),
			LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 250 * time.Millisecond},
			func(ctx context.Context) {
				mu.Lock()
				running[id] = true
				n := 0
				for _, r := range running {
					if r {
						n++
					}
				}
				most = max(most, n)
				mu.Unlock()
				<-ctx.Done()
				mu.Lock()
				running[id] = false
				mu.Unlock()
			})
		return cancel
	}
	stopA := start("node-a")
	stopB := start("node-b")
	defer stopB()
	leader := func() string {
		mu.Lock()
		defer mu.Unlock()
		for id, r := range running {
			if r {
				return id
			}
		}
		return ""
	}
	waitFor(t, 20*time.Second, "a leader", func() bool { return leader() != "" })
	first := leader()
	time.Sleep(3 * time.Second) // several renewals
	if leader() != first {
		t.Fatalf("leadership moved from %s to %s with both alive", first, leader())
	}
	if first == "node-a" {
		stopA()
	} else {
		stopB()
		defer stopA()
	}
	took := time.Now()
	waitFor(t, 20*time.Second, "the other takes over", func() bool { l := leader(); return l != "" && l != first })
	t.Logf("%s took over %s after %s stopped", leader(), time.Since(took).Round(time.Millisecond), first)
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Fatalf("%d controllers ran at once", most)
	}
}
