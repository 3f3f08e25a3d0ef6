package bgpd

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cache mirrors the etcd keys under a few prefixes: listed once, then kept
// current by one watch on their common root, re-listed when the watch breaks
// (compaction, a lost connection). One watch, not one per prefix, so the
// keys one transaction wrote (a block's affinity and the pod's endpoint)
// arrive together and are never seen half applied. Changed is signalled
// after every change.
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
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range c.cli.Watch(wctx, c.root, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if err := wr.Err(); err != nil {
				c.log.Warn("etcd watch broke; re-listing", "err", err)
				break
			}
			changed := false
			c.mu.Lock()
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if !c.wanted(k) {
					continue
				}
				changed = true
				if ev.Type == clientv3.EventTypeDelete {
					delete(c.data, k)
				} else {
					c.data[k] = ev.Kv.Value
				}
			}
			c.lastOK = time.Now()
			c.mu.Unlock()
			if changed {
				signal(c.changed)
			}
		}
		wcancel()
		sleepCtx(ctx, 200*time.Millisecond)
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
