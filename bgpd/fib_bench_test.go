package bgpd

import (
	"net/netip"
	"testing"
)

// BenchmarkFIBSetUnchanged is the CPU cost of a Set that changes nothing,
// for 100,000 routes (the kernel side is the in-memory fake).
func BenchmarkFIBSetUnchanged(b *testing.B) {
	want := make([]Route, 100000)
	for i := range want {
		want[i] = Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>14), byte(i >> 6), byte(i&63) << 2}), 30),
			Gw: netip.MustParseAddr("198.18.0.2")}
	}
	fib := NewFIB(newFakeTable(), quiet(), false)
	if _, err := fib.Set(want); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := fib.Set(want); err != nil {
			b.Fatal(err)
		}
	}
}
