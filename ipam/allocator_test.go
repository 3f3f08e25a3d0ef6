package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
)

// checkAllocs asserts that no address appears twice and that every address
// comes from a block whose affinity is the node that asked for it.
func checkAllocs(t *testing.T, a *Allocator, byNode map[string][]HandleAddr) {
	t.Helper()
	seen := map[netip.Addr]string{}
	for node, has := range byNode {
		for _, ha := range has {
			if other, dup := seen[ha.Addr]; dup {
				t.Fatalf("address %s handed out twice (%s and %s)", ha.Addr, other, node)
			}
			seen[ha.Addr] = node
			b, ok := readBlock(t, a, ha.Block)
			if !ok || !b.CIDR.Contains(ha.Addr) {
				t.Fatalf("%s: block %s missing or does not contain it", ha.Addr, ha.Block)
			}
			if b.Affinity != node {
				t.Fatalf("%s for node %s came from block %s of node %q", ha.Addr, node, b.CIDR, b.Affinity)
			}
			ord, _ := b.Ordinal(ha.Addr)
			if al := b.Allocations[ord]; al == nil || al.Seq != ha.Seq {
				t.Fatalf("%s: block does not record the allocation (seq %d): %+v", ha.Addr, ha.Seq, al)
			}
		}
	}
}

