package ipam

// Tests of the defects of issue 12 that live in the allocator: each failed
// on the code before its fix (the output is in docs/faults.md).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
)

// laggingStore is a real etcd whose serializable reads are answered as a
// member that lags behind would answer them: from the state at an older
// revision (a lagging member has applied the log up to there and no further).
// Linearizable reads and commits go to the current state.
type laggingStore struct {
	*etcdgrpc.Store
	cli *clientv3.Client
	mu  sync.Mutex
	rev int64 // 0: not lagging
}

func (l *laggingStore) lagAt(rev int64) { l.mu.Lock(); l.rev = rev; l.mu.Unlock() }

func (l *laggingStore) Read(ctx context.Context, gets ...Get) ([][]KV, error) {
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	if rev == 0 || !gets[0].Serializable {
		return l.Store.Read(ctx, gets...)
	}
	out := make([][]KV, len(gets))
	for i, g := range gets {
		opts := []clientv3.OpOption{clientv3.WithRev(rev), clientv3.WithSerializable()}
		if g.Prefix {
			opts = append(opts, clientv3.WithPrefix())
		}
		if g.KeysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		resp, err := l.cli.Get(ctx, Prefix+g.Key, opts...)
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.Kvs {
			out[i] = append(out[i], KV{Key: strings.TrimPrefix(string(kv.Key), Prefix), Value: kv.Value, ModRevision: kv.ModRevision})
		}
	}
	return out, nil
}

func currentRev(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(ctxT(t), "x")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// Defect 5: the same handle ADDed again after its DEL, with the read served
// by a member that has not seen the DEL, must not get the freed address
// back without holding it.
func TestReAddAfterDelWithLaggingMember(t *testing.T) {
	s := etcdtest.Start(t)
	ls := &laggingStore{Store: etcdgrpc.New(s.Client), cli: s.Client}
	a := New(ls)
	a.Log = quietLog()
	addPool(t, a, "default", "10.244.0.0/16", nil)
	first := assign4(t, a, "n1", "c1.eth0")
	before := currentRev(t, s.Client)
	if _, err := a.ReleaseHandle(ctxT(t), "c1.eth0"); err != nil {
		t.Fatal(err)
	}
	ls.lagAt(before) // the member serving reads has not applied the DEL
	got := assign4(t, a, "n1", "c1.eth0")
	ls.lagAt(0)
	h, err := a.HandleOf(ctxT(t), "c1.eth0")
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		t.Fatalf("ADD returned %s (the freed %s) but no handle holds it", got.Addr, first.Addr)
	}
	b, _ := readBlock(t, a, got.Block)
	if al := b.Allocations[mustOrd(b, got.Addr)]; al == nil || al.Handle != "c1.eth0" || al.Seq != got.Seq {
		t.Fatalf("ADD returned %s seq %d but the block records %+v", got.Addr, got.Seq, al)
	}
}

// Defect 2: CNI GC of one network must not release another network's
// addresses on the same node (two networks on brindle-ipam, as with Multus).
func TestGCScopedToNetwork(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	ctx := ctxT(t)
	cni := cniConfig(t)
	netA := namedIPAMList(t, "net-a", s.Endpoint)
	netB := namedIPAMList(t, "net-b", s.Endpoint)
	eth0 := rtConf("c1")
	net1 := rtConf("c1")
	net1.IfName = "net1"
	if _, err := cni.AddNetworkList(ctx, netA, eth0); err != nil {
		t.Fatal(err)
	}
	if _, err := cni.AddNetworkList(ctx, netB, net1); err != nil {
		t.Fatal(err)
	}
	// The runtime's GC of net-a lists net-a's attachments only.
	if err := cni.GCNetworkList(ctx, netA, gcArgs(attachment("c1", "eth0"))); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.HandleOf(ctx, "c1.net1"); h == nil {
		t.Fatal("GC of net-a released c1.net1, an attachment of net-b")
	}
	if h, _ := a.HandleOf(ctx, "c1.eth0"); h == nil {
		t.Fatal("GC of net-a released its own valid attachment")
	}
	// And GC of net-b with nothing valid releases net-b's only.
	if err := cni.GCNetworkList(ctx, netB, gcArgs()); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.HandleOf(ctx, "c1.net1"); h != nil {
		t.Fatal("GC of net-b kept its gone attachment")
	}
	if h, _ := a.HandleOf(ctx, "c1.eth0"); h == nil {
		t.Fatal("GC of net-b released c1.eth0 of net-a")
	}
}

