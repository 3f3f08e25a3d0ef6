package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
)

// ReleaseHandle frees every address the handle holds and deletes the handle
// and its endpoint record. A handle that does not exist is not an error, so
// DEL can be repeated. Each address is freed only if it is still held by
// this handle under the sequence number the handle recorded.
func (a *Allocator) ReleaseHandle(ctx context.Context, handle string) ([]HandleAddr, error) {
	if !safeName(handle) {
		// Assign refuses such a name, so nothing can be held under it:
		// the DEL has nothing to do and must not fail forever.
		a.Log.Debug("release: handle cannot name an allocation; nothing to release", "handle", handle)
		return nil, nil
	}
	if a.Local != nil {
		return a.Local.run(ctx, a, &pending{req: request{Release: handle}})
	}
	return a.releaseHandle(ctx, handle)
}

// releaseHandle is ReleaseHandle on its own transaction.
func (a *Allocator) releaseHandle(ctx context.Context, handle string) ([]HandleAddr, error) {
	return a.ReleaseHandleIf(ctx, handle, nil)
}

// ReleaseHandleIf is ReleaseHandle on its own transaction, made only if
// cond (when not nil) holds for the handle as read in that transaction:
// the commit is guarded by the handle's revision, so a handle that changes
// after cond was judged is judged again.
func (a *Allocator) ReleaseHandleIf(ctx context.Context, handle string, cond func(*Handle) bool) ([]HandleAddr, error) {
	var released []HandleAddr
	err := a.retry(ctx, "release "+handle, func() (bool, error) {
		released = nil
		res, err := a.Store.Read(ctx, Get{Key: handleKey(handle)})
		if err != nil {
			return false, err
		}
		if len(res[0]) == 0 {
			return true, nil
		}
		var h Handle
		if err := decode(res[0][0], &h); err != nil {
			return false, err
		}
		if cond != nil && !cond(&h) {
			return true, nil
		}
		t, err := a.readForRelease(ctx, h)
		if err != nil {
			return false, err
		}
		for _, ha := range h.Addrs {
			if t.free(ha, handle) {
				released = append(released, ha)
			}
		}
		emptied, err := a.emptiedElsewhere(ctx, t)
		if err != nil {
			return false, err
		}
		ops := append(append(append(t.ops(), emptied...), t.heldGuards(h.Addrs)...),
			Op{Key: handleKey(handle), Delete: true, Rev: res[0][0].ModRevision},
			Op{Key: endpointKey(h.Node, handle), Delete: true, Rev: AnyRev})
		return a.Store.Commit(ctx, ops...)
	})
	return released, err
}

// heldGuards guards the blocks in which a release found the handle's
// addresses not held (and so wrote nothing): that finding may come from a
// copy that is behind (a serializable read, the node-local state of a
// process killed after its commit), and deleting the handle on it without
// a guard would leave the address allocated to a handle that no longer
// exists. With the guard, a stale copy fails the commit, which returns the
// current block, and the release is made again from it.
func (t *txn) heldGuards(addrs []HandleAddr) []Op {
	var ops []Op
	seen := map[netip.Prefix]bool{}
	for _, ha := range addrs {
		if t.dirty[ha.Block] || seen[ha.Block] {
			continue
		}
		seen[ha.Block] = true
		rev := MustNotExist
		if r := t.blocks[ha.Block]; r != nil {
			rev = r.rev
		}
		ops = append(ops, Op{Key: blockKey(ha.Block), Rev: rev})
	}
	return ops
}

// readForRelease reads the blocks holding the handle's addresses and the
// handle's node's claims on them, in one round trip.
func (a *Allocator) readForRelease(ctx context.Context, h Handle) (*txn, error) {
	t := a.newTxn(ctx, nil, h.Node)
	var gets []Get
	for _, ha := range h.Addrs {
		gets = append(gets, Get{Key: blockKey(ha.Block)}, Get{Key: affinityKey(h.Node, ha.Block)})
	}
	res, err := a.Store.Read(ctx, gets...)
	if err != nil {
		return nil, err
	}
	for i, ha := range h.Addrs {
		for _, kv := range res[2*i] {
			if err := t.addBlock(kv); err != nil {
				return nil, err
			}
		}
		for _, kv := range res[2*i+1] {
			var af Affinity
			if err := decode(kv, &af); err != nil {
				return nil, err
			}
			t.affs[ha.Block] = &affRec{a: af, rev: kv.ModRevision}
		}
	}
	return t, nil
}

