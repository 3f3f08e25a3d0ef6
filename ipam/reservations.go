package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	"github.com/brindle-net/brindle/conf"
)

// reservedRange is one reserved CIDR and the reservation it belongs to.
type reservedRange struct {
	p    netip.Prefix
	name string
}

// reservedSet is every reserved range an attempt works under.
type reservedSet []reservedRange

func decodeReservations(kvs []KV) (reservedSet, error) {
	var out reservedSet
	for _, kv := range kvs {
		r, err := conf.UnmarshalReservation(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		for _, p := range r.Prefixes() {
			out = append(out, reservedRange{p: p, name: r.Metadata.Name})
		}
	}
	return out, nil
}

// holder returns the reservation that covers a.
func (rs reservedSet) holder(a netip.Addr) (string, bool) {
	for _, r := range rs {
		if r.p.Contains(a) {
			return r.name, true
		}
	}
	return "", false
}

// skipIn returns, for automatic allocation in b, a test of whether an
// ordinal is reserved; nil when no reservation touches the block.
func (rs reservedSet) skipIn(b *Block) func(int) bool {
	var in reservedSet
	for _, r := range rs {
		if r.p.Overlaps(b.CIDR) {
			in = append(in, r)
		}
	}
	if len(in) == 0 {
		return nil
	}
	return func(ord int) bool {
		_, ok := in.holder(b.Addr(ord))
		return ok
	}
}

// coversBlock reports whether every address of block c is reserved, so
// claiming it would give nothing.
func (rs reservedSet) coversBlock(c netip.Prefix) bool {
	var in reservedSet
	for _, r := range rs {
		if r.p.Overlaps(c) {
			if r.p.Bits() <= c.Bits() {
				return true
			}
			in = append(in, r)
		}
	}
	if len(in) == 0 {
		return false
	}
	b := &Block{CIDR: c}
	for i := range blockLen(c) {
		if _, ok := in.holder(b.Addr(i)); !ok {
			return false
		}
	}
	return true
}

// ListReservations returns every stored reservation, sorted by name.
func (a *Allocator) ListReservations(ctx context.Context) ([]conf.IPReservation, error) {
	res, err := a.Store.Read(ctx, Get{Key: reservationsPrefix, Prefix: true})
	if err != nil {
		return nil, err
	}
	var out []conf.IPReservation
	for _, kv := range res[0] {
		r, err := conf.UnmarshalReservation(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return out, nil
}

// ApplyReservation creates or replaces a reservation. Addresses it covers
// that are allocated already keep their holders; they are returned, so the
// operator can move those pods. The reservation applies to every later
// allocation.
func (a *Allocator) ApplyReservation(ctx context.Context, r conf.IPReservation) (created bool, inUse []IPInfo, err error) {
	r.Default()
	if err := r.Validate(); err != nil {
		return false, nil, fmt.Errorf("ipreservation %q: %w", r.Metadata.Name, err)
	}
	res, err := a.Store.Read(ctx, Get{Key: reservationKey(r.Metadata.Name)}, Get{Key: blocksPrefix, Prefix: true})
	if err != nil {
		return false, nil, err
	}
	rev := MustNotExist
	if len(res[0]) > 0 {
		rev = res[0][0].ModRevision
	}
	ok, err := a.Store.Commit(ctx, Op{Key: reservationKey(r.Metadata.Name), Value: mustJSON(r), Rev: rev})
	if err != nil {
		return false, nil, err
	}
	if !ok {
		return false, nil, fmt.Errorf("ipreservation %q: changed while applying; try again", r.Metadata.Name)
	}
	rs := reservedSet{}
	for _, p := range r.Prefixes() {
		rs = append(rs, reservedRange{p: p, name: r.Metadata.Name})
	}
	for _, kv := range res[1] {
		var b Block
		if err := decode(kv, &b); err != nil {
			return rev == MustNotExist, inUse, err
		}
		for i, al := range b.Allocations {
			if al == nil {
				continue
			}
			if _, hit := rs.holder(b.Addr(i)); hit {
				inUse = append(inUse, IPInfo{IP: b.Addr(i).String(), Pool: b.Pool, Block: b.CIDR.String(), Affinity: b.Affinity,
					Allocated: true, Handle: al.Handle, Seq: al.Seq, Attrs: al.Attrs})
			}
		}
	}
	return rev == MustNotExist, inUse, nil
}

// DeleteReservation deletes a reservation; its addresses become assignable.
func (a *Allocator) DeleteReservation(ctx context.Context, name string) error {
	res, err := a.Store.Read(ctx, Get{Key: reservationKey(name)})
	if err != nil {
		return err
	}
	if len(res[0]) == 0 {
		return fmt.Errorf("ipreservation %q: not found", name)
	}
	ok, err := a.Store.Commit(ctx, Op{Key: reservationKey(name), Delete: true, Rev: res[0][0].ModRevision})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("ipreservation %q: changed while deleting; try again", name)
	}
	return nil
}
