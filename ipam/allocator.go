// Package ipam allocates pod addresses from IP pools kept in etcd. Pools are
// carved into blocks; a node claims blocks (its affinity) and hands out their
// addresses. Every change is one revision-guarded transaction, retried on
// conflict, so concurrent nodes and processes never hand out an address twice.
package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam/store"
)

// DefaultEmptyBlockGrace is how long an empty block stays claimed before GC
// releases it: pods come and go in bursts, and re-claiming costs a route
// change on every node.
const DefaultEmptyBlockGrace = 15 * time.Minute

// maxBackoff caps the wait between attempts. Conflicts are cheap to retry
// (a failed transaction writes nothing), so waits stay short.
const maxBackoff = 16 * time.Millisecond

// retryNowJitter spreads out retries that already have fresh values.
const retryNowJitter = time.Millisecond

// Allocator hands out and releases addresses. It keeps no state of its own
// between calls; everything is in the Store.
type Allocator struct {
	Store Store
	// EmptyBlockGrace is how long an empty block stays claimed.
	EmptyBlockGrace time.Duration
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Log receives retries and stale releases.
	Log *slog.Logger
	// Hints, when set, remembers each node's blocks between calls.
	Hints BlockHints
	// Local, when set, combines the concurrent calls of one node into
	// shared transactions and keeps what they read between calls.
	Local *NodeLocal
}

// New returns an Allocator on s with default settings.
func New(s Store) *Allocator {
	return &Allocator{Store: s, EmptyBlockGrace: DefaultEmptyBlockGrace, Now: time.Now, Log: slog.Default()}
}

// AssignRequest asks for the addresses of one attachment.
type AssignRequest struct {
	// Handle names the attachment: container ID + "." + ifname for pods.
	Handle string
	// Node is the node the addresses are for; its blocks are used first.
	Node string
	// Attrs are recorded on each allocation (namespace, pod, ...).
	Attrs map[string]string
	// IPv4 and IPv6 say which families to assign automatically.
	IPv4, IPv6 bool
	// IPv4Pools and IPv6Pools, when set, restrict allocation to these pools.
	IPv4Pools, IPv6Pools []string
	// IPs are specific addresses wanted; one replaces the automatic
	// assignment of its family.
	IPs []netip.Addr
	// Endpoint, when set, is written with the handle in the same transaction.
	Endpoint *Endpoint
	// Use is what the addresses are for: pools whose allowedUses lack it
	// are not used automatically (default conf.UseWorkload).
	Use conf.PoolUse
	// Sticky marks a sticky StatefulSet pod (Handle is StickyHandleID,
	// Attrs carry StickyAttrs): an existing handle is re-attached to this
	// attachment instead of answered as is.
	Sticky bool
}

// Errors callers tell apart.
var (
	// ErrExhausted means no address is left for the node in the allowed pools.
	ErrExhausted = errors.New("no free address")
	// ErrStaleSeq means a release named an allocation that no longer exists
	// (the address was released and perhaps handed out again since).
	ErrStaleSeq = errors.New("stale release")
	// ErrNoPool means no pool exists or none is usable for the request.
	ErrNoPool = errors.New("no usable ip pool")
)

// permanent marks errors that retrying cannot fix (bad input, exhaustion).
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

func perm(format string, args ...any) error { return permanent{fmt.Errorf(format, args...)} }

// safeName reports whether v can be one etcd key segment. Hand-written, not
// a regexp, to keep the plugin's start-up short.
func safeName(v string) bool {
	if v == "" || len(v) > 253 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '-' && c != '_' && c != '.' && c != ':') {
			return false
		}
	}
	return true
}

func checkName(field, v string) error {
	if !safeName(v) {
		return perm("%s %q: must be letters, digits, '-', '_', '.', ':' (it is part of an etcd key)", field, v)
	}
	return nil
}

// retry runs attempt until it reports done, backing off with jitter after
// conflicts and transient store errors, until ctx expires. Permanent errors
// end it at once.
func (a *Allocator) retry(ctx context.Context, what string, attempt func() (bool, error)) error {
	backoff := time.Millisecond
	var lastErr error
	conflicts := 0
	for {
		done, err := attempt()
		if err == nil && done {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.err
		}
		if errors.Is(err, errRetryNow) {
			conflicts++
			if ctx.Err() != nil {
				return fmt.Errorf("%s: gave up after %d conflicting updates: %w", what, conflicts, ctx.Err())
			}
			// A short jitter only: the attempt has what it needs, and
			// contenders for one block win one per round trip anyway.
			time.Sleep(rand.N(retryNowJitter))
			continue
		}
		if err != nil {
			lastErr = err
			a.Log.Debug("ipam retry after error", "op", what, "err", err)
		} else {
			conflicts++
		}
		// Full jitter: contenders for one block spread out instead of
		// colliding again in lockstep.
		sleep := rand.N(backoff + 1)
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%s: %w", what, lastErr)
			}
			return fmt.Errorf("%s: gave up after %d conflicting updates: %w", what, conflicts, ctx.Err())
		case <-time.After(sleep):
		}
		if backoff < maxBackoff {
			backoff *= 2
		}
	}
}

// Assign gives the handle its addresses, or returns those it already holds
// (so a repeated ADD gets the same answer). Everything it writes — blocks,
// claims, the handle and the endpoint — is one transaction: it happens
// completely or not at all. With Local set, concurrent calls on one node
// are combined into shared transactions (see NodeLocal).
func (a *Allocator) Assign(ctx context.Context, req AssignRequest) ([]HandleAddr, error) {
	p, err := newAssign(req)
	if err != nil {
		return nil, err
	}
	if a.Local != nil {
		return a.Local.run(ctx, a, p)
	}
	if err := a.runBatch(ctx, req.Node, []*pending{p}, newReadCache(a.Store)); err != nil {
		return nil, err
	}
	return p.out, p.err
}