// Defect 3 and 12: `ipam release` cleaning a gone node's block must not free
// an address a live pod holds: one borrowed by a pod of another node, or one
// whose endpoint record says its pod is still there.
func TestRepairKeepsAddressesInUse(t *testing.T) {
	a, s := newAlloc(t)
	// One block only: node "gone" claims it, node "live" borrows from it.
	addPool(t, a, "one", "10.9.0.0/26", nil)
	if _, err := s.Client.Put(ctxT(t), Prefix+nodeKey("live"), `{"name":"live"}`); err != nil {
		t.Fatal(err)
	}
	assignEP := func(node, id string) HandleAddr {
		t.Helper()
		got, err := a.Assign(ctxT(t), AssignRequest{Handle: HandleID(id, "eth0"), Node: node, IPv4: true,
			Attrs:    map[string]string{AttrNode: node, AttrContainerID: id, AttrIfName: "eth0"},
			Endpoint: &Endpoint{ContainerID: id, IfName: "eth0", HostVeth: conf.HostVethName("", "", id)}})
		if err != nil {
			t.Fatalf("assign %s on %s: %v", id, node, err)
		}
		return got[0]
	}
	own := assignEP("gone", "own")       // a pod of the "gone" node whose endpoint exists
	borrowed := assignEP("live", "borr") // a pod of a live node, in the gone node's block
	leaked := assign4(t, a, "gone", "leak.eth0")
	if _, err := s.Client.Delete(ctxT(t), Prefix+handleKey("leak.eth0")); err != nil {
		t.Fatal(err) // an allocation whose handle is gone: a real leak
	}
	r, err := a.Check(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.StaleBlocks) != 1 {
		t.Fatalf("check: want the gone node's block, got %+v", r)
	}
	msgs, err := a.Repair(ctxT(t), r, RepairOptions{})
	t.Logf("repair: %q, %v", msgs, err)
	for _, keep := range []HandleAddr{own, borrowed} {
		b, ok := readBlock(t, a, keep.Block)
		if !ok {
			t.Fatalf("repair deleted block %s that holds %s", keep.Block, keep.Addr)
		}
		if al := b.Allocations[mustOrd(b, keep.Addr)]; al == nil || al.Seq != keep.Seq {
			t.Errorf("repair freed %s, which a live pod holds", keep.Addr)
		}
	}
	b, _ := readBlock(t, a, leaked.Block)
	if b != nil && b.Allocations[mustOrd(b, leaked.Addr)] != nil {
		t.Errorf("repair kept the leaked %s", leaked.Addr)
	}
	// The operator says the node is gone for good: its pod's address goes,
	// the borrowed one stays in a block that no node claims any more...
	if r, err = a.Check(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	msgs, err = a.Repair(ctxT(t), r, RepairOptions{GoneNodes: []string{"gone"}})
	t.Logf("repair --gone-node gone: %q, %v", msgs, err)
	b, ok := readBlock(t, a, own.Block)
	if !ok || b.Affinity != "" || b.InUse() != 1 || b.Allocations[mustOrd(b, borrowed.Addr)] == nil {
		t.Fatalf("want the block kept without affinity holding only %s, got %+v", borrowed.Addr, b)
	}
	if k := keys(t, s.Client, "ipam/affinity/"); len(k) != 0 {
		t.Fatalf("claims left: %v", k)
	}
	if r, _ := a.Check(ctxT(t)); !r.Clean() {
		t.Fatalf("check after repair: %+v", r)
	}
	// ... and is deleted when the borrower releases it.
	if _, err := a.ReleaseHandle(ctxT(t), "borr.eth0"); err != nil {
		t.Fatal(err)
	}
	if k := keys(t, s.Client, "ipam/"); len(k) != 0 {
		t.Fatalf("left behind: %v", k)
	}
	if _, err := a.Repair(ctxT(t), CheckReport{}, RepairOptions{GoneNodes: []string{"live"}}); err == nil {
		t.Fatal("repair accepted a registered node as gone")
	}
}

// Defect 8: a block claimed while a pool is being deleted must not outlive
// the pool (an orphan block overlaps a pool re-created with another block
// size: a duplicate-address path).
func TestDeletePoolRacingClaims(t *testing.T) {
	s := etcdtest.Start(t)
	other := New(etcdgrpc.New(s.Client))
	other.Log = quietLog()
	addPool(t, other, "default", "10.244.0.0/16", nil)
	hs := &hookStore{Store: etcdgrpc.New(s.Client)}
	a := New(hs)
	a.Log = quietLog()
	// Just before DeletePool's first commit, another node claims a block.
	hs.beforeCommit = func() {
		if _, err := other.Assign(ctxT(t), AssignRequest{Handle: "racer.eth0", Node: "n2", IPv4: true}); err != nil {
			t.Logf("racing assign: %v", err)
		}
	}
	err := a.DeletePool(ctxT(t), "default", false)
	t.Logf("delete pool: %v", err)
	pools, _ := a.ListPools(ctxT(t))
	if len(pools) == 0 {
		if k := keys(t, s.Client, "ipam/blocks/"); len(k) != 0 {
			t.Fatalf("pool deleted but blocks remain: %v", k)
		}
		if k := keys(t, s.Client, "ipam/affinity/"); len(k) != 0 {
			t.Fatalf("pool deleted but claims remain: %v", k)
		}
	}
}

// TestDeletePoolUnderLoad deletes a pool (forced) while nodes keep
// claiming blocks from it: afterwards no block or claim of it is left.
func TestDeletePoolUnderLoad(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", func(p *conf.IPPool) { p.Spec.BlockSize = 30 })
	ctx, cancel := context.WithCancel(ctxT(t))
	var wg sync.WaitGroup
	for n := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				_, _ = a.Assign(ctx, AssignRequest{Handle: fmt.Sprintf("h%d-%d", n, i), Node: fmt.Sprintf("n%d", n), IPv4: true})
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	err := a.DeletePool(ctxT(t), "default", true)
	time.Sleep(300 * time.Millisecond) // assigns keep trying: the pool is gone
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatalf("forced delete: %v", err)
	}
	if k := keys(t, s.Client, "ipam/blocks/"); len(k) != 0 {
		t.Fatalf("pool deleted but %d blocks remain: %v", len(k), k[:min(len(k), 5)])
	}
	if k := keys(t, s.Client, "ipam/affinity/"); len(k) != 0 {
		t.Fatalf("pool deleted but %d claims remain", len(k))
	}
}

