package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// request is one attachment's ADD (Assign) or DEL (Release, a handle), as
// the node-local queue carries it between processes.
type request struct {
	Assign  *AssignRequest `json:"assign,omitempty"`
	Release string         `json:"release,omitempty"`
}

func (r request) handle() string {
	if r.Assign != nil {
		return r.Assign.Handle
	}
	return r.Release
}

// pending is a request in a batch and, once the batch has run, its outcome.
type pending struct {
	req      request
	ip4, ip6 []netip.Addr // requested addresses by family (assign only)
	// planned is the outcome of the current attempt; out and err are final.
	planned []HandleAddr
	out     []HandleAddr
	err     error
	done    bool
	// foreign marks a release of another node's handle, made on its own
	// after the batch (its blocks and claims are that node's).
	foreign bool
	// fromHandle marks an ADD answered with what its handle already holds,
	// or a DEL that found no handle: both write nothing, so no guard checks
	// the read they were decided on.
	fromHandle bool
}

// runBatch makes every request of ps (all for node) in one transaction:
// one read (none when rc already holds what is needed) and one guarded
// commit, retried as a whole on conflict. A request that cannot succeed
// (bad input, no free address) gets its own error in err and is left out;
// the others go ahead. runBatch returns an error only when no request
// could be decided (etcd unreachable, deadline).
func (a *Allocator) runBatch(ctx context.Context, node string, ps []*pending, rc *readCache) error {
	// The block hints are needed only by an attempt that reads: one that
	// starts from the node-local state knows the node's blocks. They are
	// loaded when the first such attempt comes (after a reset, perhaps).
	var hint []netip.Prefix
	hintLoaded := false
	what := fmt.Sprintf("%d calls on node %s", len(ps), node)
	if len(ps) == 1 {
		what = ps[0].what()
	}
	var last *txn
	err := a.retry(ctx, what, func() (bool, error) {
		for {
			live := slices.DeleteFunc(slices.Clone(ps), func(p *pending) bool { return p.done })
			if len(live) == 0 {
				return true, nil
			}
			if !rc.fromState && !hintLoaded && a.Hints != nil {
				hint, hintLoaded = a.Hints.Load(node), true
			}
			handles := make([]string, len(live))
			for i, p := range live {
				handles[i] = p.req.handle()
			}
			t, err := a.begin(ctx, rc, node, handles, hint)
			if err != nil {
				rc.reset()
				return false, err
			}
			last = t
			ops, failed, err := t.plan(live)
			if err != nil {
				rc.reset()
				return false, err
			}
			if !rc.linearizable && slices.ContainsFunc(live, func(p *pending) bool { return p.fromHandle }) {
				// Returning a handle's addresses writes nothing, so no
				// guard would catch a stale read (a member that has not
				// applied the DEL of this handle would hand back freed
				// addresses): confirm against the current state.
				rc.reset()
				rc.linearizable = true
				return false, errRetryNow
			}
			if failed != nil {
				if !rc.linearizable {
					// What was read may be stale (a serializable read, a
					// member catching up, the node-local state): confirm a
					// refusal against the current state before giving it.
					rc.reset()
					rc.linearizable = true
					return false, errRetryNow
				}
				failed.err, failed.done = unperm(failed.err), true
				continue // plan the others again, from the same reads
			}
			if len(ops) > 0 {
				if ok, err := a.commit(ctx, rc, ops); !ok {
					return false, err
				}
			}
			for _, p := range live {
				p.out, p.done = p.planned, true
			}
			return true, nil
		}
	})
	if err == nil && hintLoaded && last != nil {
		if blocks := sortedPrefixes(last.affs); !slices.Equal(blocks, hint) {
			a.Hints.Save(node, blocks)
		}
	}
	for _, p := range ps {
		if p.foreign && err == nil {
			p.out, p.err = a.releaseHandle(ctx, p.req.Release)
		}
	}
	return err
}

// plan applies every live request to t and returns the writes of all of
// them. A request refused for good is returned as failed, with its error
// in err; t is then spoilt and the caller plans again without it. Requests
// for the same handle must not share a batch.
func (t *txn) plan(live []*pending) (ops []Op, failed *pending, err error) {
	var own []Op
	assigned, released := false, false
	for _, p := range live {
		p.planned, p.err, p.fromHandle = nil, nil, false
		if p.req.Assign == nil {
			rops, freed, err := t.releaseReq(p)
			if err != nil {
				return nil, nil, err
			}
			p.planned, own = freed, append(own, rops...)
			released = released || len(rops) > 0
			continue
		}
		got, aops, err := t.assignReq(p)
		if err != nil {
			var pe permanent
			if errors.As(err, &pe) {
				p.err = err
				return nil, p, nil
			}
			return nil, nil, err
		}
		p.planned, own = got, append(own, aops...)
		assigned = assigned || len(aops) > 0
	}
	if released {
		// Blocks of other nodes emptied by a release (see ReleaseHandle).
		emptied, err := t.a.emptiedElsewhere(t.ctx, t)
		if err != nil {
			return nil, nil, err
		}
		own = append(own, emptied...)
	}
	ops = append(t.ops(), own...)
	if assigned {
		ops = append(ops, t.guards()...)
	}
	return ops, nil, nil
}

// releaseReq frees what the handle holds, as ReleaseHandle does, and
// returns the deletes of the handle and its endpoint.
func (t *txn) releaseReq(p *pending) ([]Op, []HandleAddr, error) {
	handle := p.req.Release
	hr := t.handles[handle]
	p.foreign = hr != nil && hr.h.Node != t.node
	p.fromHandle = hr == nil // "holds nothing" writes nothing: confirmed like an ADD's answer
	if hr == nil || p.foreign {
		return nil, nil, nil // nothing held (DEL can be repeated), or not this node's
	}
	var released []HandleAddr
	for _, ha := range hr.h.Addrs {
		if t.blocks[ha.Block] == nil {
			if err := t.readBlocks(ha.Block); err != nil {
				return nil, nil, err
			}
		}
		if t.free(ha, handle) {
			released = append(released, ha)
		}
	}
	return append(t.heldGuards(hr.h.Addrs),
		Op{Key: handleKey(handle), Delete: true, Rev: hr.rev},
		Op{Key: endpointKey(hr.h.Node, handle), Delete: true, Rev: AnyRev},
	), released, nil
}
