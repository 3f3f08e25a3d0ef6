package bgpd

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/internal/etcdtest"
)

// The cache watches only its prefixes, and a transaction that writes under
// two of them is never seen half applied, though it arrives on two watches.
func TestCacheScopedAndNeverHalfApplied(t *testing.T) {
	s := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := "/brindle/v1/"
	claims, eps := root+"ipam/affinity/n1/", root+"endpoints/n1/"
	c := NewCache(s.Client, quiet(), root, claims, eps)
	go c.Run(ctx)
	for !c.Synced() {
		time.Sleep(5 * time.Millisecond)
	}
	const n = 200
	done := make(chan error, 1)
	go func() {
		for i := range n {
			k := fmt.Sprint(i)
			// Someone else's: a watch of the whole root would deliver these.
			if _, err := s.Client.Put(ctx, root+"ipam/blocks/"+k, "a block of 10 KB, say"); err != nil {
				done <- err
				return
			}
			if _, err := s.Client.Txn(ctx).Then(clientv3.OpPut(claims+k, "claim"), clientv3.OpPut(eps+k, "endpoint")).Commit(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	check := func() int {
		got := c.Snapshot(root)
		for i := range n {
			k := fmt.Sprint(i)
			_, a := got[claims+k]
			_, b := got[eps+k]
			if a != b {
				t.Fatalf("transaction %d seen half applied: claim %v, endpoint %v", i, a, b)
			}
		}
		return len(got)
	}
	var writerErr error
	writing := true
	deadline := time.After(30 * time.Second)
	for writing || check() < 2*n {
		select {
		case <-c.Changed():
			check()
		case <-time.After(time.Millisecond): // and at any moment between
			check()
		case writerErr = <-done:
			writing = false
			if writerErr != nil {
				t.Fatal(writerErr)
			}
		case <-deadline:
			t.Fatalf("cache has %d of %d keys after 30s", check(), 2*n)
		}
	}
	events, _ := c.Received()
	if events != 2*n {
		t.Fatalf("received %d events, want %d (its own prefixes' only)", events, 2*n)
	}
}
