package ipam

import (
	"hash/fnv"
	"math/big"
	"net/netip"

	"github.com/brindle-net/brindle/conf"
)

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
		// Only existing blocks (and those this attempt has claimed or
		// read) can be in the way, so one more candidate than there are
		// of them is always enough.
		tries := uint64(len(existing) + len(t.blocks) + 1)
		if tries > total {
			tries = total
		}
		start := seed % total
		for i := uint64(0); i < tries; i++ {
			c := blockAt(pfx, p.Spec.BlockSize, (start+i)%total)
			if existing[c] || t.blocks[c] != nil {
				continue
			}
			if t.reserved.coversBlock(c) {
				// Wholly reserved blocks are in the way too.
				tries = min(tries+1, total)
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
	if t.claimed != nil {
		t.claimed[pool] = true
	}
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