// newAssign checks a request and splits its requested addresses by family.
func newAssign(req AssignRequest) (*pending, error) {
	if err := checkName("handle", req.Handle); err != nil {
		return nil, unperm(err)
	}
	if err := checkName("node", req.Node); err != nil {
		return nil, unperm(err)
	}
	p := &pending{req: request{Assign: &req}}
	for _, ip := range req.IPs {
		if ip.Is4() || ip.Is4In6() {
			p.ip4 = append(p.ip4, ip.Unmap())
		} else {
			p.ip6 = append(p.ip6, ip)
		}
	}
	if len(p.ip4) > 1 || len(p.ip6) > 1 {
		return nil, fmt.Errorf("ips %v: at most one address per family", req.IPs)
	}
	return p, nil
}

// assignReq plans one request's addresses on t: the handle's own when it
// exists, else a requested or automatic address per family. It returns the
// handle and endpoint writes; block and claim writes are in t.
func (t *txn) assignReq(p *pending) ([]HandleAddr, []Op, error) {
	req := p.req.Assign
	if hr := t.handles[req.Handle]; hr != nil {
		for _, ip := range append(slices.Clone(p.ip4), p.ip6...) {
			if !slices.ContainsFunc(hr.h.Addrs, func(h HandleAddr) bool { return h.Addr == ip }) {
				return nil, nil, perm("handle %q already holds %v, not the requested %s", req.Handle, addrsOf(hr.h.Addrs), ip)
			}
		}
		if req.Sticky && IsSticky(hr.h) {
			ops, err := t.reattach(hr, req)
			p.fromHandle = len(ops) == 0
			return hr.h.Addrs, ops, err
		}
		p.fromHandle = true
		return hr.h.Addrs, nil, nil
	}
	var got []HandleAddr
	for _, fam := range []struct {
		v6    bool
		want  bool
		ips   []netip.Addr
		pools []string
	}{{false, req.IPv4, p.ip4, req.IPv4Pools}, {true, req.IPv6, p.ip6, req.IPv6Pools}} {
		var ha HandleAddr
		var err error
		switch {
		case len(fam.ips) > 0:
			ha, err = t.assignIP(fam.ips[0], fam.pools, req.Handle, req.Attrs)
		case fam.want:
			use := req.Use
			if use == "" {
				use = conf.UseWorkload
			}
			ha, err = t.autoAssign(fam.v6, fam.pools, use, req.Handle, req.Attrs)
		default:
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		got = append(got, ha)
	}
	if len(got) == 0 {
		return nil, nil, perm("handle %q: nothing to assign (no family enabled and no ip requested)", req.Handle)
	}
	h := Handle{V: SchemaVersion, ID: req.Handle, Node: req.Node, Addrs: got, Attrs: req.Attrs}
	ops := []Op{{Key: handleKey(req.Handle), Value: mustJSON(h), Rev: MustNotExist}}
	if req.Endpoint != nil {
		ep := *req.Endpoint
		ep.V, ep.Node = SchemaVersion, req.Node
		for _, ha := range got {
			ep.Addresses = append(ep.Addresses, netip.PrefixFrom(ha.Addr, ha.Addr.BitLen()).String())
		}
		ops = append(ops, Op{Key: endpointKey(req.Node, req.Handle), Value: mustJSON(ep), Rev: AnyRev})
	}
	return got, ops, nil
}

// errRetryNow reports a conflict whose attempt already has fresh values to
// retry from, so the retry need not wait.
var errRetryNow = errors.New("conflict; retry from fresh values")

// commit commits ops. On a conflict it refreshes rc with the current values
// of the guarded keys when the store returns them, and otherwise empties
// rc so the next attempt reads afresh. After a commit it brings rc up to
// date with what was written, when the store says at which revision.
func (a *Allocator) commit(ctx context.Context, rc *readCache, ops []Op) (bool, error) {
	var ok bool
	var rev int64
	var cur []KV
	var err error
	switch s := a.Store.(type) {
	case store.RevCommitter:
		ok, rev, cur, err = s.CommitRev(ctx, ops...)
	case store.CommitGetter:
		ok, cur, err = s.CommitOrGet(ctx, ops...)
	default:
		ok, err = a.Store.Commit(ctx, ops...)
		if err == nil && !ok {
			rc.reset()
			return false, nil
		}
	}
	switch {
	case err != nil:
		rc.reset()
		return false, err
	case !ok:
		rc.refresh(ops, cur)
		return false, errRetryNow
	}
	rc.wrote(ops, rev)
	return true, nil
}

func unperm(err error) error {
	var p permanent
	if errors.As(err, &p) {
		return p.err
	}
	return err
}

func addrsOf(has []HandleAddr) []netip.Addr {
	var out []netip.Addr
	for _, h := range has {
		out = append(out, h.Addr)
	}
	return out
}

// nodeLabels reads labels from a node record; brindled writes them at
// "labels" (a Kubernetes-shaped "metadata.labels" is accepted too).
func nodeLabels(data []byte) map[string]string {
	var n struct {
		Labels   map[string]string `json:"labels"`
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(data, &n) // a node record without labels selects like no labels
	if n.Labels != nil {
		return n.Labels
	}
	return n.Metadata.Labels
}
