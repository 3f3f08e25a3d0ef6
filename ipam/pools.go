package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/brindle-net/brindle/conf"
)

// ListPools returns every stored pool, defaults applied, sorted by name.
func (a *Allocator) ListPools(ctx context.Context) ([]conf.IPPool, error) {
	pools, _, err := a.readPools(ctx)
	return pools, err
}

func (a *Allocator) readPools(ctx context.Context) ([]conf.IPPool, map[string]int64, error) {
	res, err := a.Store.Read(ctx, Get{Key: poolsPrefix, Prefix: true})
	if err != nil {
		return nil, nil, err
	}
	revs := map[string]int64{}
	var pools []conf.IPPool
	for _, kv := range res[0] {
		p, err := conf.UnmarshalPool(kv.Value)
		if err != nil {
			// Not a pool at all: nothing to show or check against; `ipam
			// check` names it and `pool delete NAME --force` removes it.
			a.Log.Warn("ignoring a stored pool that does not decode", "key", kv.Key, "err", err)
			continue
		}
		pools = append(pools, p)
		revs[p.Metadata.Name] = kv.ModRevision
	}
	sort.Slice(pools, func(i, j int) bool { return pools[i].Metadata.Name < pools[j].Metadata.Name })
	return pools, revs, nil
}

// ApplyPool creates or updates a pool. It applies defaults, validates the
// pool and its overlap with every other pool, and stores it with every
// setting written out. A pool's cidr and blockSize cannot change once it
// exists, because blocks were carved with them; delete and re-create instead.
// The commit is guarded by the revisions of all pools it checked against.
func (a *Allocator) ApplyPool(ctx context.Context, p conf.IPPool) (created bool, err error) {
	p.Default()
	if err := p.Validate(); err != nil {
		return false, fmt.Errorf("pool %q: %w", p.Metadata.Name, err)
	}
	err = a.retry(ctx, "apply pool "+p.Metadata.Name, func() (bool, error) {
		pools, revs, err := a.readPools(ctx)
		if err != nil {
			return false, err
		}
		if err := a.checkPoolNetworks(ctx, p); err != nil {
			return false, err
		}
		all := []conf.IPPool{p}
		ops := []Op{}
		rev, exists := revs[p.Metadata.Name]
		for _, o := range pools {
			if o.Metadata.Name == p.Metadata.Name {
				if o.Spec.CIDR != p.Spec.CIDR || o.Spec.BlockSize != p.Spec.BlockSize {
					return false, perm("pool %q: cidr and blockSize cannot change (stored %s/%d, given %s/%d); delete the pool and create it again",
						p.Metadata.Name, o.Spec.CIDR, o.Spec.BlockSize, p.Spec.CIDR, p.Spec.BlockSize)
				}
				continue
			}
			all = append(all, o)
			ops = append(ops, Op{Key: poolKey(o.Metadata.Name), Rev: revs[o.Metadata.Name]})
		}
		if err := conf.ValidatePools(all); err != nil {
			return false, perm("%w", err)
		}
		if !exists {
			rev = MustNotExist
		}
		created = !exists
		v, err := conf.MarshalPool(p)
		if err != nil {
			return false, perm("encode pool: %w", err)
		}
		return a.Store.Commit(ctx, append(ops, Op{Key: poolKey(p.Metadata.Name), Value: v, Rev: rev})...)
	})
	return created, err
}

