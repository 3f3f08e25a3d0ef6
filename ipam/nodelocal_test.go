package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam/store"
)

// tripCounter counts the round trips made to a real store, passing commits
// through with their revision as the store reports it.
type tripCounter struct {
	Store
	reads, commits atomic.Int32
}

func (c *tripCounter) Read(ctx context.Context, gets ...Get) ([][]KV, error) {
	c.reads.Add(1)
	return c.Store.Read(ctx, gets...)
}

func (c *tripCounter) Commit(ctx context.Context, ops ...Op) (bool, error) {
	c.commits.Add(1)
	return c.Store.Commit(ctx, ops...)
}

func (c *tripCounter) CommitRev(ctx context.Context, ops ...Op) (bool, int64, []KV, error) {
	c.commits.Add(1)
	return c.Store.(store.RevCommitter).CommitRev(ctx, ops...)
}

func (c *tripCounter) reset() { c.reads.Store(0); c.commits.Store(0) }

// localAlloc is an allocator of node whose calls go through the queue in dir.
func localAlloc(s Store, dir, node string) *Allocator {
	a := New(s)
	a.Log = quietLog()
	a.Local = &NodeLocal{Dir: dir, Node: node}
	return a
}

// queueLeft lists the request and result files left in a queue directory.
func queueLeft(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, d := range []string{queueDir, waitDir} {
		es, _ := os.ReadDir(filepath.Join(dir, d))
		for _, e := range es {
			out = append(out, d+"/"+e.Name())
		}
	}
	return out
}

func TestNodeLocalConcurrentAddsAndDels(t *testing.T) {
	for _, backend := range []string{"grpc", "http"} {
		t.Run(backend, func(t *testing.T) {
			base, s := newAllocOn(t, backend)
			addPool(t, base, "default", "10.244.0.0/16", func(p *conf.IPPool) { p.Spec.BlockSize = 28 })
			tc := &tripCounter{Store: base.Store}
			dir := t.TempDir()
			const n = 60 // four /28 blocks' worth: claims happen inside batches
			var mu sync.Mutex
			got := map[string][]HandleAddr{}
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					// One allocator per call, as one brindle-ipam process per ADD.
					a := localAlloc(tc, dir, "n1")
					h := fmt.Sprintf("c%02d.eth0", i)
					has, err := a.Assign(ctxT(t), AssignRequest{Handle: h, Node: "n1", IPv4: true,
						Endpoint: &Endpoint{ContainerID: fmt.Sprintf("c%02d", i), IfName: "eth0"}})
					if err != nil {
						t.Errorf("assign %s: %v", h, err)
						return
					}
					mu.Lock()
					got[h] = has
					mu.Unlock()
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			var all []HandleAddr
			for _, has := range got {
				all = append(all, has...)
			}
			checkAllocs(t, base, map[string][]HandleAddr{"n1": all})
			for h, has := range got {
				hd, err := base.HandleOf(ctxT(t), h)
				if err != nil || hd == nil || hd.Addrs[0].Addr != has[0].Addr {
					t.Fatalf("handle %s: %+v %v, want %v", h, hd, err, has)
				}
			}
			if eps := keys(t, s.Client, endpointPrefix); len(eps) != n {
				t.Fatalf("%d endpoints, want %d", len(eps), n)
			}
			commits := tc.commits.Load()
			t.Logf("%d ADDs in %d commits and %d reads", n, commits, tc.reads.Load())
			if commits >= n {
				t.Fatalf("%d concurrent ADDs took %d commits: nothing was combined", n, commits)
			}
			if left := queueLeft(t, dir); len(left) != 0 {
				t.Fatalf("queue files left: %v", left)
			}

			// And all released at once, through the same queue.
			for h := range got {
				wg.Go(func() {
					a := localAlloc(tc, dir, "n1")
					if _, err := a.ReleaseHandle(ctxT(t), h); err != nil {
						t.Errorf("release %s: %v", h, err)
					}
				})
			}
			wg.Wait()
			if k := keys(t, s.Client, handlesPrefix); len(k) != 0 {
				t.Fatalf("handles left: %v", k)
			}
			if k := keys(t, s.Client, endpointPrefix); len(k) != 0 {
				t.Fatalf("endpoints left: %v", k)
			}
			for _, ha := range all {
				if b, _ := readBlock(t, base, ha.Block); b.InUse() != 0 {
					t.Fatalf("block %s still has %d in use", b.CIDR, b.InUse())
				}
			}
		})
	}
}

