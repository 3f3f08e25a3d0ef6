package ipam

import (
	"context"
	"slices"
	"strings"

	"github.com/brindle-net/brindle/ipam/store"
)

// reader is the read half of a Store.
type reader interface {
	Read(ctx context.Context, gets ...Get) ([][]KV, error)
}

// readCache serves the retries of one Assign. Reads are remembered; after
// a commit whose guards failed, the guarded keys' current values (returned
// by the same round trip) are written into them, so the next attempt needs
// no read at all. Only guarded keys can make a commit fail, so the cache
// never holds a stale value that could make it fail again.
type readCache struct {
	s    Store
	gets map[Get][]KV
	// linearizable turns serializable reads off, to confirm a refusal.
	linearizable bool
	// fromState: filled from the node-local state, which knows the node's
	// blocks (the block hints are not needed).
	fromState bool
}

func newReadCache(s Store) *readCache { return &readCache{s: s, gets: map[Get][]KV{}} }

// Read implements reader, going to the store only for gets not seen before.
func (c *readCache) Read(ctx context.Context, gets ...Get) ([][]KV, error) {
	out := make([][]KV, len(gets))
	var miss []Get
	var missAt []int
	for i, g := range gets {
		if kvs, ok := c.gets[g]; ok {
			out[i] = kvs
		} else {
			miss, missAt = append(miss, g), append(missAt, i)
		}
	}
	if len(miss) == 0 {
		return out, nil
	}
	// Assign's reads may be served by any member from its own state: a
	// stale value only makes the guarded commit fail, and the failed commit
	// returns the current values (linearizable, through raft).
	stale := make([]Get, len(miss))
	for i, g := range miss {
		g.Serializable = !c.linearizable
		stale[i] = g
	}
	res, err := c.s.Read(ctx, stale...)
	if err != nil {
		return nil, err
	}
	for j, g := range miss {
		c.gets[g] = res[j]
		out[missAt[j]] = res[j]
	}
	return out, nil
}

// reset forgets everything read, so the next attempt reads afresh. What
// came from the node-local state is gone with it: that attempt needs the
// block hints again to read the node's blocks in its first round trip.
func (c *readCache) reset() {
	clear(c.gets)
	c.fromState = false
}

// refresh records the current values of the guarded keys of ops: cur holds
// those that exist; the others were deleted (or never created).
func (c *readCache) refresh(ops []Op, cur []KV) {
	now := map[string]KV{}
	for _, kv := range cur {
		now[kv.Key] = kv
	}
	for _, op := range ops {
		if op.Prefix {
			c.refreshPrefix(op.Key, cur)
			continue
		}
		if op.Rev == store.AnyRev {
			continue
		}
		kv, exists := now[op.Key]
		for g, kvs := range c.gets {
			if g.Key != op.Key && !(g.Prefix && strings.HasPrefix(op.Key, g.Key)) {
				continue
			}
			kvs = slices.DeleteFunc(slices.Clone(kvs), func(x KV) bool { return x.Key == op.Key })
			if exists {
				v := kv
				if g.KeysOnly {
					v.Value = nil
				}
				kvs = append(kvs, v)
				slices.SortFunc(kvs, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
			}
			c.gets[g] = kvs
		}
	}
}

// refreshPrefix replaces what the cache holds under prefix with cur's
// keys under it: all of them, as a failed prefix guard returns them.
func (c *readCache) refreshPrefix(prefix string, cur []KV) {
	var under []KV
	for _, kv := range cur {
		if strings.HasPrefix(kv.Key, prefix) {
			under = append(under, kv)
		}
	}
	slices.SortFunc(under, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
	for g := range c.gets {
		if !strings.HasPrefix(g.Key, prefix) && !(g.Prefix && strings.HasPrefix(prefix, g.Key)) {
			continue
		}
		var kvs []KV
		if g.Prefix && strings.HasPrefix(prefix, g.Key) {
			// A listing that holds the prefix: keep what is outside it.
			for _, kv := range c.gets[g] {
				if !strings.HasPrefix(kv.Key, prefix) {
					kvs = append(kvs, kv)
				}
			}
		}
		for _, kv := range under {
			if kv.Key == g.Key || (g.Prefix && strings.HasPrefix(kv.Key, g.Key)) {
				if g.KeysOnly {
					kv.Value = nil
				}
				kvs = append(kvs, kv)
			}
		}
		slices.SortFunc(kvs, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
		c.gets[g] = kvs
	}
}

// wrote brings the cache up to date after a successful commit of ops at
// revision rev: every key written now has that revision, every key deleted
// is gone. With rev 0 (a store that does not report it) the gets covering
// written keys are dropped instead, so they are read again when needed.
func (c *readCache) wrote(ops []Op, rev int64) {
	if rev == 0 {
		for _, op := range ops {
			for g := range c.gets {
				if g.Key == op.Key || (g.Prefix && strings.HasPrefix(op.Key, g.Key)) {
					delete(c.gets, g)
				}
			}
		}
		return
	}
	var cur []KV
	guarded := make([]Op, 0, len(ops))
	for _, op := range ops {
		if op.Prefix || (op.Value == nil && !op.Delete) {
			continue // a guard only: nothing changed
		}
		op.Rev = rev // any real revision: refresh skips AnyRev ops
		guarded = append(guarded, op)
		if !op.Delete {
			cur = append(cur, KV{Key: op.Key, Value: op.Value, ModRevision: rev})
		}
	}
	c.refresh(guarded, cur)
	// A block created here is read by the next attempt: remember it.
	for _, kv := range cur {
		if g := (Get{Key: kv.Key}); strings.HasPrefix(kv.Key, blocksPrefix) {
			if _, ok := c.gets[g]; !ok {
				c.gets[g] = []KV{kv}
			}
		}
	}
}