// free releases one address if handle still holds it under ha.Seq. When the
// node's own block becomes empty, its claim is marked pendingDeletion so GC
// can release it after the grace period.
func (t *txn) free(ha HandleAddr, handle string) bool {
	r := t.blocks[ha.Block]
	if r == nil {
		t.a.Log.Warn("release: block is gone", "handle", handle, "ip", ha.Addr, "block", ha.Block)
		return false
	}
	ord, ok := r.b.Ordinal(ha.Addr)
	if !ok || !r.b.release(ord, handle, ha.Seq) {
		t.a.Log.Warn("release: address no longer held by this handle; left alone", "handle", handle, "ip", ha.Addr, "seq", ha.Seq)
		return false
	}
	t.dirty[ha.Block] = true
	if ar := t.affs[ha.Block]; ar != nil && r.b.InUse() == 0 && r.b.Affinity == t.node && ar.a.State == AffinityConfirmed {
		ar.a.State, ar.a.Since = AffinityPendingDeletion, t.a.Now().UTC()
		t.dirtyAff[ha.Block] = true
	}
	return true
}

// emptiedElsewhere returns the writes for blocks t emptied that are not
// the releasing node's own: a borrower freeing the last address of another
// node's block marks that block's claim pendingDeletion (read here, one
// more round trip in that rare case), and an emptied block that no node
// claims any more (its node was removed by `ipam release`) is deleted.
// Those blocks' own writes are taken out of t.
func (a *Allocator) emptiedElsewhere(ctx context.Context, t *txn) ([]Op, error) {
	var ops []Op
	var owners []netip.Prefix
	for c := range t.dirty {
		b := t.blocks[c].b
		switch {
		case b.InUse() > 0 || b.Affinity == t.node:
		case b.Affinity == "":
			ops = append(ops, Op{Key: blockKey(c), Delete: true, Rev: t.blocks[c].rev})
			delete(t.dirty, c)
		default:
			owners = append(owners, c)
		}
	}
	if len(owners) == 0 {
		return ops, nil
	}
	var gets []Get
	for _, c := range owners {
		gets = append(gets, Get{Key: affinityKey(t.blocks[c].b.Affinity, c)})
	}
	res, err := a.Store.Read(ctx, gets...)
	if err != nil {
		return nil, err
	}
	for i := range owners {
		for _, kv := range res[i] {
			var af Affinity
			if err := decode(kv, &af); err != nil {
				return nil, err
			}
			if af.State != AffinityConfirmed {
				continue
			}
			af.State, af.Since = AffinityPendingDeletion, a.Now().UTC()
			ops = append(ops, Op{Key: kv.Key, Value: mustJSON(af), Rev: kv.ModRevision})
		}
	}
	return ops, nil
}