// hookStore runs beforeCommit once, just before the first commit.
type hookStore struct {
	*etcdgrpc.Store
	once         sync.Once
	beforeCommit func()
}

func (h *hookStore) Commit(ctx context.Context, ops ...Op) (bool, error) {
	h.once.Do(func() {
		if h.beforeCommit != nil {
			h.beforeCommit()
		}
	})
	return h.Store.Commit(ctx, ops...)
}

// Defect 11: the last borrower freeing its address empties another node's
// block; that block must become pendingDeletion like any emptied block.
func TestLastBorrowerFreesBlock(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "one", "10.9.0.0/26", nil)
	owner := assign4(t, a, "owner", "o.eth0")
	b := assign4(t, a, "borrower", "b.eth0")
	if b.Block != owner.Block {
		t.Fatalf("borrower got %s from %s, want the owner's block", b.Addr, b.Block)
	}
	for _, h := range []string{"o.eth0", "b.eth0"} {
		if _, err := a.ReleaseHandle(ctxT(t), h); err != nil {
			t.Fatal(err)
		}
	}
	res, err := a.Store.Read(ctxT(t), Get{Key: affinityKey("owner", owner.Block)})
	if err != nil || len(res[0]) == 0 {
		t.Fatalf("owner's claim: %v %v", res, err)
	}
	var af Affinity
	if err := decode(res[0][0], &af); err != nil {
		t.Fatal(err)
	}
	if af.State != AffinityPendingDeletion {
		t.Fatalf("empty block %s is %q, want %q", owner.Block, af.State, AffinityPendingDeletion)
	}
}

// Defect 11: a release that names an address and a sequence number must
// name the holder too; after a block is released and claimed again its
// sequence numbers start over, and a stale repair would free a new pod.
func TestStaleRepairAfterBlockReclaimed(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	a.EmptyBlockGrace = 0
	old := assign4(t, a, "n1", "old.eth0")
	stale := CheckReport{Leaks: []Leak{{IP: old.Addr.String(), Seq: old.Seq, Handle: "old.eth0", Node: "n1", Reason: "no endpoint"}}}
	if _, err := a.ReleaseHandle(ctxT(t), "old.eth0"); err != nil {
		t.Fatal(err)
	}
	if rel, err := a.ReleaseEmptyBlocks(ctxT(t), "n1"); err != nil || len(rel) != 1 {
		t.Fatalf("release empty block: %v %v", rel, err)
	}
	now := assign4(t, a, "n1", "new.eth0")
	if now.Addr != old.Addr || now.Seq != old.Seq {
		t.Fatalf("setup: want %s seq %d again, got %v", old.Addr, old.Seq, now)
	}
	msgs, err := a.Repair(ctxT(t), stale, RepairOptions{})
	t.Logf("stale repair: %q %v", msgs, err)
	if h, _ := a.HandleOf(ctxT(t), "new.eth0"); h == nil {
		t.Fatal("a stale repair of old.eth0 freed new.eth0's address")
	}
}

