package ipam

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strconv"
)

// Attributes of a sticky handle: the StatefulSet replica whose addresses it
// keeps across the pod's recreation, on any node.
const (
	AttrSticky         = "sticky" // "true"
	AttrStatefulSet    = "statefulSet"
	AttrStatefulSetUID = "statefulSetUID"
	AttrOrdinal        = "ordinal"
)

// StickyHandleID is the handle of a sticky StatefulSet pod's interface. It
// names the pod (namespace, name) rather than the sandbox, so that the pod
// recreated under the same name finds its addresses again.
func StickyHandleID(namespace, pod, ifName string) string {
	return "sticky." + namespace + "." + pod + "." + ifName
}

// IsSticky reports whether h keeps a StatefulSet pod's addresses.
func IsSticky(h *Handle) bool { return h.Attrs[AttrSticky] == "true" }

// StickyAttrs are the attributes that make a handle sticky.
func StickyAttrs(attrs map[string]string, statefulSet, uid string, ordinal int) map[string]string {
	out := maps.Clone(attrs)
	if out == nil {
		out = map[string]string{}
	}
	out[AttrSticky], out[AttrStatefulSet], out[AttrStatefulSetUID], out[AttrOrdinal] = "true", statefulSet, uid, strconv.Itoa(ordinal)
	return out
}

// reattach gives an existing sticky handle to the attachment req is for:
// the pod recreated (same name), on this node or another. The handle keeps
// its addresses; its node, container and attributes become req's, the
// endpoint moves to req's node (a borrowed /32 there when the block is
// another node's). A repeated ADD of the same attachment writes nothing.
func (t *txn) reattach(hr *handleRec, req *AssignRequest) ([]Op, error) {
	old := hr.h
	if old.Node == req.Node && old.Attrs[AttrContainerID] == req.Attrs[AttrContainerID] {
		return nil, nil
	}
	if old.Attrs[AttrStatefulSetUID] != req.Attrs[AttrStatefulSetUID] {
		t.a.Log.Info("sticky addresses taken over by a StatefulSet of the same name", "handle", old.ID,
			"oldUID", old.Attrs[AttrStatefulSetUID], "newUID", req.Attrs[AttrStatefulSetUID])
	}
	h := *old
	h.Node, h.Attrs = req.Node, req.Attrs
	ops := []Op{{Key: handleKey(h.ID), Value: mustJSON(h), Rev: hr.rev}}
	if old.Node != req.Node {
		ops = append(ops, Op{Key: endpointKey(old.Node, h.ID), Delete: true, Rev: AnyRev})
	}
	if req.Endpoint != nil {
		ep := *req.Endpoint
		ep.V, ep.Node = SchemaVersion, req.Node
		for _, ha := range h.Addrs {
			ep.Addresses = append(ep.Addresses, netip.PrefixFrom(ha.Addr, ha.Addr.BitLen()).String())
		}
		ops = append(ops, Op{Key: endpointKey(req.Node, h.ID), Value: mustJSON(ep), Rev: AnyRev})
	}
	// The blocks' record of who holds each address follows.
	for _, ha := range h.Addrs {
		if t.blocks[ha.Block] == nil {
			if err := t.readBlocks(ha.Block); err != nil {
				return nil, err
			}
		}
		r := t.blocks[ha.Block]
		if r == nil {
			return nil, perm("sticky handle %q: block %s of %s is gone", h.ID, ha.Block, ha.Addr)
		}
		ord, ok := r.b.Ordinal(ha.Addr)
		if al := r.b.Allocations[ord]; ok && al != nil && al.Handle == h.ID && al.Seq == ha.Seq {
			al.Attrs = req.Attrs
			t.dirty[ha.Block] = true
		}
	}
	t.a.Log.Info("sticky addresses attached", "handle", h.ID, "node", req.Node, "fromNode", old.Node,
		"container", req.Attrs[AttrContainerID], "ips", addrsOf(h.Addrs))
	return ops, nil
}

// DetachSticky is DEL for a sticky pod: the addresses stay with the handle
// (for the pod's next incarnation) but the endpoint goes, so the node
// stops routing them. Only the attachment that holds the handle detaches
// it (containerID), so a late DEL of an old sandbox changes nothing; an
// empty containerID detaches whatever holds it. It reports whether it did.
func (a *Allocator) DetachSticky(ctx context.Context, id, containerID string) (bool, error) {
	if !safeName(id) {
		return false, nil
	}
	detached := false
	err := a.retry(ctx, "detach "+id, func() (bool, error) {
		detached = false
		res, err := a.Store.Read(ctx, Get{Key: handleKey(id)})
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
		cur := h.Attrs[AttrContainerID]
		if !IsSticky(&h) || cur == "" || containerID != "" && cur != containerID {
			return true, nil
		}
		h.Attrs = maps.Clone(h.Attrs)
		h.Attrs[AttrContainerID] = ""
		ops := []Op{{Key: handleKey(id), Value: mustJSON(h), Rev: res[0][0].ModRevision},
			{Key: endpointKey(h.Node, id), Delete: true, Rev: AnyRev}}
		// The blocks' record of each address says it is detached too.
		var gets []Get
		for _, ha := range h.Addrs {
			gets = append(gets, Get{Key: blockKey(ha.Block)})
		}
		bres, err := a.Store.Read(ctx, gets...)
		if err != nil {
			return false, err
		}
		for i, ha := range h.Addrs {
			for _, kv := range bres[i] {
				var b Block
				if err := decode(kv, &b); err != nil {
					return false, err
				}
				ord, ok := b.Ordinal(ha.Addr)
				if al := b.Allocations[ord]; ok && al != nil && al.Handle == id && al.Seq == ha.Seq {
					al.Attrs = h.Attrs
					ops = append(ops, Op{Key: kv.Key, Value: mustJSON(b), Rev: kv.ModRevision})
				}
			}
		}
		detached = true
		return a.Store.Commit(ctx, ops...)
	})
	if err != nil {
		return false, fmt.Errorf("detach sticky handle %s: %w", id, err)
	}
	return detached, nil
}