func TestNodeLocalStateIsOnlyAStartingPoint(t *testing.T) {
	for _, backend := range []string{"grpc", "http"} {
		t.Run(backend, func(t *testing.T) { testStateIsOnlyAStartingPoint(t, backend) })
	}
}

func testStateIsOnlyAStartingPoint(t *testing.T, backend string) {
	base, _ := newAllocOn(t, backend)
	addPool(t, base, "default", "10.244.0.0/16", nil)
	tc := &tripCounter{Store: base.Store}
	dir := t.TempDir()
	local := localAlloc(tc, dir, "n1")
	other := New(base.Store) // another writer on the same node's block: no queue
	other.Log = quietLog()

	first := assign4(t, local, "n1", "h1.eth0")
	tc.reset()
	second := assign4(t, local, "n1", "h2.eth0")
	if r, c := tc.reads.Load(), tc.commits.Load(); r != 0 || c != 1 {
		t.Fatalf("ADD from the node-local state: %d reads, %d commits; want 0 and 1", r, c)
	}

	// The block changes behind the state: the guarded commit fails, returns
	// the block, and the retry takes a free address.
	third := assign4(t, other, "n1", "h3.eth0")
	tc.reset()
	fourth := assign4(t, local, "n1", "h4.eth0")
	if r, c := tc.reads.Load(), tc.commits.Load(); r != 0 || c != 2 {
		t.Fatalf("ADD from a stale state: %d reads, %d commits; want 0 and 2", r, c)
	}
	addrs := []netip.Addr{first.Addr, second.Addr, third.Addr, fourth.Addr}
	slices.SortFunc(addrs, netip.Addr.Compare)
	if len(slices.Compact(addrs)) != 4 {
		t.Fatalf("an address was handed out twice: %v %v %v %v", first, second, third, fourth)
	}

	// A repeated ADD: the state knows no handles, so the create-only guard
	// finds it, and the ADD gets what the handle holds.
	if again := assign4(t, local, "n1", "h1.eth0"); again.Addr != first.Addr {
		t.Fatalf("repeated ADD got %v, want %v", again.Addr, first.Addr)
	}

	// A reservation is made behind the state: no key under the reservations
	// may have changed since they were read, so the commit fails, returns
	// them, and the ADD skips the reserved address.
	next := netip.MustParseAddr(fourth.Addr.String()).Next()
	if _, _, err := base.ApplyReservation(ctxT(t), conf.IPReservation{Metadata: conf.ObjectMeta{Name: "keep"},
		Spec: conf.IPReservationSpec{ReservedCIDRs: []string{next.String()}}}); err != nil {
		t.Fatal(err)
	}
	if got := assign4(t, local, "n1", "h4b.eth0"); got.Addr == next {
		t.Fatalf("ADD from the state got %s, reserved after the state was saved", next)
	}

	// The pool is disabled behind the state: the commit is guarded by the
	// pool's revision, so the ADD is refused and writes nothing.
	addPool(t, base, "default", "10.244.0.0/16", func(p *conf.IPPool) { p.Spec.Disabled = true })
	_, err := local.Assign(ctxT(t), AssignRequest{Handle: "h5.eth0", Node: "n1", IPv4: true})
	if !errors.Is(err, ErrNoPool) {
		t.Fatalf("ADD after the pool was disabled: want ErrNoPool, got %v", err)
	}
	if h, _ := base.HandleOf(ctxT(t), "h5.eth0"); h != nil {
		t.Fatalf("refused ADD left a handle: %+v", h)
	}
	addPool(t, base, "default", "10.244.0.0/16", nil)

	// The node's block is released behind the state (empty, past its grace):
	// the next ADD claims a block again instead of writing into a gone one.
	for _, h := range []string{"h1.eth0", "h2.eth0", "h3.eth0", "h4.eth0", "h4b.eth0"} {
		if _, err := other.ReleaseHandle(ctxT(t), h); err != nil {
			t.Fatal(err)
		}
	}
	other.Now = func() time.Time { return time.Now().Add(time.Hour) }
	if rel, err := other.ReleaseEmptyBlocks(ctxT(t), "n1"); err != nil || len(rel) != 1 {
		t.Fatalf("release empty blocks: %v %v", rel, err)
	}
	fifth := assign4(t, local, "n1", "h6.eth0")
	b, ok := readBlock(t, base, fifth.Block)
	if !ok || b.Affinity != "n1" || b.InUse() != 1 {
		t.Fatalf("ADD after the block was released: block %+v %v", b, ok)
	}
	if !local.Local.EmptyBlocksDue(time.Now(), DefaultEmptyBlockGrace) {
		// A confirmed block, nothing due: the DEL's empty-block pass is spared.
	} else {
		t.Fatal("state says an empty block is due where none is")
	}
}

