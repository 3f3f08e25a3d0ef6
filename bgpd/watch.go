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
// current by watches, re-listed when a watch breaks (compaction, a lost
// connection). Changed is signalled after every change.
type Cache struct {
	cli      *clientv3.Client
	prefixes []string
	log      *slog.Logger

	mu      sync.RWMutex
	data    map[string][]byte
	listed  map[string]bool
	lastOK  time.Time
	changed chan struct{}
}

// NewCache mirrors the given absolute key prefixes.
func NewCache(cli *clientv3.Client, log *slog.Logger, prefixes ...string) *Cache {
	return &Cache{cli: cli, prefixes: prefixes, log: log, data: map[string][]byte{}, listed: map[string]bool{}, changed: make(chan struct{}, 1)}
}

// Changed is signalled (coalesced) after the cache changed.
func (c *Cache) Changed() <-chan struct{} { return c.changed }

// Run keeps the cache current until ctx ends.
func (c *Cache) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range c.prefixes {
		wg.Go(func() { c.follow(ctx, p) })
	}
	wg.Wait()
}

// follow lists prefix and watches it from the listed revision; any break
// starts over after a short pause.
func (c *Cache) follow(ctx context.Context, prefix string) {
	for ctx.Err() == nil {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := c.cli.Get(lctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			c.log.Warn("etcd list failed; retrying", "prefix", prefix, "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		c.mu.Lock()
		for k := range c.data {
			if strings.HasPrefix(k, prefix) {
				delete(c.data, k)
			}
		}
		for _, kv := range res.Kvs {
			c.data[string(kv.Key)] = kv.Value
		}
		c.listed[prefix] = true
		c.lastOK = time.Now()
		c.mu.Unlock()
		signal(c.changed)

		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range c.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(res.Header.Revision+1)) {
			if err := wr.Err(); err != nil {
				c.log.Warn("etcd watch broke; re-listing", "prefix", prefix, "err", err)
				break
			}
			c.mu.Lock()
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					delete(c.data, string(ev.Kv.Key))
				} else {
					c.data[string(ev.Kv.Key)] = ev.Kv.Value
				}
			}
			c.lastOK = time.Now()
			c.mu.Unlock()
			signal(c.changed)
		}
		wcancel()
		sleepCtx(ctx, 200*time.Millisecond)
	}
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
	return len(c.listed) == len(c.prefixes)
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
