package bgpd

import (
	"cmp"
	"context"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cache mirrors the etcd keys under a few prefixes: listed once at one
// revision, then kept current by one watch per prefix (all on one gRPC
// stream), re-listed when a watch breaks (compaction, a lost connection).
// A node watches only what it needs — node records, BGP configuration,
// pools, and its own claims and endpoints — not the blocks, handles and
// endpoints of every other node, which a watch of the whole root would
// deliver to every node for every ADD in the cluster.
//
// The keys one transaction wrote (a block's claim and the pod's endpoint)
// may fall under two prefixes, and so arrive on two watches. An event is
// applied only once every watch has reported a revision at least as high
// as its own (by its events, or a progress notification the cache asks
// for), so the cache never holds a transaction half applied.
type Cache struct {
	cli      *clientv3.Client
	root     string
	prefixes []string
	log      *slog.Logger

	mu      sync.RWMutex
	data    map[string][]byte
	listed  bool
	seeded  bool // filled from the state on disk (laststate.go)
	lastOK  time.Time
	changed chan struct{}

	// What the watches delivered: events and bytes (keys and values), for
	// brindle_etcd_watch_events_total and _bytes_total.
	events, bytes atomic.Int64
}

// NewCache mirrors the keys under the given absolute prefixes, all inside root.
func NewCache(cli *clientv3.Client, log *slog.Logger, root string, prefixes ...string) *Cache {
	return &Cache{cli: cli, root: root, prefixes: prefixes, log: log, data: map[string][]byte{}, changed: make(chan struct{}, 1)}
}

func (c *Cache) wanted(key string) bool {
	for _, p := range c.prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// Changed is signalled (coalesced) after the cache changed.
func (c *Cache) Changed() <-chan struct{} { return c.changed }

// Received reports the watch events and bytes received so far.
func (c *Cache) Received() (events, bytes int64) { return c.events.Load(), c.bytes.Load() }

// progressWait bounds the wait for the other watches' progress: an etcd
// that does not answer progress requests (older than 3.4) only delays the
// signal by this much.
const progressWait = 100 * time.Millisecond

// watchResp is one response of watch i.
type watchResp struct {
	i    int
	resp clientv3.WatchResponse
	ok   bool
}

// Run keeps the cache current until ctx ends.
func (c *Cache) Run(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := c.list(ctx)
		if err != nil {
			c.log.Warn("etcd list failed; retrying", "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		signal(c.changed)
		c.watch(ctx, rev)
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

// watch follows every prefix from rev+1 until a watch breaks or ctx ends.
func (c *Cache) watch(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	in := make(chan watchResp)
	for i, p := range c.prefixes {
		wch := c.cli.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		go func() {
			for {
				resp, ok := <-wch
				select {
				case in <- watchResp{i: i, resp: resp, ok: ok}:
				case <-wctx.Done():
					return
				}
				if !ok {
					return
				}
			}
		}()
	}
	// seen[i] is the revision up to which watch i has delivered every
	// event: its last event's, or a progress notification's (which etcd
	// sends only once the watch has sent everything before it). Events
	// wait in pending until every watch has seen their revision, and are
	// then applied in revision order: a reader of the cache sees whole
	// transactions only.
	seen := make([]int64, len(c.prefixes))
	for i := range seen {
		seen[i] = rev
	}
	var pending []*clientv3.Event
	var timeout <-chan time.Time
	requested := int64(0) // the newest pending revision progress was asked for
	for {
		flush := false
		select {
		case <-ctx.Done():
			return
		case <-timeout:
			flush = true // no answer: apply what is pending as it is
		case r := <-in:
			if !r.ok || r.resp.Err() != nil {
				c.log.Warn("etcd watch broke; re-listing", "prefix", c.prefixes[r.i], "err", r.resp.Err())
				return
			}
			c.mu.Lock()
			c.lastOK = time.Now() // events or progress: etcd answers
			c.mu.Unlock()
			if r.resp.IsProgressNotify() {
				seen[r.i] = max(seen[r.i], r.resp.Header.Revision)
			}
			if n := len(r.resp.Events); n > 0 {
				c.count(r.resp.Events)
				pending = append(pending, r.resp.Events...)
				seen[r.i] = max(seen[r.i], r.resp.Events[n-1].Kv.ModRevision)
			}
		}
		safe := slices.Min(seen)
		if flush {
			safe = math.MaxInt64
		}
		if len(pending) == 0 {
			continue
		}
		slices.SortStableFunc(pending, func(a, b *clientv3.Event) int { return cmp.Compare(a.Kv.ModRevision, b.Kv.ModRevision) })
		n := 0
		for n < len(pending) && pending[n].Kv.ModRevision <= safe {
			n++
		}
		if n > 0 {
			c.apply(pending[:n])
			pending = slices.Delete(pending, 0, n)
			signal(c.changed)
		}
		if len(pending) == 0 {
			timeout, requested = nil, 0
			continue
		}
		if newest := pending[len(pending)-1].Kv.ModRevision; newest > requested {
			// Ask every watch how far it is; the answers come after any
			// event it has up to now.
			requested = newest
			if err := c.cli.RequestProgress(wctx); err != nil {
				c.log.Debug("etcd progress request", "err", err)
			}
			timeout = time.After(progressWait)
		}
	}
}

// count adds a watch's events to what the cache received.
func (c *Cache) count(evs []*clientv3.Event) {
	var n int64
	for _, ev := range evs {
		n += int64(len(ev.Kv.Key) + len(ev.Kv.Value))
	}
	c.events.Add(int64(len(evs)))
	c.bytes.Add(n)
}

// apply writes events, in revision order, into the cache.
func (c *Cache) apply(evs []*clientv3.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		if ev.Type == clientv3.EventTypeDelete {
			delete(c.data, k)
		} else {
			c.data[k] = ev.Kv.Value
		}
	}
}

// list reads every prefix at one revision (one transaction) and replaces
// the cache with it.
func (c *Cache) list(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ops := make([]clientv3.Op, len(c.prefixes))
	for i, p := range c.prefixes {
		ops[i] = clientv3.OpGet(p, clientv3.WithPrefix())
	}
	res, err := c.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, err
	}
	data := map[string][]byte{}
	for _, r := range res.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			data[string(kv.Key)] = kv.Value
		}
	}
	c.mu.Lock()
	c.data, c.listed, c.lastOK = data, true, time.Now()
	c.mu.Unlock()
	return res.Header.Revision, nil
}

// Snapshot returns the keys under prefix with their values.
func (c *Cache) Snapshot(prefix string) map[string][]byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := map[string][]byte{}
	for k, v := range c.data {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// Synced reports whether every prefix has been listed once.
func (c *Cache) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.listed
}

// LastOK is when etcd last answered a list or delivered a watch event.
func (c *Cache) LastOK() time.Time {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.lastOK
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