func TestBatchOneRefusalDoesNotFailTheOthers(t *testing.T) {
	a, s := newAllocOn(t, "http")
	addPool(t, a, "default", "10.244.0.0/16", nil)
	taken := assign4(t, a, "n1", "holder.eth0")
	var ps []*pending
	for _, req := range []AssignRequest{
		{Handle: "ok1.eth0", Node: "n1", IPv4: true},
		{Handle: "outside.eth0", Node: "n1", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
		{Handle: "ok2.eth0", Node: "n1", IPv4: true},
		{Handle: "dup.eth0", Node: "n1", IPs: []netip.Addr{taken.Addr}},
	} {
		p, err := newAssign(req)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if err := a.runBatch(ctxT(t), "n1", ps, newReadCache(a.Store)); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		if ps[i].err != nil || len(ps[i].out) != 1 {
			t.Fatalf("%s: %v %v", ps[i].req.handle(), ps[i].out, ps[i].err)
		}
	}
	if ps[1].err == nil || !strings.Contains(ps[1].err.Error(), "192.0.2.1: not inside any ip pool") {
		t.Fatalf("outside the pools: %v", ps[1].err)
	}
	if ps[3].err == nil || !strings.Contains(ps[3].err.Error(), `already in use by handle "holder.eth0"`) {
		t.Fatalf("address in use: %v", ps[3].err)
	}
	hs := keys(t, s.Client, handlesPrefix)
	slices.Sort(hs)
	if want := []string{"ipam/handles/holder.eth0", "ipam/handles/ok1.eth0", "ipam/handles/ok2.eth0"}; !slices.Equal(hs, want) {
		t.Fatalf("handles %v, want %v", hs, want)
	}
}

// A waiter killed before its request was served leaves a request file no
// process holds: it is removed, never allocated for.
func TestNodeLocalDeadWaiterIgnored(t *testing.T) {
	a, s := newAllocOn(t, "http")
	addPool(t, a, "default", "10.244.0.0/16", nil)
	dir := t.TempDir()
	l := &NodeLocal{Dir: dir, Node: "n1"}
	if err := l.ensureDirs(); err != nil {
		t.Fatal(err)
	}
	ghost := filepath.Join(dir, queueDir, "00000000000000000001-1-deadbeef.req")
	body := fmt.Sprintf(`{"v":1,"deadline":%q,"req":{"assign":{"Handle":"ghost.eth0","Node":"n1","IPv4":true}}}`,
		time.Now().Add(time.Hour).Format(time.RFC3339Nano))
	if err := os.WriteFile(ghost, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	assign4(t, localAlloc(a.Store, dir, "n1"), "n1", "live.eth0")
	if _, err := os.Stat(ghost); !os.IsNotExist(err) {
		t.Fatalf("request of a dead process still queued: %v", err)
	}
	if h, _ := a.HandleOf(ctxT(t), "ghost.eth0"); h != nil {
		t.Fatalf("allocated for a dead process: %+v", h)
	}
	if k := keys(t, s.Client, handlesPrefix); len(k) != 1 {
		t.Fatalf("handles: %v", k)
	}
}

// The holder commits a waiter's request and dies before writing its
// result: the waiter takes the lock, makes the call itself and gets what
// the committed handle holds, not a second address.
func TestNodeLocalHolderDiedAfterCommit(t *testing.T) {
	a, _ := newAllocOn(t, "http")
	addPool(t, a, "default", "10.244.0.0/16", nil)
	dir := t.TempDir()
	l := &NodeLocal{Dir: dir, Node: "n1"}
	if err := l.ensureDirs(); err != nil {
		t.Fatal(err)
	}
	assign4(t, localAlloc(a.Store, dir, "n1"), "n1", "warm.eth0") // a state to start from

	holder, err := openNodeLock(filepath.Join(dir, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	if !holder.try() {
		t.Fatal("lock not free")
	}
	type res struct {
		has []HandleAddr
		err error
	}
	done := make(chan res, 1)
	go func() {
		has, err := localAlloc(a.Store, dir, "n1").Assign(ctxT(t), AssignRequest{Handle: "w.eth0", Node: "n1", IPv4: true})
		done <- res{has, err}
	}()
	var qs []queued
	for deadline := time.Now().Add(10 * time.Second); len(qs) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the waiter never queued")
		}
		time.Sleep(5 * time.Millisecond)
		qs, _ = l.scan(8, map[string]bool{}, "")
	}
	// The "holder" commits the request, then dies: no result, lock dropped.
	if err := a.runBatch(ctxT(t), "n1", []*pending{qs[0].p}, newReadCache(a.Store)); err != nil || qs[0].p.err != nil {
		t.Fatalf("holder's commit: %v %v", err, qs[0].p.err)
	}
	committed := qs[0].p.out
	holder.close()
	select {
	case r := <-done:
		if r.err != nil || len(r.has) != 1 || r.has[0] != committed[0] {
			t.Fatalf("waiter got %v %v, want the committed %v", r.has, r.err, committed)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("waiter still waiting after the holder died")
	}
}

func TestNodeLocalEtcdDownBounded(t *testing.T) {
	ep := deadEndpoint(t)
	dir := t.TempDir()
	var wg sync.WaitGroup
	var named atomic.Int32
	start := time.Now()
	for i := range 8 {
		wg.Go(func() {
			a := allocOn(t, "http", etcdtest.NewClient(t, ep), ep)
			a.Local = &NodeLocal{Dir: dir, Node: "n1"}
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			_, err := a.Assign(ctx, AssignRequest{Handle: fmt.Sprintf("c%d.eth0", i), Node: "n1", IPv4: true})
			switch {
			case err != nil && strings.Contains(err.Error(), "etcd unreachable at "+ep):
				named.Add(1)
			case errors.Is(err, ErrNodeBusy):
				// It waited behind the call that was trying etcd.
			default:
				t.Errorf("ADD %d: want 'etcd unreachable at %s' or ErrNodeBusy, got %v", i, ep, err)
			}
		})
	}
	wg.Wait()
	if named.Load() == 0 {
		t.Fatal("no ADD named the unreachable etcd")
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("8 ADDs with etcd down took %v, each bounded by 1.5s", took)
	}
}
