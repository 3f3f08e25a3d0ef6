package ipam

import (
	"context"
	"fmt"
	"net/netip"
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
			return nil, nil, fmt.Errorf("%s: %w", kv.Key, err)
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
func (a *Allocator) DeletePool(ctx context.Context, name string, force bool) error {
	res, err := a.Store.Read(ctx, Get{Key: poolKey(name)}, Get{Key: blocksPrefix, Prefix: true})
	if err != nil {
		return err
	}
	if len(res[0]) == 0 {
		return fmt.Errorf("pool %q: not found", name)
	}
	p, err := conf.UnmarshalPool(res[0][0].Value)
	if err != nil {
		return err
	}
	pfx, _ := netip.ParsePrefix(p.Spec.CIDR)
	type blk struct {
		b   Block
		rev int64
	}
	var blocks []blk
	used := 0
	for _, kv := range res[1] {
		var b Block
		if err := decode(kv, &b); err != nil {
			return err
		}
		if b.Pool == name && pfx.Contains(b.CIDR.Addr()) {
			blocks = append(blocks, blk{b, kv.ModRevision})
			used += b.InUse()
		}
	}
	if used > 0 && !force {
		return fmt.Errorf("pool %q: %d addresses are allocated; release them first or delete with --force", name, used)
	}
	// The pool goes first: from then on nothing allocates from its blocks.
	ok, err := a.Store.Commit(ctx, Op{Key: poolKey(name), Delete: true, Rev: res[0][0].ModRevision})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("pool %q: changed while deleting; try again", name)
	}
	for _, b := range blocks {
		ops := []Op{{Key: blockKey(b.b.CIDR), Delete: true, Rev: AnyRev}}
		if b.b.Affinity != "" {
			ops = append(ops, Op{Key: affinityKey(b.b.Affinity, b.b.CIDR), Delete: true, Rev: AnyRev})
		}
		if _, err := a.Store.Commit(ctx, ops...); err != nil {
			return fmt.Errorf("pool %q deleted, but deleting block %s failed (run `brindlectl ipam check`): %w", name, b.b.CIDR, err)
		}
	}
	return nil
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
	c.V = SchemaVersion
	_, err := a.Store.Commit(ctx, Op{Key: configKey, Value: mustJSON(c), Rev: AnyRev})
	return err
}
