package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// RepairOptions tune Repair.
type RepairOptions struct {
	// DryRun reports what would be done and changes nothing.
	DryRun bool
	// GoneNodes are nodes the operator says are gone for good, with their
	// pods: their endpoint records no longer count as a pod that still
	// exists. A node that has a node record cannot be named.
	GoneNodes []string
}

// repairer carries one Repair: the snapshot that decides what is in use,
// and the lines it reports.
type repairer struct {
	a     *Allocator
	ctx   context.Context
	o     RepairOptions
	s     *snapshotAll
	gone  map[string]bool
	lines []string
}

func (r *repairer) say(done, would string, args ...any) {
	verb := done
	if r.o.DryRun {
		verb = would
	}
	r.lines = append(r.lines, verb+" "+fmt.Sprintf(args[0].(string), args[1:]...))
}

// Repair releases what a Check found: leaked allocations (each only if it
// is still held by the handle under the sequence number Check saw), orphan
// endpoint records, and the blocks of nodes that no longer exist. It never
// frees an address that something still uses: an address held by a pod of
// another node (borrowed from the gone node's block), or one whose pod's
// endpoint record still exists (unless its node is in o.GoneNodes); such
// addresses are kept and the line says why. It returns a line per action.
func (a *Allocator) Repair(ctx context.Context, rep CheckReport, o RepairOptions) ([]string, error) {
	s, err := a.readAll(ctx)
	if err != nil {
		return nil, err
	}
	r := &repairer{a: a, ctx: ctx, o: o, s: s, gone: map[string]bool{}}
	for _, n := range o.GoneNodes {
		if s.nodes[n] {
			return nil, fmt.Errorf("node %s: it has a node record, so it is not gone (remove it with `brindlectl node delete %s` first)", n, n)
		}
		r.gone[n] = true
	}
	var errs []error
	seen := map[string]bool{}
	for _, l := range rep.Leaks {
		ip, err := netip.ParseAddr(l.IP)
		if err != nil {
			continue
		}
		seen[l.IP] = true
		if why := r.inUse(l.Handle, l.Node); why != "" {
			r.lines = append(r.lines, fmt.Sprintf("kept %s (handle %s: %s): in use, %s", l.IP, l.Handle, l.Reason, why))
			continue
		}
		if err := r.releaseIP(ip, l.Handle, l.Seq); err != nil {
			errs = append(errs, fmt.Errorf("release %s: %w", l.IP, err))
			continue
		}
		r.say("released", "would release", "%s (handle %s: %s)", l.IP, l.Handle, l.Reason)
	}
	for _, orphan := range rep.Orphans {
		if held := r.heldBy(orphan.ID); len(held) > 0 && !r.gone[orphan.Node] {
			r.lines = append(r.lines, fmt.Sprintf("kept endpoint %s/%s: %v still allocated to handle %s", orphan.Node, orphan.ID, held, orphan.ID))
			continue
		}
		if !o.DryRun {
			if _, err := a.Store.Commit(ctx, Op{Key: endpointKey(orphan.Node, orphan.ID), Delete: true, Rev: AnyRev}); err != nil {
				errs = append(errs, fmt.Errorf("delete endpoint %s/%s: %w", orphan.Node, orphan.ID, err))
				continue
			}
		}
		r.say("deleted", "would delete", "endpoint %s/%s", orphan.Node, orphan.ID)
	}
	for _, u := range rep.Unreadable {
		r.lines = append(r.lines, "left "+u+": not a record brindle wrote; look at it and delete it with etcdctl")
	}
	for _, sb := range rep.StaleBlocks {
		if err := r.staleBlock(sb, seen); err != nil {
			errs = append(errs, err)
		}
	}
	return r.lines, errors.Join(errs...)
}

// inUse says why the allocation of handle on node must be kept, or "".
func (r *repairer) inUse(handle, node string) string {
	if node == "" {
		if h := r.s.handles[handle]; h != nil {
			node = h.Node
		}
	}
	e := r.s.endpoints[node+"/"+handle]
	if e == nil || r.gone[node] {
		return ""
	}
	pod := ""
	if e.Pod != "" {
		pod = fmt.Sprintf(" (pod %s/%s)", e.Namespace, e.Pod)
	}
	return fmt.Sprintf("endpoint %s/%s exists%s; if node %s is gone for good, pass --gone-node %s", node, handle, pod, node, node)
}

