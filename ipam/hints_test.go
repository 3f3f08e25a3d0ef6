package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// countingStore counts the round trips made to a real store.
type countingStore struct {
	Store
	reads, commits atomic.Int32
}

func (c *countingStore) Read(ctx context.Context, gets ...Get) ([][]KV, error) {
	c.reads.Add(1)
	return c.Store.Read(ctx, gets...)
}

func (c *countingStore) Commit(ctx context.Context, ops ...Op) (bool, error) {
	c.commits.Add(1)
	return c.Store.Commit(ctx, ops...)
}

func TestAssignRoundTrips(t *testing.T) {
	base, _ := newAllocOn(t, "http")
	addPool(t, base, "default", "10.244.0.0/16", nil)
	assign4(t, base, "n1", "first.eth0") // the node has a block now
	cs := &countingStore{Store: base.Store}
	a := New(cs) // no CommitOrGet: conflicts would re-read, and there are none here
	a.Log = quietLog()

	rt := func(handle string) (int32, int32) {
		cs.reads.Store(0)
		cs.commits.Store(0)
		assign4(t, a, "n1", handle)
		return cs.reads.Load(), cs.commits.Load()
	}
	if r, c := rt("no-hint.eth0"); r != 2 || c != 1 {
		t.Fatalf("without hints: %d reads, %d commits; want 2 and 1", r, c)
	}
	dir := t.TempDir()
	a.Hints = FileHints{Dir: dir}
	rt("learn.eth0") // writes the hint
	if got := (FileHints{Dir: dir}).Load("n1"); len(got) != 1 {
		t.Fatalf("hint %v, want the node's one block", got)
	}
	if r, c := rt("hinted.eth0"); r != 1 || c != 1 {
		t.Fatalf("with a hint: %d reads, %d commits; want 1 and 1", r, c)
	}
	// A wrong hint costs a read, never a wrong answer.
	os.WriteFile(filepath.Join(dir, "ipam-blocks-n1"), []byte("10.99.0.0/26\n"), 0o644)
	if r, _ := rt("stale-hint.eth0"); r != 2 {
		t.Fatalf("with a stale hint: %d reads, want 2", r)
	}
	for i := range 3 {
		h := fmt.Sprintf("after-%d.eth0", i)
		ha := assign4(t, a, "n1", h)
		if b, _ := readBlock(t, a, ha.Block); b.Affinity != "n1" {
			t.Fatalf("%s from block of %q", ha.Addr, b.Affinity)
		}
	}
	if got := (FileHints{Dir: dir}).Load("n1"); len(got) != 1 || got[0] == netip.MustParsePrefix("10.99.0.0/26") {
		t.Fatalf("stale hint not replaced: %v", got)
	}
}

// A retry that must read afresh after starting from the node-local state
// (here: a repeated ADD, whose answer is confirmed by a linearizable read)
// reads the node's blocks in the same round trip as the rest, through the
// hints: the state it started from is gone with the reset.
func TestResetStateReadsThroughHints(t *testing.T) {
	base, _ := newAllocOn(t, "http")
	addPool(t, base, "default", "10.244.0.0/16", nil)
	tc := &tripCounter{Store: base.Store}
	dir := t.TempDir()
	a := localAlloc(tc, filepath.Join(dir, "queue"), "n1")
	a.Hints = FileHints{Dir: dir}
	first := assign4(t, a, "n1", "h1.eth0") // no state yet: reads, claims, writes the hint and the state
	assign4(t, a, "n1", "h2.eth0")
	tc.reset()
	if again := assign4(t, a, "n1", "h1.eth0"); again.Addr != first.Addr {
		t.Fatalf("repeated ADD got %v, want %v", again.Addr, first.Addr)
	}
	if r, c := tc.reads.Load(), tc.commits.Load(); r != 1 || c != 1 {
		t.Fatalf("repeated ADD from the state: %d reads, %d commits; want 1 (the confirming read, blocks included) and 1", r, c)
	}
}