// ReleaseIP frees one address, but only if its current allocation is held
// by handle under sequence number seq; otherwise it returns ErrStaleSeq and
// changes nothing. Both are compared: a block released and claimed again
// numbers its allocations from 1 again, so a sequence number alone can name
// a new pod's allocation. The holding handle loses the address (and is
// deleted with its endpoint when it held nothing else).
func (a *Allocator) ReleaseIP(ctx context.Context, ip netip.Addr, handle string, seq uint64) error {
	return a.retry(ctx, "release "+ip.String(), func() (bool, error) {
		c, err := a.findBlock(ctx, ip)
		if err != nil {
			return false, err
		}
		res, err := a.Store.Read(ctx, Get{Key: blockKey(c)})
		if err != nil {
			return false, err
		}
		if len(res[0]) == 0 {
			return false, nil // deleted since findBlock; look again
		}
		t := &txn{a: a, ctx: ctx, blocks: map[netip.Prefix]*blockRec{}, affs: map[netip.Prefix]*affRec{},
			dirty: map[netip.Prefix]bool{}, dirtyAff: map[netip.Prefix]bool{}}
		if err := t.addBlock(res[0][0]); err != nil {
			return false, err
		}
		b := t.blocks[c].b
		ord, _ := b.Ordinal(ip)
		al := b.Allocations[ord]
		if al == nil {
			return false, perm("%w: ip %s is not allocated", ErrStaleSeq, ip)
		}
		if al.Seq != seq || al.Handle != handle {
			return false, perm("%w: ip %s is allocation #%d of handle %q, not #%d of %q", ErrStaleSeq, ip, al.Seq, al.Handle, seq, handle)
		}
		hres, err := a.Store.Read(ctx, Get{Key: handleKey(al.Handle)})
		if err != nil {
			return false, err
		}
		b.release(ord, handle, seq)
		ops := []Op{{Key: blockKey(c), Value: mustJSON(b), Rev: t.blocks[c].rev}}
		if b.InUse() == 0 && b.Affinity == "" {
			ops[0] = Op{Key: blockKey(c), Delete: true, Rev: t.blocks[c].rev}
		}
		if len(hres[0]) > 0 {
			var h Handle
			if err := decode(hres[0][0], &h); err != nil {
				return false, err
			}
			h.Addrs = slices.DeleteFunc(h.Addrs, func(x HandleAddr) bool { return x.Addr == ip })
			rev := hres[0][0].ModRevision
			if len(h.Addrs) == 0 {
				ops = append(ops, Op{Key: handleKey(handle), Delete: true, Rev: rev},
					Op{Key: endpointKey(h.Node, handle), Delete: true, Rev: AnyRev})
			} else {
				ops = append(ops, Op{Key: handleKey(handle), Value: mustJSON(h), Rev: rev})
			}
		}
		return a.Store.Commit(ctx, ops...)
	})
}

// findBlock returns the stored block that contains ip.
func (a *Allocator) findBlock(ctx context.Context, ip netip.Addr) (netip.Prefix, error) {
	res, err := a.Store.Read(ctx, Get{Key: blocksPrefix, Prefix: true, KeysOnly: true})
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, kv := range res[0] {
		if c, err := parseCIDRKey(kv.Key[len(blocksPrefix):]); err == nil && c.Contains(ip) {
			return c, nil
		}
	}
	return netip.Prefix{}, perm("ip %s: not in any allocated block", ip)
}

// ReleaseEmptyBlocks deletes the node's claims on blocks that have been empty
// (pendingDeletion) for longer than the grace period, and claims whose
// block is gone. It returns the blocks released.
func (a *Allocator) ReleaseEmptyBlocks(ctx context.Context, node string) ([]netip.Prefix, error) {
	res, err := a.Store.Read(ctx, Get{Key: nodeAffinityPrefix(node), Prefix: true})
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, kv := range res[0] {
		c, err := parseCIDRKey(kv.Key[len(nodeAffinityPrefix(node)):])
		if err != nil {
			continue
		}
		var af Affinity
		if err := decode(kv, &af); err != nil {
			return out, err
		}
		if af.State != AffinityPendingDeletion || a.Now().Sub(af.Since) < a.EmptyBlockGrace {
			continue
		}
		br, err := a.Store.Read(ctx, Get{Key: blockKey(c)})
		if err != nil {
			return out, err
		}
		ops := []Op{{Key: kv.Key, Delete: true, Rev: kv.ModRevision}}
		if len(br[0]) > 0 {
			var b Block
			if err := decode(br[0][0], &b); err != nil {
				return out, err
			}
			if b.InUse() > 0 || b.Affinity != node {
				continue
			}
			ops = append(ops, Op{Key: blockKey(c), Delete: true, Rev: br[0][0].ModRevision})
		}
		// A conflict means the block was used again: leave it claimed.
		ok, err := a.Store.Commit(ctx, ops...)
		if err != nil {
			return out, fmt.Errorf("release block %s: %w", c, err)
		}
		if ok {
			out = append(out, c)
		}
	}
	return out, nil
}
