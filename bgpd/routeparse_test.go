package bgpd

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// routeMsg is an rtmsg for table main and brindle's protocol followed by
// attrs, each padded except, when unpaddedLast, the last one.
func routeMsg(family, dstLen byte, unpaddedLast bool, attrs ...[]byte) []byte {
	m := make([]byte, unix.SizeofRtMsg)
	m[0], m[1], m[4], m[5], m[7] = family, dstLen, unix.RT_TABLE_MAIN, byte(RouteProtocol), unix.RTN_UNICAST
	for i, a := range attrs {
		m = append(m, a...)
		if i < len(attrs)-1 || !unpaddedLast {
			for len(m)%4 != 0 {
				m = append(m, 0)
			}
		}
	}
	return m
}

func attr(typ uint16, v []byte) []byte {
	b := make([]byte, 4, 4+len(v))
	binary.NativeEndian.PutUint16(b, uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	return append(b, v...)
}

// An attribute whose length is not a multiple of 4 at the very end of the
// message (no padding after it) used to slice past the end.
func TestParseRouteUnpaddedLastAttribute(t *testing.T) {
	oif := binary.NativeEndian.AppendUint32(nil, 7)
	for _, unpadded := range []bool{false, true} {
		m := routeMsg(unix.AF_INET, 32, unpadded,
			attr(unix.RTA_DST, []byte{10, 244, 1, 2}),
			attr(unix.RTA_OIF, oif),
			attr(unix.RTA_UNSPEC+200, []byte{1})) // 5 bytes: needs 3 of padding
		if unpadded && len(m)%4 == 0 {
			t.Fatalf("message of %d bytes: the last attribute is padded", len(m))
		}
		p, k, ok := parseKey(m)
		if !ok || p != netip.MustParsePrefix("10.244.1.2/32") || k.link != 7 {
			t.Errorf("unpadded=%v: parseKey = %v %+v %v, want 10.244.1.2/32 on link 7", unpadded, p, k, ok)
		}
		r, ok := parseRoute(m)
		if !ok || r.Dst.String() != "10.244.1.2/32" || r.LinkIndex != 7 {
			t.Errorf("unpadded=%v: parseRoute = %v link %d %v, want 10.244.1.2/32 on link 7", unpadded, r.Dst, r.LinkIndex, ok)
		}
	}
}

// FuzzParseRouteMsg: route messages come from the kernel (any process in
// the namespace can add routes of brindle's protocol). parseKey, route
// sync's allocation-free decoder, must never panic and must agree with
// parseRoute followed by kernelKey, which is what it stands in for.
func FuzzParseRouteMsg(f *testing.F) {
	oif := binary.NativeEndian.AppendUint32(nil, 3)
	f.Add(routeMsg(unix.AF_INET, 26, false, attr(unix.RTA_DST, []byte{10, 244, 6, 0}), attr(unix.RTA_GATEWAY, []byte{10, 0, 0, 2}), attr(unix.RTA_OIF, oif)))
	f.Add(routeMsg(unix.AF_INET, 32, true, attr(unix.RTA_DST, []byte{10, 244, 1, 2}), attr(unix.RTA_UNSPEC+200, []byte{1})))
	f.Add(routeMsg(unix.AF_INET6, 122, false, attr(unix.RTA_DST, netip.MustParseAddr("fd00:244::").AsSlice())))
	f.Add(routeMsg(unix.AF_INET, 0, false, attr(unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, 254))))
	f.Fuzz(func(t *testing.T, m []byte) {
		p, k, ok := parseKey(m)
		r, rok := parseRoute(m)
		if ok != rok {
			t.Fatalf("parseKey ok=%v, parseRoute ok=%v", ok, rok)
		}
		if !ok {
			return
		}
		if want := kernelKey(&r); k != want {
			t.Fatalf("parseKey key %+v, kernelKey(parseRoute) %+v", k, want)
		}
		ones, _ := r.Dst.Mask.Size()
		if a, aok := netip.AddrFromSlice(r.Dst.IP); aok && r.Dst.Mask != nil && p.IsValid() {
			if want := netip.PrefixFrom(a.Unmap(), ones).Masked(); want != p {
				t.Fatalf("parseKey prefix %v, parseRoute %v", p, want)
			}
		}
	})
}
