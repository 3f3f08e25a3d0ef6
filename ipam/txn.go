package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/brindle-net/brindle/conf"
)

// blockRec is a block as read, with the revision its commit is guarded by.
type blockRec struct {
	b   *Block
	rev int64 // 0: created by this transaction
}

// affRec is a claim as read, with its revision.
type affRec struct {
	a   Affinity
	rev int64
}

// txn is one attempt: what was read, and what it changed.
type txn struct {
	a         *Allocator
	r         reader
	ctx       context.Context
	node      string
	cfg       Config
	pools     []conf.IPPool
	labels    map[string]string
	blocks    map[netip.Prefix]*blockRec
	affs      map[netip.Prefix]*affRec // this node's claims
	dirty     map[netip.Prefix]bool
	dirtyAff  map[netip.Prefix]bool
	blockKeys map[netip.Prefix]bool // every block in the store, read lazily
	allBlocks bool                  // blocks holds every block in the store
	handles   map[string]*handleRec // the handles asked for that exist
	// Revisions of what an assignment is decided from (0: absent). A
	// claim's commit is guarded by its pool's, so no block is claimed from
	// a pool that is being deleted (DeletePool disables it first).
	cfgRev, nodeRev int64
	reservedRev     int64 // the highest ModRevision among the reservations
	poolRevs        map[string]int64
	claimed         map[string]bool // pools this attempt claimed blocks of
	reserved        reservedSet
}

// handleRec is a handle as read, with its revision.
type handleRec struct {
	h   *Handle
	rev int64
}