// runNodes allocates perNode addresses on each of nodes nodes, all at once.
func runNodes(t *testing.T, a *Allocator, nodes, perNode int, mid func()) map[string][]HandleAddr {
	t.Helper()
	var mu sync.Mutex
	out := map[string][]HandleAddr{}
	var wg sync.WaitGroup
	errs := make(chan error, nodes*perNode)
	var midOnce sync.Once
	done := 0
	// A correctness test, not a timed one: on a loaded 2-core CI machine
	// 500 contending allocations can take longer than ctxT's 20 s.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for n := range nodes {
		node := fmt.Sprintf("node-%02d", n)
		for i := range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := a.Assign(ctx, AssignRequest{Handle: fmt.Sprintf("c-%s-%d.eth0", node, i), Node: node, IPv4: true})
				if err != nil {
					errs <- fmt.Errorf("%s #%d: %w", node, i, err)
					return
				}
				mu.Lock()
				out[node] = append(out[node], got...)
				done++
				half := done == nodes*perNode/2
				mu.Unlock()
				if half && mid != nil {
					midOnce.Do(mid)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

func TestTenNodesFiftyEachConcurrently(t *testing.T) {
	for _, backend := range []string{"grpc", "http"} {
		t.Run(backend, func(t *testing.T) {
			a, _ := newAllocOn(t, backend)
			addPool(t, a, "default", "10.244.0.0/16", nil)
			start := time.Now()
			got := runNodes(t, a, 10, 50, nil)
			t.Logf("500 allocations on 10 nodes in %v", time.Since(start))
			checkAllocs(t, a, got)
			for node, has := range got {
				if len(has) != 50 {
					t.Errorf("%s got %d addresses", node, len(has))
				}
			}
		})
	}
}

func TestClusterMemberStoppedMidRun(t *testing.T) {
	for _, backend := range []string{"grpc", "http"} {
		t.Run(backend, func(t *testing.T) {
			c := etcdtest.StartCluster(t, 3)
			a := allocOn(t, backend, etcdtest.NewClient(t, c.Endpoints()...), c.Endpoints()...)
			addPool(t, a, "default", "10.244.0.0/16", nil)
			got := runNodes(t, a, 5, 20, func() {
				t.Logf("stopping member %s", c.Members[0].Name)
				c.Members[0].Stop()
			})
			checkAllocs(t, a, got)
			n := 0
			for _, has := range got {
				n += len(has)
			}
			if n != 100 {
				t.Fatalf("got %d allocations, want 100", n)
			}
		})
	}
}

func TestRepeatedAssignSameHandleSameAddress(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	first := assign4(t, a, "n1", "c1.eth0")
	again := assign4(t, a, "n1", "c1.eth0")
	if first != again {
		t.Fatalf("repeated assign: %v then %v", first, again)
	}
	other := assign4(t, a, "n1", "c1.eth1")
	if other.Addr == first.Addr {
		t.Fatalf("second interface got the same address %s", other.Addr)
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	ha := assign4(t, a, "n1", "c1.eth0")
	rel, err := a.ReleaseHandle(ctxT(t), "c1.eth0")
	if err != nil || len(rel) != 1 || rel[0].Addr != ha.Addr {
		t.Fatalf("release: %v %v", rel, err)
	}
	for range 2 {
		if rel, err := a.ReleaseHandle(ctxT(t), "c1.eth0"); err != nil || len(rel) != 0 {
			t.Fatalf("repeated release: %v %v", rel, err)
		}
	}
	if rel, err := a.ReleaseHandle(ctxT(t), "never-seen.eth0"); err != nil || len(rel) != 0 {
		t.Fatalf("release of unknown handle: %v %v", rel, err)
	}
	if k := keys(t, s.Client, handlesPrefix); len(k) != 0 {
		t.Fatalf("handles left: %v", k)
	}
}

func TestFreedAddressNotReusedAtOnce(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	first := assign4(t, a, "n1", "c1.eth0")
	if _, err := a.ReleaseHandle(ctxT(t), "c1.eth0"); err != nil {
		t.Fatal(err)
	}
	// Every other address of the block goes before the freed one comes back.
	for i := range 63 {
		if ha := assign4(t, a, "n1", fmt.Sprintf("x%d.eth0", i)); ha.Addr == first.Addr {
			t.Fatalf("freed %s reused after %d allocations", first.Addr, i)
		}
	}
	last := assign4(t, a, "n1", "last.eth0")
	if last.Addr != first.Addr || last.Seq != first.Seq+1 {
		t.Fatalf("64th allocation: got %v, want %s with seq %d", last, first.Addr, first.Seq+1)
	}
}

func TestStaleSequenceReleaseRefused(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	old := assign4(t, a, "n1", "old.eth0")
	if _, err := a.ReleaseHandle(ctxT(t), "old.eth0"); err != nil {
		t.Fatal(err)
	}
	got, err := a.Assign(ctxT(t), AssignRequest{Handle: "new.eth0", Node: "n1", IPs: []netip.Addr{old.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Seq != old.Seq+1 {
		t.Fatalf("reallocation seq %d, want %d", got[0].Seq, old.Seq+1)
	}
	err = a.ReleaseIP(ctxT(t), old.Addr, "old.eth0", old.Seq)
	if !errors.Is(err, ErrStaleSeq) {
		t.Fatalf("stale release: want ErrStaleSeq, got %v", err)
	}
	// A stale handle record (a DEL racing a re-ADD of the address) frees nothing either.
	b, _ := readBlock(t, a, old.Block)
	if b.release(mustOrd(b, old.Addr), "old.eth0", old.Seq) {
		t.Fatal("block.release accepted a stale sequence")
	}
	if h, _ := a.HandleOf(ctxT(t), "new.eth0"); h == nil || h.Addrs[0].Addr != old.Addr {
		t.Fatalf("new holder lost the address: %+v", h)
	}
	if err := a.ReleaseIP(ctxT(t), old.Addr, "new.eth0", got[0].Seq); err != nil {
		t.Fatalf("release with the current seq: %v", err)
	}
	if h, _ := a.HandleOf(ctxT(t), "new.eth0"); h != nil {
		t.Fatalf("handle kept after its only address was released: %+v", h)
	}
}

func mustOrd(b *Block, a netip.Addr) int {
	o, _ := b.Ordinal(a)
	return o
}

func TestBorrowing(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strictAffinity=%v", strict), func(t *testing.T) {
			a, _ := newAlloc(t)
			// Two blocks only: nodes a and b claim them, c has none to claim.
			addPool(t, a, "small", "10.9.0.0/25", nil)
			if err := a.SetConfig(ctxT(t), Config{StrictAffinity: strict}); err != nil {
				t.Fatal(err)
			}
			ha := assign4(t, a, "a", "a1.eth0")
			hb := assign4(t, a, "b", "b1.eth0")
			if ha.Block == hb.Block {
				t.Fatalf("a and b share block %s", ha.Block)
			}
			got, err := a.Assign(ctxT(t), AssignRequest{Handle: "c1.eth0", Node: "c", IPv4: true})
			if strict {
				if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "strictAffinity") {
					t.Fatalf("strict: want exhausted error naming strictAffinity, got %v %v", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("borrow: %v", err)
			}
			b, _ := readBlock(t, a, got[0].Block)
			if b.Affinity == "c" || b.Affinity == "" {
				t.Fatalf("borrowed from block with affinity %q", b.Affinity)
			}
			if al := b.Allocations[mustOrd(b, got[0].Addr)]; al.Handle != "c1.eth0" {
				t.Fatalf("borrowed allocation not recorded: %+v", al)
			}
		})
	}
}

func TestMaxBlocksPerHost(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", func(p *conf.IPPool) { p.Spec.BlockSize = 28 })
	if err := a.SetConfig(ctxT(t), Config{StrictAffinity: true, MaxBlocksPerHost: 2}); err != nil {
		t.Fatal(err)
	}
	for i := range 32 {
		assign4(t, a, "n1", fmt.Sprintf("c%d.eth0", i))
	}
	_, err := a.Assign(ctxT(t), AssignRequest{Handle: "one-too-many.eth0", Node: "n1", IPv4: true})
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("want ErrExhausted after 2 blocks of 16, got %v", err)
	}
	if k := keys(t, s.Client, nodeAffinityPrefix("n1")); len(k) != 2 {
		t.Fatalf("node claims %v, want 2", k)
	}
}

func TestSpecificIP(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	addPool(t, a, "other", "10.245.0.0/16", nil)
	want := netip.MustParseAddr("10.244.7.9")
	got, err := a.Assign(ctxT(t), AssignRequest{Handle: "c1.eth0", Node: "n1", IPv4: true, IPs: []netip.Addr{want}})
	if err != nil || got[0].Addr != want {
		t.Fatalf("specific ip: %v %v", got, err)
	}
	if b, _ := readBlock(t, a, netip.MustParsePrefix("10.244.7.0/26")); b == nil || b.Affinity != "n1" {
		t.Fatalf("block of the requested ip not claimed by n1: %+v", b)
	}
	for _, tc := range []struct {
		ip    string
		pools []string
		want  string
	}{
		{"10.244.7.9", nil, `already in use by handle "c1.eth0"`},
		{"192.168.1.1", nil, "not inside any ip pool"},
		{"10.245.0.1", []string{"default"}, `pool "other" is not among the allowed pools`},
	} {
		_, err := a.Assign(ctxT(t), AssignRequest{Handle: "c2.eth0", Node: "n1", IPs: []netip.Addr{netip.MustParseAddr(tc.ip)}, IPv4Pools: tc.pools})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ip %s: want error containing %q, got %v", tc.ip, tc.want, err)
		}
	}
	if h, _ := a.HandleOf(ctxT(t), "c2.eth0"); h != nil {
		t.Fatalf("failed requests left a handle: %+v", h)
	}
}

func TestBadInputLeavesNothingBehind(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	before := keys(t, s.Client, "")
	for _, req := range []AssignRequest{
		// IPv4 would succeed, IPv6 cannot: the v4 claim must not be written.
		{Handle: "c1.eth0", Node: "n1", IPv4: true, IPv6: true},
		{Handle: "c1.eth0", Node: "n1", IPv4: true, IPs: []netip.Addr{netip.MustParseAddr("fd00::1")}},
		{Handle: "c1.eth0", Node: "n1", IPv4: true, IPv4Pools: []string{"nope"}},
		{Handle: "c1/eth0", Node: "n1", IPv4: true},
		{Handle: "c1.eth0", Node: "", IPv4: true},
	} {
		if _, err := a.Assign(ctxT(t), req); err == nil {
			t.Errorf("%+v: want error", req)
		}
	}
	if after := keys(t, s.Client, ""); !slices.Equal(before, after) {
		t.Fatalf("failed assigns wrote keys: before %v after %v", before, after)
	}
}

func TestDualStack(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "v4", "10.244.0.0/16", nil)
	addPool(t, a, "v6", "fd00:10::/64", nil)
	got, err := a.Assign(ctxT(t), AssignRequest{Handle: "c1.eth0", Node: "n1", IPv4: true, IPv6: true,
		Endpoint: &Endpoint{ContainerID: "c1", IfName: "eth0"}})
	if err != nil || len(got) != 2 || !got[0].Addr.Is4() || !got[1].Addr.Is6() {
		t.Fatalf("dual stack: %v %v", got, err)
	}
	if got[1].Block.Bits() != 122 {
		t.Fatalf("v6 block %s, want a /122", got[1].Block)
	}
	if k := keys(t, s.Client, endpointPrefix); len(k) != 1 || k[0] != "endpoints/n1/c1.eth0" {
		t.Fatalf("endpoint keys %v", k)
	}
}

func TestEmptyBlockReleasedAfterGrace(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	now := time.Now()
	a.Now = func() time.Time { return now }
	ha := assign4(t, a, "n1", "c1.eth0")
	if _, err := a.ReleaseHandle(ctxT(t), "c1.eth0"); err != nil {
		t.Fatal(err)
	}
	if rel, _ := a.ReleaseEmptyBlocks(ctxT(t), "n1"); len(rel) != 0 {
		t.Fatalf("released %v inside the grace period", rel)
	}
	now = now.Add(DefaultEmptyBlockGrace + time.Second)
	rel, err := a.ReleaseEmptyBlocks(ctxT(t), "n1")
	if err != nil || len(rel) != 1 || rel[0] != ha.Block {
		t.Fatalf("release empty: %v %v", rel, err)
	}
	if k := keys(t, s.Client, "ipam/"); len(k) != 0 {
		t.Fatalf("left behind: %v", k)
	}
}

func TestEmptyBlockReusedStaysClaimed(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	now := time.Now()
	a.Now = func() time.Time { return now }
	ha := assign4(t, a, "n1", "c1.eth0")
	if _, err := a.ReleaseHandle(ctxT(t), "c1.eth0"); err != nil {
		t.Fatal(err)
	}
	hb := assign4(t, a, "n1", "c2.eth0")
	if hb.Block != ha.Block {
		t.Fatalf("did not reuse the pending block: %s vs %s", hb.Block, ha.Block)
	}
	now = now.Add(DefaultEmptyBlockGrace + time.Second)
	if rel, _ := a.ReleaseEmptyBlocks(ctxT(t), "n1"); len(rel) != 0 {
		t.Fatalf("released block in use: %v", rel)
	}
}

func TestGCReleasesGoneAttachments(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	for _, c := range []string{"keep", "gone1", "gone2"} {
		if _, err := a.Assign(ctxT(t), AssignRequest{Handle: HandleID(c, "eth0"), Node: "n1", IPv4: true,
			Attrs: map[string]string{AttrContainerID: c, AttrIfName: "eth0", AttrNetwork: "net"}}); err != nil {
			t.Fatal(err)
		}
	}
	assign4(t, a, "n1", "tunnel-n1") // not a pod: GC must leave it
	// A pod handle that records no network: whose it is is unknown, so GC leaves it.
	if _, err := a.Assign(ctxT(t), AssignRequest{Handle: "legacy.eth0", Node: "n1", IPv4: true,
		Attrs: map[string]string{AttrContainerID: "legacy", AttrIfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Assign(ctxT(t), AssignRequest{Handle: "other.eth0", Node: "n2", IPv4: true,
		Attrs: map[string]string{AttrContainerID: "other", AttrIfName: "eth0", AttrNetwork: "net"}}); err != nil {
		t.Fatal(err)
	}
	rel, err := a.GC(ctxT(t), "n1", "net", []Attachment{{ContainerID: "keep", IfName: "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rel)
	if !slices.Equal(rel, []string{"gone1.eth0", "gone2.eth0"}) {
		t.Fatalf("gc released %v", rel)
	}
	for _, h := range []string{"keep.eth0", "tunnel-n1", "other.eth0", "legacy.eth0"} {
		if got, _ := a.HandleOf(ctxT(t), h); got == nil {
			t.Errorf("gc released %s", h)
		}
	}
}

func TestNodeSelectorAndDisabledPool(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "gpu", "10.1.0.0/16", func(p *conf.IPPool) { p.Spec.NodeSelector = "has(gpu)" })
	addPool(t, a, "off", "10.2.0.0/16", func(p *conf.IPPool) { p.Spec.Disabled = true })
	if _, err := a.Assign(ctxT(t), AssignRequest{Handle: "c1.eth0", Node: "plain", IPv4: true}); !errors.Is(err, ErrNoPool) {
		t.Fatalf("node without labels: want ErrNoPool, got %v", err)
	}
	if _, err := s.Client.Put(ctxT(t), Prefix+nodeKey("big"), `{"labels":{"gpu":"a100"}}`); err != nil {
		t.Fatal(err)
	}
	ha := assign4(t, a, "big", "c2.eth0")
	if !netip.MustParsePrefix("10.1.0.0/16").Contains(ha.Addr) {
		t.Fatalf("got %s outside the gpu pool", ha.Addr)
	}
}

func TestApplyAndDeletePool(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	_, err := a.ApplyPool(ctxT(t), conf.IPPool{Metadata: conf.ObjectMeta{Name: "overlap"}, Spec: conf.IPPoolSpec{CIDR: "10.244.128.0/17"}})
	if err == nil || !strings.Contains(err.Error(), "overlaps pool") {
		t.Fatalf("overlapping pool: %v", err)
	}
	_, err = a.ApplyPool(ctxT(t), conf.IPPool{Metadata: conf.ObjectMeta{Name: "default"}, Spec: conf.IPPoolSpec{CIDR: "10.244.0.0/16", BlockSize: 24}})
	if err == nil || !strings.Contains(err.Error(), "cannot change") {
		t.Fatalf("blockSize change: %v", err)
	}
	if created, err := a.ApplyPool(ctxT(t), conf.IPPool{Metadata: conf.ObjectMeta{Name: "default"}, Spec: conf.IPPoolSpec{CIDR: "10.244.0.0/16", NATOutgoing: true}}); err != nil || created {
		t.Fatalf("update: %v %v", created, err)
	}
	assign4(t, a, "n1", "c1.eth0")
	if err := a.DeletePool(ctxT(t), "default", false); err == nil || !strings.Contains(err.Error(), "1 addresses are allocated") {
		t.Fatalf("delete in use: %v", err)
	}
	if err := a.DeletePool(ctxT(t), "default", true); err != nil {
		t.Fatalf("forced delete: %v", err)
	}
	if pools, _ := a.ListPools(ctxT(t)); len(pools) != 0 {
		t.Fatalf("pools left: %v", pools)
	}
}
