package nftquery

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
)

func TestAdmitted(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIP: needs the nft binary (Debian package nftables) to make a table")
	}
	n := testenv.NewNS(t)
	a4, a6 := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")
	err := n.Do(func(ns.NetNS) error {
		if ok, err := TableExists(); err != nil || ok {
			t.Errorf("TableExists with no table: %v %v", ok, err)
		}
		if ok, err := Admitted("bri0123456789ab", []netip.Addr{a4}); err != nil || ok {
			t.Errorf("Admitted with no table: %v %v", ok, err)
		}
		out, err := exec.Command("nft", `add table inet brindle
add set inet brindle eps4 { type ifname . ipv4_addr; elements = { "bri0123456789ab" . 10.0.0.5 } }
add set inet brindle eps6 { type ifname . ipv6_addr; }`).CombinedOutput()
		if err != nil {
			t.Fatalf("nft: %v %s", err, out)
		}
		if ok, err := TableExists(); err != nil || !ok {
			t.Errorf("TableExists: %v %v", ok, err)
		}
		for _, c := range []struct {
			veth  string
			addrs []netip.Addr
			want  bool
		}{
			{"bri0123456789ab", []netip.Addr{a4}, true},
			{"bri0123456789ab", []netip.Addr{a4, a6}, false},
			{"bri0123456789ac", []netip.Addr{a4}, false},
			{"bri0123456789ab", []netip.Addr{netip.MustParseAddr("10.0.0.6")}, false},
		} {
			if ok, err := Admitted(c.veth, c.addrs); err != nil || ok != c.want {
				t.Errorf("Admitted(%s, %v) = %v %v, want %v", c.veth, c.addrs, ok, err, c.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkTableExists is what ADD adds on a host without brindled's
// table: one netlink request.
func BenchmarkTableExists(b *testing.B) {
	testenv.RequireRoot(b)
	n := testenv.NewNS(b)
	_ = n.Do(func(ns.NetNS) error {
		for b.Loop() {
			if _, err := TableExists(); err != nil {
				b.Fatal(err)
			}
		}
		return nil
	})
}

// BenchmarkAdmitted is one poll of ADD's wait on a host with the table.
func BenchmarkAdmitted(b *testing.B) {
	testenv.RequireRoot(b)
	n := testenv.NewNS(b)
	_ = n.Do(func(ns.NetNS) error {
		out, err := exec.Command("nft", `add table inet brindle
add set inet brindle eps4 { type ifname . ipv4_addr; elements = { "bri0123456789ab" . 10.0.0.5 } }`).CombinedOutput()
		if err != nil {
			b.Skipf("nft: %v %s", err, out)
		}
		a := []netip.Addr{netip.MustParseAddr("10.0.0.5")}
		for b.Loop() {
			if ok, err := Admitted("bri0123456789ab", a); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
		return nil
	})
}
