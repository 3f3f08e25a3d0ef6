package nft

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Range is an inclusive range of addresses of one family: a peer set's
// element. A single address has From == To.
type Range struct {
	From, To netip.Addr
}

// AddrRange is the range holding only a.
func AddrRange(a netip.Addr) Range { return Range{a, a} }

// PrefixRange is the range a prefix covers.
func PrefixRange(p netip.Prefix) Range {
	p = p.Masked()
	return Range{p.Addr(), lastAddr(p)}
}

func (r Range) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	if p, ok := r.prefix(); ok {
		return p.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// prefix reports whether r is exactly one prefix, and which.
func (r Range) prefix() (netip.Prefix, bool) {
	for bits := 0; bits <= r.From.BitLen(); bits++ {
		p := netip.PrefixFrom(r.From, bits)
		if p.Masked().Addr() == r.From && lastAddr(p) == r.To {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Normalize sorts ranges and merges those that overlap or touch, per
// family (IPv4 first): the form nftables interval sets accept.
func Normalize(rs []Range) []Range {
	if normalized(rs) {
		return rs
	}
	out := slices.Clone(rs)
	slices.SortFunc(out, func(a, b Range) int {
		return cmp.Or(a.From.Compare(b.From), a.To.Compare(b.To))
	})
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if last.To.Is4() == r.From.Is4() && (r.From.Compare(last.To) <= 0 || last.To.Next() == r.From) {
				if r.To.Compare(last.To) > 0 {
					last.To = r.To
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	return merged
}

// Subtract returns the parts of r not in any of holes.
func Subtract(r Range, holes []Range) []Range {
	cur := []Range{r}
	for _, h := range holes {
		if h.From.Is4() != r.From.Is4() {
			continue
		}
		var next []Range
		for _, c := range cur {
			if h.To.Less(c.From) || c.To.Less(h.From) {
				next = append(next, c)
				continue
			}
			if c.From.Less(h.From) {
				next = append(next, Range{c.From, h.From.Prev()})
			}
			if h.To.Less(c.To) {
				next = append(next, Range{h.To.Next(), c.To})
			}
		}
		cur = next
	}
	return cur
}

// Contains reports whether a is in one of rs.
func Contains(rs []Range, a netip.Addr) bool {
	for _, r := range rs {
		if r.From.Is4() == a.Is4() && r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0 {
			return true
		}
	}
	return false
}

// SplitFamilies returns the IPv4 and the IPv6 ranges of rs.
func SplitFamilies(rs []Range) (v4, v6 []Range) {
	for _, r := range rs {
		if r.From.Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	return v4, v6
}

// ParseRange parses an address, a prefix or FROM-TO.
func ParseRange(s string) (Range, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return PrefixRange(p), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return AddrRange(a.Unmap()), nil
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			f, err1 := netip.ParseAddr(s[:i])
			t, err2 := netip.ParseAddr(s[i+1:])
			if err1 == nil && err2 == nil && f.Is4() == t.Is4() && f.Compare(t) <= 0 {
				return Range{f, t}, nil
			}
		}
	}
	return Range{}, fmt.Errorf("address range %q: want ADDR, ADDR/LEN or FROM-TO", s)
}

// normalized reports whether rs is already sorted, IPv4 first, with no two
// ranges overlapping or touching.
func normalized(rs []Range) bool {
	for i := 1; i < len(rs); i++ {
		a, b := rs[i-1], rs[i]
		if a.To.Is4() == b.From.Is4() {
			if b.From.Compare(a.To) <= 0 || a.To.Next() == b.From {
				return false
			}
		} else if !a.To.Is4() {
			return false // IPv6 before IPv4
		}
	}
	return true
}