// Defect 11: DEL of an attachment whose handle name ADD would have refused
// holds nothing, so it succeeds instead of failing forever.
func TestReleaseUnusableHandleSucceeds(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	for _, h := range []string{strings.Repeat("a", 300) + ".eth0", "bad/id.eth0", "-x.eth0"} {
		if rel, err := a.ReleaseHandle(ctxT(t), h); err != nil || len(rel) != 0 {
			t.Errorf("release %.20q...: %v %v", h, rel, err)
		}
	}
}

func namedIPAMList(t *testing.T, name, endpoint string) *libcni.NetworkConfigList {
	t.Helper()
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{
		"cniVersion": "1.1.0", "name": %q,
		"plugins": [{"type": "brindle-ipam", "ipam": {"etcd_endpoints": %q, "nodename": "node-1"}}]}`, name, endpoint)))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func attachment(id, ifname string) types.GCAttachment {
	return types.GCAttachment{ContainerID: id, IfName: ifname}
}

func gcArgs(valid ...types.GCAttachment) *libcni.GCArgs {
	return &libcni.GCArgs{ValidAttachments: valid}
}

// Defect 15: during an etcd outage, DEL of an attachment that holds nothing
// any more (its addresses were released by an earlier DEL) succeeds, so the
// runtime can remove the sandbox; DEL of one that still holds an address
// fails with "try again later".
func TestDelDuringOutage(t *testing.T) {
	s := etcdtest.Start(t)
	a := allocOn(t, "grpc", s.Client)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	dir := t.TempDir()
	nf := filepath.Join(dir, "nodename")
	if err := os.WriteFile(nf, []byte("node-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "net",
		"plugins": [{"type": "brindle-ipam", "ipam": {"etcd_endpoints": %q, "nodename_file": %q, "timeout_seconds": 1}}]}`, s.Endpoint, nf)))
	if err != nil {
		t.Fatal(err)
	}
	cni := cniConfig(t)
	ctx := ctxT(t)
	for _, id := range []string{"released", "held"} {
		if _, err := cni.AddNetworkList(ctx, list, rtConf(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cni.DelNetworkList(ctx, list, rtConf("released")); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := cni.DelNetworkList(ctx, list, rtConf("released")); err != nil {
		t.Errorf("DEL of an attachment that holds nothing, etcd down: %v", err)
	}
	err = cni.DelNetworkList(ctx, list, rtConf("held"))
	var terr *types.Error
	if !errors.As(err, &terr) || terr.Code != types.ErrTryAgainLater {
		t.Errorf("DEL of an attachment that holds an address, etcd down: want code %d, got %v", types.ErrTryAgainLater, err)
	}
}

// Found by the kill -9 suite (test/faults): a DEL that decided from a
// stale copy of a block (the node-local state of a process that committed
// an ADD and was killed before it saved the state) that the block did not
// hold the handle's address deleted the handle anyway, without a guard on
// the block: the address leaked, allocated to a handle that no longer
// existed. The decision must be guarded by the block's revision.
func TestReleaseFromStaleNodeStateLeaksNothing(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	dir := t.TempDir()
	local := New(a.Store)
	local.Log = quietLog()
	local.Local = &NodeLocal{Dir: dir, Node: "n1"}
	assign4(t, local, "n1", "first.eth0") // the state now holds the block as this ADD left it
	// Another process's ADD commits, and dies before it can save the state.
	late := assign4(t, a, "n1", "late.eth0")
	if _, err := local.ReleaseHandle(ctxT(t), "late.eth0"); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.HandleOf(ctxT(t), "late.eth0"); h != nil {
		t.Fatalf("handle kept: %+v", h)
	}
	b, _ := readBlock(t, a, late.Block)
	if al := b.Allocations[mustOrd(b, late.Addr)]; al != nil {
		t.Fatalf("%s leaked: the block still holds it for %+v, whose handle is gone", late.Addr, al)
	}
	if r, _ := a.Check(ctxT(t)); len(r.Leaks) != 0 {
		t.Fatalf("check: %+v", r.Leaks)
	}
	_ = s
}
