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
	"hash/fnv"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
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

type blockRec struct {
	b   *Block
	rev int64 // 0: created by this transaction
}

type affRec struct {
	a   Affinity
	rev int64
}

// txn is one attempt: what was read, and what it changed.
type txn struct {
	a          *Allocator
	r          reader
	ctx        context.Context
	node       string
	cfg        Config
	pools      []conf.IPPool
	labels     map[string]string
	blocks     map[netip.Prefix]*blockRec
	affs       map[netip.Prefix]*affRec // this node's claims
	dirty      map[netip.Prefix]bool
	dirtyAff   map[netip.Prefix]bool
	blockKeys  map[netip.Prefix]bool // every block in the store, read lazily
	allBlocks  bool                  // blocks holds every block in the store
	handle     *Handle
	handleRev  int64
	handleSeen bool
}

// begin reads, in one round trip, the handle, the node's claims, the IPAM
// config, the pools and the node's labels; then, in a second, the node's blocks.
func (a *Allocator) begin(ctx context.Context, r reader, node, handle string) (*txn, error) {
	gets := []Get{
		{Key: nodeAffinityPrefix(node), Prefix: true},
		{Key: configKey},
		{Key: poolsPrefix, Prefix: true},
		{Key: nodeKey(node)},
	}
	if handle != "" {
		gets = append(gets, Get{Key: handleKey(handle)})
	}
	res, err := r.Read(ctx, gets...)
	if err != nil {
		return nil, err
	}
	t := &txn{a: a, r: r, ctx: ctx, node: node,
		blocks: map[netip.Prefix]*blockRec{}, affs: map[netip.Prefix]*affRec{},
		dirty: map[netip.Prefix]bool{}, dirtyAff: map[netip.Prefix]bool{}}
	for _, kv := range res[0] {
		cidr, err := parseCIDRKey(kv.Key[len(nodeAffinityPrefix(node)):])
		if err != nil {
			continue
		}
		var af Affinity
		if err := decode(kv, &af); err != nil {
			return nil, err
		}
		t.affs[cidr] = &affRec{a: af, rev: kv.ModRevision}
	}
	if len(res[1]) > 0 {
		if err := decode(res[1][0], &t.cfg); err != nil {
			return nil, err
		}
	}
	for _, kv := range res[2] {
		p, err := conf.UnmarshalPool(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		if p.Validate() != nil {
			continue // never allocate from a pool that is not valid as stored
		}
		t.pools = append(t.pools, p)
	}
	sort.Slice(t.pools, func(i, j int) bool { return t.pools[i].Metadata.Name < t.pools[j].Metadata.Name })
	if len(res[3]) > 0 {
		t.labels = nodeLabels(res[3][0].Value)
	}
	if handle != "" && len(res[4]) > 0 {
		var h Handle
		if err := decode(res[4][0], &h); err != nil {
			return nil, err
		}
		t.handle, t.handleRev = &h, res[4][0].ModRevision
	}
	if len(t.affs) > 0 {
		var keys []netip.Prefix
		for c := range t.affs {
			keys = append(keys, c)
		}
		if err := t.readBlocks(keys...); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *txn) readBlocks(cidrs ...netip.Prefix) error {
	var gets []Get
	for _, c := range cidrs {
		gets = append(gets, Get{Key: blockKey(c)})
	}
	res, err := t.r.Read(t.ctx, gets...)
	if err != nil {
		return err
	}
	for _, kvs := range res {
		for _, kv := range kvs {
			if err := t.addBlock(kv); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *txn) addBlock(kv KV) error {
	var b Block
	if err := decode(kv, &b); err != nil {
		return err
	}
	if err := b.check(); err != nil {
		return err
	}
	if _, ok := t.blocks[b.CIDR]; !ok {
		t.blocks[b.CIDR] = &blockRec{b: &b, rev: kv.ModRevision}
	}
	return nil
}

// readAllBlocks loads every block, for borrowing.
func (t *txn) readAllBlocks() error {
	if t.allBlocks {
		return nil
	}
	res, err := t.r.Read(t.ctx, Get{Key: blocksPrefix, Prefix: true})
	if err != nil {
		return err
	}
	for _, kv := range res[0] {
		if err := t.addBlock(kv); err != nil {
			return err
		}
	}
	t.allBlocks = true
	return nil
}

// existingBlocks returns the CIDRs of every stored block, for claiming.
func (t *txn) existingBlocks() (map[netip.Prefix]bool, error) {
	if t.blockKeys != nil {
		return t.blockKeys, nil
	}
	res, err := t.r.Read(t.ctx, Get{Key: blocksPrefix, Prefix: true, KeysOnly: true})
	if err != nil {
		return nil, err
	}
	t.blockKeys = map[netip.Prefix]bool{}
	for _, kv := range res[0] {
		if c, err := parseCIDRKey(kv.Key[len(blocksPrefix):]); err == nil {
			t.blockKeys[c] = true
		}
	}
	return t.blockKeys, nil
}

// usablePools returns the enabled pools of a family that select this node,
// restricted to names when names is not empty.
func (t *txn) usablePools(v6 bool, names []string) ([]conf.IPPool, error) {
	var out []conf.IPPool
	for _, n := range names {
		if !slices.ContainsFunc(t.pools, func(p conf.IPPool) bool { return p.Metadata.Name == n }) {
			return nil, perm("%w: pool %q named in the ipam config does not exist", ErrNoPool, n)
		}
	}
	for _, p := range t.pools {
		if p.Prefix().Addr().Is6() != v6 || p.Spec.Disabled {
			continue
		}
		if len(names) > 0 && !slices.Contains(names, p.Metadata.Name) {
			continue
		}
		sel, err := conf.ParseSelector(p.Spec.NodeSelector)
		if err != nil || !sel.Matches(t.labels) {
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		fam := "IPv4"
		if v6 {
			fam = "IPv6"
		}
		return nil, perm("%w: no enabled %s pool selects node %q (restricted to %v)", ErrNoPool, fam, t.node, names)
	}
	return out, nil
}

func inPools(pools []conf.IPPool, b *Block) bool {
	for _, p := range pools {
		if p.Metadata.Name == b.Pool && p.Prefix().Contains(b.CIDR.Addr()) {
			return true
		}
	}
	return false
}

// autoAssign takes one address of a family: from the node's blocks, else
// from a newly claimed block, else (without strictAffinity) from another
// node's block.
func (t *txn) autoAssign(v6 bool, names []string, handle string, attrs map[string]string) (HandleAddr, error) {
	pools, err := t.usablePools(v6, names)
	if err != nil {
		return HandleAddr{}, err
	}
	var own []netip.Prefix
	for c := range t.affs {
		if r := t.blocks[c]; r != nil && r.b.Affinity == t.node && inPools(pools, r.b) {
			own = append(own, c)
		}
	}
	// Confirmed blocks first, so a block waiting for release can drain.
	sort.Slice(own, func(i, j int) bool {
		di := t.affs[own[i]].a.State == AffinityPendingDeletion
		dj := t.affs[own[j]].a.State == AffinityPendingDeletion
		if di != dj {
			return !di
		}
		return own[i].Addr().Less(own[j].Addr())
	})
	for _, c := range own {
		if ha, ok := t.take(c, -1, handle, attrs); ok {
			return ha, nil
		}
	}
	if c, ok, err := t.claim(pools); err != nil {
		return HandleAddr{}, err
	} else if ok {
		ha, _ := t.take(c, -1, handle, attrs)
		return ha, nil
	}
	if t.cfg.StrictAffinity {
		return HandleAddr{}, perm("%w: node %q has no free address in its blocks of %s and cannot claim another (strictAffinity forbids borrowing)", ErrExhausted, t.node, poolNames(pools))
	}
	if err := t.readAllBlocks(); err != nil {
		return HandleAddr{}, err
	}
	var others []netip.Prefix
	for c, r := range t.blocks {
		if r.b.Affinity != t.node && inPools(pools, r.b) && len(r.b.Free) > 0 {
			others = append(others, c)
		}
	}
	sort.Slice(others, func(i, j int) bool { return others[i].Addr().Less(others[j].Addr()) })
	for _, c := range others {
		if ha, ok := t.take(c, -1, handle, attrs); ok {
			t.a.Log.Info("borrowed address from another node's block", "node", t.node, "block", c, "owner", t.blocks[c].b.Affinity, "ip", ha.Addr)
			return ha, nil
		}
	}
	return HandleAddr{}, perm("%w: pools %s are full for node %q", ErrExhausted, poolNames(pools), t.node)
}

func poolNames(pools []conf.IPPool) string {
	var s []string
	for _, p := range pools {
		s = append(s, p.Metadata.Name+"("+p.Spec.CIDR+")")
	}
	return fmt.Sprint(s)
}

// take allocates in block c and marks what the commit must write.
func (t *txn) take(c netip.Prefix, ord int, handle string, attrs map[string]string) (HandleAddr, bool) {
	r := t.blocks[c]
	o, seq, ok := r.b.take(ord, handle, attrs)
	if !ok {
		return HandleAddr{}, false
	}
	t.dirty[c] = true
	if ar := t.affs[c]; ar != nil && r.b.Affinity == t.node && ar.a.State != AffinityConfirmed {
		ar.a.State, ar.a.Since = AffinityConfirmed, t.a.Now().UTC()
		t.dirtyAff[c] = true
	}
	return HandleAddr{Addr: r.b.Addr(o), Block: c, Seq: seq}, true
}

// claim creates a new block for the node in the first pool that has one
// free, unless maxBlocksPerHost is reached. Nodes start their search at
// different offsets (a hash of the node name) so that nodes starting
// together do not all race for the same block.
func (t *txn) claim(pools []conf.IPPool) (netip.Prefix, bool, error) {
	if t.cfg.MaxBlocksPerHost > 0 && len(t.affs) >= t.cfg.MaxBlocksPerHost {
		return netip.Prefix{}, false, nil
	}
	existing, err := t.existingBlocks()
	if err != nil {
		return netip.Prefix{}, false, err
	}
	h := fnv.New64a()
	h.Write([]byte(t.node))
	seed := h.Sum64()
	for _, p := range pools {
		pfx := p.Prefix()
		total := blockCount(pfx, p.Spec.BlockSize)
		// Only existing blocks can be in the way, so one more candidate
		// than there are blocks is always enough.
		tries := uint64(len(existing) + 1)
		if tries > total {
			tries = total
		}
		start := seed % total
		for i := range tries {
			c := blockAt(pfx, p.Spec.BlockSize, (start+i)%total)
			if existing[c] || t.blocks[c] != nil {
				continue
			}
			t.newClaim(c, p.Metadata.Name)
			return c, true, nil
		}
	}
	return netip.Prefix{}, false, nil
}

func (t *txn) newClaim(c netip.Prefix, pool string) {
	t.blocks[c] = &blockRec{b: newBlock(c, pool, t.node)}
	t.affs[c] = &affRec{a: Affinity{V: SchemaVersion, State: AffinityConfirmed, Since: t.a.Now().UTC()}}
	t.dirty[c] = true
	t.dirtyAff[c] = true
}

func blockCount(pool netip.Prefix, size int) uint64 {
	if size-pool.Bits() >= 63 {
		return 1 << 62
	}
	return 1 << (size - pool.Bits())
}

func blockAt(pool netip.Prefix, size int, n uint64) netip.Prefix {
	off := new(big.Int).Lsh(new(big.Int).SetUint64(n), uint(pool.Addr().BitLen()-size))
	base := new(big.Int).SetBytes(pool.Addr().AsSlice())
	base.Add(base, off)
	buf := make([]byte, pool.Addr().BitLen()/8)
	base.FillBytes(buf)
	a, _ := netip.AddrFromSlice(buf)
	return netip.PrefixFrom(a, size)
}

// assignIP takes a specific address, claiming its block if no one has.
func (t *txn) assignIP(ip netip.Addr, names []string, handle string, attrs map[string]string) (HandleAddr, error) {
	var pool *conf.IPPool
	for i := range t.pools {
		if t.pools[i].Prefix().Contains(ip) {
			pool = &t.pools[i]
		}
	}
	if pool == nil {
		return HandleAddr{}, perm("ip %s: not inside any ip pool", ip)
	}
	if len(names) > 0 && !slices.Contains(names, pool.Metadata.Name) {
		return HandleAddr{}, perm("ip %s: pool %q is not among the allowed pools %v", ip, pool.Metadata.Name, names)
	}
	if pool.Spec.Disabled {
		return HandleAddr{}, perm("ip %s: pool %q is disabled", ip, pool.Metadata.Name)
	}
	c := netip.PrefixFrom(ip, pool.Spec.BlockSize).Masked()
	if t.blocks[c] == nil {
		if err := t.readBlocks(c); err != nil {
			return HandleAddr{}, err
		}
	}
	r := t.blocks[c]
	if r == nil {
		if t.cfg.MaxBlocksPerHost > 0 && len(t.affs) >= t.cfg.MaxBlocksPerHost {
			return HandleAddr{}, perm("ip %s: its block %s is unclaimed and node %q already has maxBlocksPerHost=%d blocks", ip, c, t.node, t.cfg.MaxBlocksPerHost)
		}
		t.newClaim(c, pool.Metadata.Name)
		r = t.blocks[c]
	} else if r.b.Affinity != t.node && t.cfg.StrictAffinity {
		return HandleAddr{}, perm("ip %s: its block %s belongs to node %q and strictAffinity forbids borrowing", ip, c, r.b.Affinity)
	}
	ord, _ := r.b.Ordinal(ip)
	ha, ok := t.take(c, ord, handle, attrs)
	if !ok {
		holder := ""
		if al := r.b.Allocations[ord]; al != nil {
			holder = al.Handle
		}
		return HandleAddr{}, perm("ip %s: already in use by handle %q", ip, holder)
	}
	return ha, nil
}

// ops returns the guarded writes for every block and claim this attempt changed.
func (t *txn) ops() []Op {
	var ops []Op
	for c := range t.dirty {
		r := t.blocks[c]
		ops = append(ops, Op{Key: blockKey(c), Value: mustJSON(r.b), Rev: r.rev})
	}
	for c := range t.dirtyAff {
		r := t.affs[c]
		ops = append(ops, Op{Key: affinityKey(t.node, c), Value: mustJSON(r.a), Rev: r.rev})
	}
	return ops
}

// Assign gives the handle its addresses, or returns those it already holds
// (so a repeated ADD gets the same answer). Everything it writes — blocks,
// claims, the handle and the endpoint — is one transaction: it happens
// completely or not at all.
func (a *Allocator) Assign(ctx context.Context, req AssignRequest) ([]HandleAddr, error) {
	if err := checkName("handle", req.Handle); err != nil {
		return nil, unperm(err)
	}
	if err := checkName("node", req.Node); err != nil {
		return nil, unperm(err)
	}
	want4, want6 := req.IPv4, req.IPv6
	var ip4, ip6 []netip.Addr
	for _, ip := range req.IPs {
		if ip.Is4() || ip.Is4In6() {
			ip4 = append(ip4, ip.Unmap())
		} else {
			ip6 = append(ip6, ip)
		}
	}
	if len(ip4) > 1 || len(ip6) > 1 {
		return nil, fmt.Errorf("ips %v: at most one address per family", req.IPs)
	}
	var out []HandleAddr
	rc := newReadCache(a.Store)
	err := a.retry(ctx, "assign "+req.Handle, func() (bool, error) {
		done, err := a.assignOnce(ctx, rc, req, ip4, ip6, want4, want6, &out)
		var p permanent
		if errors.As(err, &p) && !rc.linearizable {
			// The reads were serializable and may be stale (a member
			// catching up after a restart may not have the pools yet):
			// confirm a refusal against the current state before giving it.
			rc.reset()
			rc.linearizable = true
			return false, errRetryNow
		}
		return done, err
	})
	return out, err
}

// assignOnce is one attempt of Assign.
func (a *Allocator) assignOnce(ctx context.Context, rc *readCache, req AssignRequest, ip4, ip6 []netip.Addr, want4, want6 bool, out *[]HandleAddr) (bool, error) {
	t, err := a.begin(ctx, rc, req.Node, req.Handle)
	if err != nil {
		rc.reset()
		return false, err
	}
	if t.handle != nil {
		for _, ip := range append(ip4, ip6...) {
			if !slices.ContainsFunc(t.handle.Addrs, func(h HandleAddr) bool { return h.Addr == ip }) {
				return false, perm("handle %q already holds %v, not the requested %s", req.Handle, addrsOf(t.handle.Addrs), ip)
			}
		}
		*out = t.handle.Addrs
		return true, nil
	}
	var got []HandleAddr
	for _, fam := range []struct {
		v6    bool
		want  bool
		ips   []netip.Addr
		pools []string
	}{{false, want4, ip4, req.IPv4Pools}, {true, want6, ip6, req.IPv6Pools}} {
		var ha HandleAddr
		switch {
		case len(fam.ips) > 0:
			ha, err = t.assignIP(fam.ips[0], fam.pools, req.Handle, req.Attrs)
		case fam.want:
			ha, err = t.autoAssign(fam.v6, fam.pools, req.Handle, req.Attrs)
		default:
			continue
		}
		if err != nil {
			return false, err
		}
		got = append(got, ha)
	}
	if len(got) == 0 {
		return false, perm("handle %q: nothing to assign (no family enabled and no ip requested)", req.Handle)
	}
	h := Handle{V: SchemaVersion, ID: req.Handle, Node: req.Node, Addrs: got, Attrs: req.Attrs}
	ops := append(t.ops(), Op{Key: handleKey(req.Handle), Value: mustJSON(h), Rev: MustNotExist})
	if req.Endpoint != nil {
		ep := *req.Endpoint
		ep.V, ep.Node = SchemaVersion, req.Node
		for _, ha := range got {
			ep.Addresses = append(ep.Addresses, netip.PrefixFrom(ha.Addr, ha.Addr.BitLen()).String())
		}
		ops = append(ops, Op{Key: endpointKey(req.Node, req.Handle), Value: mustJSON(ep), Rev: AnyRev})
	}
	ok, err := a.commit(ctx, rc, ops)
	if ok {
		*out = got
	}
	return ok, err
}

// errRetryNow reports a conflict whose attempt already has fresh values to
// retry from, so the retry need not wait.
var errRetryNow = errors.New("conflict; retry from fresh values")

// commit commits ops. On a conflict it refreshes rc with the current values
// of the guarded keys when the store returns them, and otherwise empties
// rc so the next attempt reads afresh.
func (a *Allocator) commit(ctx context.Context, rc *readCache, ops []Op) (bool, error) {
	cg, ok := a.Store.(store.CommitGetter)
	if !ok {
		ok, err := a.Store.Commit(ctx, ops...)
		if !ok {
			rc.reset()
		}
		return ok, err
	}
	ok, cur, err := cg.CommitOrGet(ctx, ops...)
	switch {
	case err != nil:
		rc.reset()
		return false, err
	case !ok:
		rc.refresh(ops, cur)
		return false, errRetryNow
	}
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