// heldBy lists the addresses the blocks record for handle.
func (r *repairer) heldBy(handle string) []netip.Addr {
	var out []netip.Addr
	for _, b := range r.s.blocks {
		for i, al := range b.Allocations {
			if al != nil && al.Handle == handle {
				out = append(out, b.Addr(i))
			}
		}
	}
	return out
}

func (r *repairer) releaseIP(ip netip.Addr, handle string, seq uint64) error {
	if r.o.DryRun {
		return nil
	}
	return r.a.ReleaseIP(r.ctx, ip, handle, seq)
}

// staleBlock releases the block of a gone node: the addresses nothing uses
// are freed, and then the block with its claim. Addresses that are in use
// stay. When those are all held by pods of other nodes (borrowed), the
// block is kept without an affinity: no node claims it, the borrowers keep
// their addresses and announce them, and it is deleted when the last one
// is released.
func (r *repairer) staleBlock(sb StaleBlock, seen map[string]bool) error {
	c, err := netip.ParsePrefix(sb.CIDR)
	if err != nil {
		return err
	}
	res, err := r.a.Store.Read(r.ctx, Get{Key: blockKey(c)}, Get{Key: nodeKey(sb.Node)})
	if err != nil {
		return err
	}
	if len(res[1]) > 0 {
		return fmt.Errorf("block %s: node %s exists again; left alone", c, sb.Node)
	}
	if len(res[0]) == 0 {
		return nil
	}
	var b Block
	if err := decode(res[0][0], &b); err != nil {
		return err
	}
	ownInUse, borrowed := 0, 0
	for i, al := range b.Allocations {
		ip := b.Addr(i)
		if al == nil || seen[ip.String()] {
			continue
		}
		if h := r.s.handles[al.Handle]; h != nil && h.Node != sb.Node {
			borrowed++
			r.lines = append(r.lines, fmt.Sprintf("kept %s in block %s of gone node %s: in use by handle %s of node %s", ip, c, sb.Node, al.Handle, h.Node))
			continue
		}
		if why := r.inUse(al.Handle, sb.Node); why != "" {
			ownInUse++
			r.lines = append(r.lines, fmt.Sprintf("kept %s (handle %s on gone node %s): in use, %s", ip, al.Handle, sb.Node, why))
			continue
		}
		if err := r.releaseIP(ip, al.Handle, al.Seq); err != nil {
			return fmt.Errorf("block %s: release %s: %w", c, ip, err)
		}
		r.say("released", "would release", "%s (handle %s on gone node %s)", ip, al.Handle, sb.Node)
	}
	switch {
	case ownInUse > 0:
		r.lines = append(r.lines, fmt.Sprintf("kept block %s of gone node %s: %d of its addresses are in use there", c, sb.Node, ownInUse))
		return nil
	case r.o.DryRun && borrowed > 0:
		r.say("", "would keep", "block %s without an affinity: %d addresses are borrowed by other nodes", c, borrowed)
		return nil
	case r.o.DryRun:
		r.say("", "would release", "block %s of gone node %s", c, sb.Node)
		return nil
	}
	// Read again: the releases above changed it.
	res, err = r.a.Store.Read(r.ctx, Get{Key: blockKey(c)})
	if err != nil || len(res[0]) == 0 {
		return err
	}
	if err := decode(res[0][0], &b); err != nil {
		return err
	}
	ops := []Op{{Key: affinityKey(sb.Node, c), Delete: true, Rev: AnyRev}}
	what := fmt.Sprintf("released block %s of gone node %s", c, sb.Node)
	if b.InUse() == 0 {
		ops = append(ops, Op{Key: blockKey(c), Delete: true, Rev: res[0][0].ModRevision})
	} else {
		for _, al := range b.Allocations {
			if h := r.s.handles[al.handleOrEmpty()]; al != nil && (h == nil || h.Node == sb.Node) {
				return fmt.Errorf("block %s: addresses were allocated meanwhile; left alone", c)
			}
		}
		b.Affinity = ""
		ops = append(ops, Op{Key: blockKey(c), Value: mustJSON(b), Rev: res[0][0].ModRevision})
		what = fmt.Sprintf("kept block %s without an affinity: %d addresses are borrowed by other nodes", c, b.InUse())
	}
	ok, err := r.a.Store.Commit(r.ctx, ops...)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("block %s: changed meanwhile; left alone", c)
	}
	r.lines = append(r.lines, what)
	return nil
}

func (al *Allocation) handleOrEmpty() string {
	if al == nil {
		return ""
	}
	return al.Handle
}