// DeletePool deletes a pool and its blocks. While any address of the pool is
// allocated it refuses, unless force is set; a forced delete drops the
// allocations with the blocks (their handles then release nothing).
//
// Nodes may be claiming blocks of the pool meanwhile, so it goes in steps
// that leave no block behind: the pool is first disabled (a new revision:
// every claim is guarded by its pool's revision, so a claim that read the
// pool before fails, and one that reads it after sees it disabled and
// claims nothing); its blocks, now a fixed set, are read and deleted, each
// guarded by its revision (an allocation in flight makes the guard fail and
// the block is judged again); the pool goes last. Refused without force,
// the pool gets its disabled setting back.
func (a *Allocator) DeletePool(ctx context.Context, name string, force bool) error {
	res, err := a.Store.Read(ctx, Get{Key: poolKey(name)})
	if err != nil {
		return err
	}
	if len(res[0]) == 0 {
		return fmt.Errorf("pool %q: not found", name)
	}
	orig, err := conf.UnmarshalPool(res[0][0].Value)
	if err != nil {
		if !force {
			return fmt.Errorf("pool %q: the stored value is not a pool (%v); delete it with --force", name, err)
		}
		// Nothing can have been allocated from a pool that never decoded.
		_, err := a.Store.Commit(ctx, Op{Key: poolKey(name), Delete: true, Rev: res[0][0].ModRevision})
		return err
	}
	if _, used, err := a.poolBlocks(ctx, orig); err != nil {
		return err
	} else if used > 0 && !force {
		return fmt.Errorf("pool %q: %d addresses are allocated; release them first or delete with --force", name, used)
	}
	off := orig
	off.Spec.Disabled = true
	v, err := conf.MarshalPool(off)
	if err != nil {
		return err
	}
	ok, err := a.Store.Commit(ctx, Op{Key: poolKey(name), Value: v, Rev: res[0][0].ModRevision})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("pool %q: changed while deleting; try again", name)
	}
	res, err = a.Store.Read(ctx, Get{Key: poolKey(name)})
	if err != nil {
		return err
	}
	if len(res[0]) == 0 {
		return nil // deleted by someone else meanwhile
	}
	poolRev := res[0][0].ModRevision
	refuse := func(used int) error {
		back, err := conf.MarshalPool(orig)
		if err == nil {
			_, err = a.Store.Commit(ctx, Op{Key: poolKey(name), Value: back, Rev: poolRev})
		}
		if err != nil {
			return fmt.Errorf("pool %q: %d addresses were allocated while deleting, and restoring its disabled setting failed (it is disabled now): %w", name, used, err)
		}
		return fmt.Errorf("pool %q: %d addresses are allocated; release them first or delete with --force", name, used)
	}
	for attempt := 0; ; attempt++ {
		blocks, used, err := a.poolBlocks(ctx, orig)
		if err != nil {
			return err
		}
		if used > 0 && !force {
			return refuse(used)
		}
		changed := false
		for _, b := range blocks {
			ops := []Op{{Key: blockKey(b.b.CIDR), Delete: true, Rev: b.rev}}
			if b.b.Affinity != "" {
				ops = append(ops, Op{Key: affinityKey(b.b.Affinity, b.b.CIDR), Delete: true, Rev: AnyRev})
			}
			ok, err := a.Store.Commit(ctx, ops...)
			if err != nil {
				return fmt.Errorf("pool %q: deleting block %s failed (the pool is disabled; run the delete again): %w", name, b.b.CIDR, err)
			}
			changed = changed || !ok
		}
		if !changed {
			break
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("pool %q: blocks kept changing while deleting (the pool is disabled; run the delete again): %w", name, err)
		}
	}
	ok, err = a.Store.Commit(ctx, Op{Key: poolKey(name), Delete: true, Rev: poolRev})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("pool %q: changed while deleting (its blocks are deleted and it is disabled); try again", name)
	}
	return nil
}

// poolBlk is a block of a pool with its revision.
type poolBlk struct {
	b   Block
	rev int64
}

// poolBlocks reads the blocks of pool p and counts their allocations.
func (a *Allocator) poolBlocks(ctx context.Context, p conf.IPPool) ([]poolBlk, int, error) {
	res, err := a.Store.Read(ctx, Get{Key: blocksPrefix, Prefix: true})
	if err != nil {
		return nil, 0, err
	}
	pfx, _ := netip.ParsePrefix(p.Spec.CIDR)
	var blocks []poolBlk
	used := 0
	for _, kv := range res[0] {
		var b Block
		if err := decode(kv, &b); err != nil {
			return nil, 0, err
		}
		if b.Pool == p.Metadata.Name && pfx.Contains(b.CIDR.Addr()) {
			blocks = append(blocks, poolBlk{b, kv.ModRevision})
			used += b.InUse()
		}
	}
	return blocks, used, nil
}