// begin reads, in one round trip, the handles, the node's claims, the IPAM
// config, the pools, the node's labels and the blocks hinted at; then, in a
// second round trip if the hint missed any, the rest of the node's blocks.
func (a *Allocator) begin(ctx context.Context, r reader, node string, handles []string, hint []netip.Prefix) (*txn, error) {
	gets := []Get{
		{Key: nodeAffinityPrefix(node), Prefix: true},
		{Key: configKey},
		{Key: poolsPrefix, Prefix: true},
		{Key: nodeKey(node)},
		{Key: reservationsPrefix, Prefix: true},
	}
	const fixed = 5
	for _, h := range handles {
		gets = append(gets, Get{Key: handleKey(h)})
	}
	hinted := len(gets)
	for _, c := range hint {
		gets = append(gets, Get{Key: blockKey(c)})
	}
	res, err := r.Read(ctx, gets...)
	if err != nil {
		return nil, err
	}
	t := a.newTxn(ctx, r, node)
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
		t.cfgRev = res[1][0].ModRevision
	}
	// Never allocate from a pool that is not valid as stored, nor from one
	// that overlaps an older pool (it would hand the same addresses out).
	recs := make([]conf.PoolRecord, len(res[2]))
	revs := map[string]int64{}
	for i, kv := range res[2] {
		recs[i] = conf.PoolRecord{Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision}
		revs[kv.Key] = kv.ModRevision
	}
	var rejected []string
	t.pools, rejected = conf.UsablePools(recs) // sorted by name
	for _, r := range rejected {
		a.Log.Warn("ipam: ignoring pool", "why", r)
	}
	for _, p := range t.pools {
		t.poolRevs[p.Metadata.Name] = revs[poolKey(p.Metadata.Name)]
	}
	if len(res[3]) > 0 {
		t.labels = nodeLabels(res[3][0].Value)
		t.nodeRev = res[3][0].ModRevision
	}
	for i := range handles {
		for _, kv := range res[fixed+i] {
			var h Handle
			if err := decode(kv, &h); err != nil {
				return nil, err
			}
			t.handles[handles[i]] = &handleRec{h: &h, rev: kv.ModRevision}
		}
	}
	if t.reserved, err = decodeReservations(res[4]); err != nil {
		return nil, err
	}
	for _, kv := range res[4] {
		t.reservedRev = max(t.reservedRev, kv.ModRevision)
	}
	for i, c := range hint {
		if t.affs[c] == nil {
			continue // no longer this node's: the hint is out of date
		}
		for _, kv := range res[hinted+i] {
			if err := t.addBlock(kv); err != nil {
				return nil, err
			}
		}
	}
	var missing []netip.Prefix
	for c := range t.affs {
		if t.blocks[c] == nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		if err := t.readBlocks(missing...); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// newTxn is an empty attempt for node.
func (a *Allocator) newTxn(ctx context.Context, r reader, node string) *txn {
	return &txn{a: a, r: r, ctx: ctx, node: node,
		blocks: map[netip.Prefix]*blockRec{}, affs: map[netip.Prefix]*affRec{},
		dirty: map[netip.Prefix]bool{}, dirtyAff: map[netip.Prefix]bool{},
		handles: map[string]*handleRec{}, poolRevs: map[string]int64{}, claimed: map[string]bool{}}
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

// usablePools returns the enabled pools of a family that select this node:
// those named in names (pool names or CIDRs) when names is not empty, else
// those whose allowedUses and assignmentMode let use have them.
func (t *txn) usablePools(v6 bool, names []string, use conf.PoolUse) ([]conf.IPPool, error) {
	var out []conf.IPPool
	named := map[string]bool{}
	for _, n := range names {
		i := slices.IndexFunc(t.pools, func(p conf.IPPool) bool { return p.Metadata.Name == n || p.Spec.CIDR == n })
		if i < 0 {
			return nil, perm("%w: pool %q does not exist", ErrNoPool, n)
		}
		if p := &t.pools[i]; p.Prefix().Addr().Is6() != v6 {
			return nil, perm("%w: pool %q (%s) is not of the family asked for", ErrNoPool, n, p.Spec.CIDR)
		}
		named[t.pools[i].Metadata.Name] = true
	}
	for _, p := range t.pools {
		if p.Prefix().Addr().Is6() != v6 || p.Spec.Disabled {
			continue
		}
		if len(names) > 0 && !named[p.Metadata.Name] || len(names) == 0 && !p.Spec.Allows(use) {
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
		if len(names) > 0 {
			return nil, perm("%w: none of the pools %v is an enabled %s pool that selects node %q", ErrNoPool, names, fam, t.node)
		}
		return nil, perm("%w: no enabled %s pool for %s use selects node %q", ErrNoPool, fam, use, t.node)
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
func (t *txn) autoAssign(v6 bool, names []string, use conf.PoolUse, handle string, attrs map[string]string) (HandleAddr, error) {
	pools, err := t.usablePools(v6, names, use)
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
		// A claimed block is never wholly reserved, so this cannot fail.
		if ha, ok := t.take(c, -1, handle, attrs); ok {
			return ha, nil
		}
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
	o, seq, ok := r.b.take(ord, t.reserved.skipIn(r.b), handle, attrs)
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
	if name, ok := t.reserved.holder(ip); ok {
		return HandleAddr{}, perm("ip %s: reserved by IPReservation %q", ip, name)
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
			holder = fmt.Sprintf("handle %q", al.Handle)
			if p := al.Attrs[AttrPod]; p != "" {
				holder += " (pod " + al.Attrs[AttrNamespace] + "/" + p + ")"
			}
		}
		return HandleAddr{}, perm("ip %s: already in use by %s", ip, holder)
	}
	return ha, nil
}

// guards are compare-only ops on what the assignments of this attempt were
// decided from besides the keys they write: the claims of the blocks they
// took from, the pools of those blocks, the IPAM config, the node record
// and the reservations (none added or changed). The commit then fails (and
// returns their current values) if any of them changed since it was read,
// however long ago that was.
func (t *txn) guards() []Op {
	var ops []Op
	pools := map[string]bool{}
	for c := range t.dirty {
		if ar := t.affs[c]; ar != nil && !t.dirtyAff[c] && ar.rev > 0 {
			ops = append(ops, Op{Key: affinityKey(t.node, c), Rev: ar.rev})
		}
		pools[t.blocks[c].b.Pool] = true
	}
	for name := range pools {
		if rev, ok := t.poolRevs[name]; ok && !t.claimed[name] { // ops() guards claimed pools
			ops = append(ops, Op{Key: poolKey(name), Rev: rev})
		}
	}
	return append(ops, Op{Key: configKey, Rev: t.cfgRev}, Op{Key: nodeKey(t.node), Rev: t.nodeRev},
		Op{Key: reservationsPrefix, Prefix: true, Rev: t.reservedRev})
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
	for p := range t.claimed {
		ops = append(ops, Op{Key: poolKey(p), Rev: t.poolRevs[p]}) // a guard only
	}
	return ops
}
