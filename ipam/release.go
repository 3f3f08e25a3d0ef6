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
	if err := checkName("handle", handle); err != nil {
		return nil, unperm(err)
	}
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
		t, err := a.readForRelease(ctx, h)
		if err != nil {
			return false, err
		}
		for _, ha := range h.Addrs {
			if t.free(ha, handle) {
				released = append(released, ha)
			}
		}
		ops := append(t.ops(),
			Op{Key: handleKey(handle), Delete: true, Rev: res[0][0].ModRevision},
			Op{Key: endpointKey(h.Node, handle), Delete: true, Rev: AnyRev})
		return a.Store.Commit(ctx, ops...)
	})
	return released, err
}

// readForRelease reads the blocks holding the handle's addresses and the
// handle's node's claims on them, in one round trip.
func (a *Allocator) readForRelease(ctx context.Context, h Handle) (*txn, error) {
	t := &txn{a: a, ctx: ctx, node: h.Node,
		blocks: map[netip.Prefix]*blockRec{}, affs: map[netip.Prefix]*affRec{},
		dirty: map[netip.Prefix]bool{}, dirtyAff: map[netip.Prefix]bool{}}
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

// ReleaseIP frees one address, but only if its current allocation has
// sequence number seq; otherwise it returns ErrStaleSeq and changes nothing.
// The holding handle loses the address (and is deleted with its endpoint
// when it held nothing else).
func (a *Allocator) ReleaseIP(ctx context.Context, ip netip.Addr, seq uint64) error {
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
		if al.Seq != seq {
			return false, perm("%w: ip %s is allocation #%d (handle %q), not #%d", ErrStaleSeq, ip, al.Seq, al.Handle, seq)
		}
		hres, err := a.Store.Read(ctx, Get{Key: handleKey(al.Handle)})
		if err != nil {
			return false, err
		}
		handle := al.Handle
		b.release(ord, handle, seq)
		ops := []Op{{Key: blockKey(c), Value: mustJSON(b), Rev: t.blocks[c].rev}}
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