// checkPoolNetworks refuses a pool that overlaps a node's network (the
// subnet of a registered node's address) or a Service CIDR (ipam/config's
// serviceCIDRs, and those brindled's Kubernetes controller publishes):
// pod addresses there would collide with hosts or Services.
func (a *Allocator) checkPoolNetworks(ctx context.Context, p conf.IPPool) error {
	res, err := a.Store.Read(ctx, Get{Key: nodesPrefix, Prefix: true}, Get{Key: configKey}, Get{Key: serviceCIDRsKey})
	if err != nil {
		return err
	}
	pfx := p.Prefix()
	for _, kv := range res[0] {
		n, err := conf.UnmarshalNode(kv.Value)
		if err != nil {
			continue
		}
		for _, addr := range []string{n.IPv4Address, n.IPv6Address} {
			if na, err := netip.ParsePrefix(addr); err == nil && na.Masked().Overlaps(pfx) {
				return perm("spec.cidr %q of pool %q: overlaps the network %s of node %q (%s); pod addresses would collide with hosts",
					p.Spec.CIDR, p.Metadata.Name, na.Masked(), n.Name, addr)
			}
		}
	}
	var svc []string
	if len(res[1]) > 0 {
		var c Config
		if err := decode(res[1][0], &c); err != nil {
			return err
		}
		svc = append(svc, c.ServiceCIDRs...)
	}
	if len(res[2]) > 0 {
		var k ServiceCIDRs
		if err := decode(res[2][0], &k); err != nil {
			return err
		}
		svc = append(svc, k.CIDRs...)
	}
	for _, s := range svc {
		if sp, err := netip.ParsePrefix(s); err == nil && sp.Overlaps(pfx) {
			return perm("spec.cidr %q of pool %q: overlaps the Service CIDR %s; pod addresses would collide with Service addresses",
				p.Spec.CIDR, p.Metadata.Name, s)
		}
	}
	return nil
}

// ServiceCIDRs is the record at kubernetes/servicecidrs: the cluster's
// Service CIDRs, as brindled's Kubernetes controller reads them from the
// API (networking.k8s.io/v1 ServiceCIDR). Pools may not overlap them.
type ServiceCIDRs struct {
	V     int      `json:"v"`
	CIDRs []string `json:"cidrs"`
}

// PublishServiceCIDRs records the cluster's Service CIDRs (no write when
// they are what is stored already).
func (a *Allocator) PublishServiceCIDRs(ctx context.Context, cidrs []string) error {
	for _, c := range cidrs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("service cidr %q: %w", c, err)
		}
	}
	sort.Strings(cidrs)
	res, err := a.Store.Read(ctx, Get{Key: serviceCIDRsKey})
	if err != nil {
		return err
	}
	rev := MustNotExist
	if len(res[0]) > 0 {
		var cur ServiceCIDRs
		if decode(res[0][0], &cur) == nil && slices.Equal(cur.CIDRs, cidrs) {
			return nil
		}
		rev = res[0][0].ModRevision
	}
	_, err = a.Store.Commit(ctx, Op{Key: serviceCIDRsKey, Value: mustJSON(ServiceCIDRs{V: SchemaVersion, CIDRs: cidrs}), Rev: rev})
	return err
}

// GetConfig returns the cluster IPAM config (defaults when unset).
func (a *Allocator) GetConfig(ctx context.Context) (Config, error) {
	var c Config
	res, err := a.Store.Read(ctx, Get{Key: configKey})
	if err != nil || len(res[0]) == 0 {
		return Config{V: SchemaVersion}, err
	}
	return c, decode(res[0][0], &c)
}

// SetConfig stores the cluster IPAM config.
func (a *Allocator) SetConfig(ctx context.Context, c Config) error {
	if c.MaxBlocksPerHost < 0 {
		return fmt.Errorf("maxBlocksPerHost %d: must be 0 (no limit) or more", c.MaxBlocksPerHost)
	}
	for _, s := range c.ServiceCIDRs {
		if p, err := netip.ParsePrefix(s); err != nil || p.Masked() != p {
			return fmt.Errorf("serviceCIDRs %q: want a CIDR without host bits, e.g. 10.96.0.0/12", s)
		}
	}
	c.V = SchemaVersion
	_, err := a.Store.Commit(ctx, Op{Key: configKey, Value: mustJSON(c), Rev: AnyRev})
	return err
}
