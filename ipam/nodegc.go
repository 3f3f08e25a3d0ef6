package ipam

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// NodeRelease says what ReleaseNode did.
type NodeRelease struct {
	// Released are the handles whose addresses were freed (pods, the
	// tunnel address).
	Released []*Handle
	// Detached are sticky handles whose pods were on the node: they keep
	// their addresses for the pods' next incarnation, on another node.
	Detached []string
	// FreedIPs are addresses of the node's blocks that no handle held.
	FreedIPs int
	// Blocks are the node's blocks deleted; Unclaimed those kept without
	// an affinity because addresses in them are still held (sticky, or
	// borrowed by pods of other nodes).
	Blocks, Unclaimed []string
	// Endpoints are the endpoint records deleted.
	Endpoints int
}

// ReleaseNode gives back everything a node that left the cluster holds:
// its pods' and its tunnel's addresses (sticky addresses are only
// detached), the addresses of its blocks that nothing holds, its blocks
// and claims (a block that still holds addresses stays, unclaimed), and
// its endpoint records. Every step is guarded like any release, so an
// address in use elsewhere is never freed. The caller deletes the node
// record afterwards. Running it again finishes what an interrupted run left.
func (a *Allocator) ReleaseNode(ctx context.Context, node string) (NodeRelease, error) {
	var out NodeRelease
	if err := checkName("node", node); err != nil {
		return out, unperm(err)
	}
	s, err := a.readAll(ctx)
	if err != nil {
		return out, err
	}
	var errs []error
	for _, h := range s.handles {
		if h.Node != node {
			continue
		}
		if IsSticky(h) {
			// Only the attachment seen on this node: a pod that came back
			// elsewhere meanwhile holds the handle under another container.
			if cid := h.Attrs[AttrContainerID]; cid != "" {
				if _, err := a.DetachSticky(ctx, h.ID, cid); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			out.Detached = append(out.Detached, h.ID)
			continue
		}
		if _, err := a.releaseHandle(ctx, h.ID); err != nil {
			errs = append(errs, fmt.Errorf("release %s: %w", h.ID, err))
			continue
		}
		out.Released = append(out.Released, h)
	}
	for _, b := range s.blocks {
		if b.Affinity != node {
			continue
		}
		for i, al := range b.Allocations {
			if al == nil || s.handles[al.Handle] != nil {
				continue
			}
			if err := a.ReleaseIP(ctx, b.Addr(i), al.Handle, al.Seq); err != nil && !errors.Is(err, ErrStaleSeq) {
				errs = append(errs, fmt.Errorf("release %s: %w", b.Addr(i), err))
				continue
			}
			out.FreedIPs++
		}
		kept, err := a.unclaimBlock(ctx, node, b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if kept {
			out.Unclaimed = append(out.Unclaimed, b.CIDR.String())
		} else {
			out.Blocks = append(out.Blocks, b.CIDR.String())
		}
	}
	// Claims without a block, and endpoints left over.
	res, err := a.Store.Read(ctx, Get{Key: nodeAffinityPrefix(node), Prefix: true, KeysOnly: true},
		Get{Key: endpointPrefix + node + "/", Prefix: true, KeysOnly: true})
	if err != nil {
		return out, errors.Join(append(errs, err)...)
	}
	var ops []Op
	for _, kv := range append(res[0], res[1]...) {
		ops = append(ops, Op{Key: kv.Key, Delete: true, Rev: AnyRev})
		if strings.HasPrefix(kv.Key, endpointPrefix) {
			out.Endpoints++
		}
	}
	if len(ops) > 0 {
		if _, err := a.Store.Commit(ctx, ops...); err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// unclaimBlock deletes the node's block with its claim, or, when the block
// still holds addresses (sticky, or borrowed by other nodes' pods), keeps
// it without an affinity: no node claims it, its holders keep announcing
// their /32s, and the release of the last one deletes it.
func (a *Allocator) unclaimBlock(ctx context.Context, node string, b *Block) (kept bool, err error) {
	err = a.retry(ctx, "unclaim "+b.CIDR.String(), func() (bool, error) {
		res, err := a.Store.Read(ctx, Get{Key: blockKey(b.CIDR)})
		if err != nil {
			return false, err
		}
		ops := []Op{{Key: affinityKey(node, b.CIDR), Delete: true, Rev: AnyRev}}
		if len(res[0]) == 0 {
			_, err := a.Store.Commit(ctx, ops...)
			return err == nil, err
		}
		var cur Block
		if err := decode(res[0][0], &cur); err != nil {
			return false, err
		}
		if cur.Affinity != node {
			return true, nil // claimed again meanwhile: not ours to touch
		}
		kept = cur.InUse() > 0
		if kept {
			cur.Affinity = ""
			ops = append(ops, Op{Key: blockKey(b.CIDR), Value: mustJSON(cur), Rev: res[0][0].ModRevision})
		} else {
			ops = append(ops, Op{Key: blockKey(b.CIDR), Delete: true, Rev: res[0][0].ModRevision})
		}
		return a.Store.Commit(ctx, ops...)
	})
	return kept, err
}

// ListHandles returns every handle.
func (a *Allocator) ListHandles(ctx context.Context) ([]*Handle, error) {
	res, err := a.Store.Read(ctx, Get{Key: handlesPrefix, Prefix: true})
	if err != nil {
		return nil, err
	}
	out := make([]*Handle, 0, len(res[0]))
	for _, kv := range res[0] {
		var h Handle
		if err := decode(kv, &h); err != nil {
			return nil, err
		}
		out = append(out, &h)
	}
	return out, nil
}
