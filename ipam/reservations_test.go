package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/brindle-net/brindle/conf"
)

func reserve(t *testing.T, a *Allocator, name string, cidrs ...string) []IPInfo {
	t.Helper()
	_, inUse, err := a.ApplyReservation(ctxT(t), conf.IPReservation{Metadata: conf.ObjectMeta{Name: name},
		Spec: conf.IPReservationSpec{ReservedCIDRs: cidrs}})
	if err != nil {
		t.Fatalf("reserve %v: %v", cidrs, err)
	}
	return inUse
}

func TestReservedAddressesNeverHandedOutAutomatically(t *testing.T) {
	a, _ := newAlloc(t)
	// A /28 pool of blocks of 4: the first block is wholly reserved, the
	// second has two reserved addresses.
	addPool(t, a, "small", "10.70.0.0/28", func(p *conf.IPPool) { p.Spec.BlockSize = 30 })
	reserve(t, a, "gw", "10.70.0.0/30", "10.70.0.4", "10.70.0.6/32")
	var got []netip.Addr
	for i := range 10 {
		ha, err := a.Assign(ctxT(t), AssignRequest{Handle: "c" + string(rune('a'+i)) + ".eth0", Node: "n1", IPv4: true})
		if errors.Is(err, ErrExhausted) {
			t.Logf("after %d: %v", i, err)
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ha[0].Addr)
	}
	// 16 addresses, 6 reserved: exactly the other 10 are handed out.
	if len(got) != 10 {
		t.Fatalf("handed out %d addresses %v, want 10", len(got), got)
	}
	for _, ip := range got {
		if ip.Less(netip.MustParseAddr("10.70.0.4")) || ip == netip.MustParseAddr("10.70.0.4") || ip == netip.MustParseAddr("10.70.0.6") {
			t.Errorf("reserved address %s handed out", ip)
		}
	}
	if b, ok := readBlock(t, a, netip.MustParsePrefix("10.70.0.0/30")); ok {
		t.Errorf("a wholly reserved block was claimed: %+v", b)
	}
	// Deleting the reservation makes the addresses assignable again.
	if err := a.DeleteReservation(ctxT(t), "gw"); err != nil {
		t.Fatal(err)
	}
	ha := assign4(t, a, "n1", "after.eth0")
	if !netip.MustParsePrefix("10.70.0.0/28").Contains(ha.Addr) {
		t.Fatalf("after delete: %s", ha.Addr)
	}
	if err := a.DeleteReservation(ctxT(t), "gw"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("second delete: %v", err)
	}
}

func TestReservationReportsAddressesInUse(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	first := assign4(t, a, "n1", "c1.eth0")
	inUse := reserve(t, a, "late", first.Addr.String())
	if len(inUse) != 1 || inUse[0].Handle != "c1.eth0" {
		t.Fatalf("in use: %+v", inUse)
	}
	if h, _ := a.HandleOf(ctxT(t), "c1.eth0"); h == nil {
		t.Fatal("the holder lost its address")
	}
	rs, err := a.ListReservations(ctxT(t))
	if err != nil || len(rs) != 1 || rs[0].Spec.ReservedCIDRs[0] != first.Addr.String()+"/32" {
		t.Fatalf("list: %+v %v", rs, err)
	}
}

// A requested address that is taken, outside every pool, reserved, or in a
// disabled pool fails the whole request, and nothing is written.
func TestRequestedAddressRules(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	addPool(t, a, "off", "10.245.0.0/16", func(p *conf.IPPool) { p.Spec.Disabled = true })
	addPool(t, a, "v6", "fd00:10::/64", nil)
	assign4(t, a, "n1", "holder.eth0")
	taken, _ := a.HandleOf(ctxT(t), "holder.eth0")
	reserve(t, a, "gw", "10.244.9.1")
	before := keys(t, s.Client, "")
	for _, tc := range []struct {
		ips  []string
		want string
	}{
		{[]string{taken.Addrs[0].Addr.String()}, `already in use by handle "holder.eth0"`},
		{[]string{"192.168.1.1"}, "not inside any ip pool"},
		{[]string{"10.244.9.1"}, `reserved by IPReservation "gw"`},
		{[]string{"10.245.0.7"}, `pool "off" is disabled`},
		// A good IPv6 address next to a bad IPv4 one: neither is taken.
		{[]string{"fd00:10::5", "10.244.9.1"}, `reserved by IPReservation "gw"`},
	} {
		var ips []netip.Addr
		for _, ip := range tc.ips {
			ips = append(ips, netip.MustParseAddr(ip))
		}
		_, err := a.Assign(ctxT(t), AssignRequest{Handle: "c2.eth0", Node: "n2", IPs: ips,
			Endpoint: &Endpoint{ContainerID: "c2", IfName: "eth0"}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want error containing %q, got %v", tc.ips, tc.want, err)
		}
	}
	if after := keys(t, s.Client, ""); !slices.Equal(before, after) {
		t.Fatalf("refused requests wrote keys:\nbefore %v\nafter  %v", before, after)
	}
}

func TestAllowedUsesAndAssignmentMode(t *testing.T) {
	a, _ := newAlloc(t)
	addPool(t, a, "tunnels", "10.80.0.0/16", func(p *conf.IPPool) { p.Spec.AllowedUses = []conf.PoolUse{conf.UseTunnel} })
	addPool(t, a, "manual", "10.81.0.0/16", func(p *conf.IPPool) { p.Spec.AssignmentMode = conf.AssignManual })
	addPool(t, a, "pods", "10.82.0.0/16", func(p *conf.IPPool) { p.Spec.AllowedUses = []conf.PoolUse{conf.UseWorkload} })
	in := func(ha HandleAddr, cidr string) bool { return netip.MustParsePrefix(cidr).Contains(ha.Addr) }
	if ha := assign4(t, a, "n1", "pod.eth0"); !in(ha, "10.82.0.0/16") {
		t.Fatalf("workload got %s, want the pods pool", ha.Addr)
	}
	got, err := a.Assign(ctxT(t), AssignRequest{Handle: "tunnel-n1", Node: "n1", IPv4: true, Use: conf.UseTunnel})
	if err != nil || !in(got[0], "10.80.0.0/16") {
		t.Fatalf("tunnel got %v %v, want the tunnels pool", got, err)
	}
	// Named explicitly, a pool is used whatever allowedUses and
	// assignmentMode say (Calico: annotations take precedence); by name or
	// by CIDR.
	for _, name := range []string{"manual", "10.81.0.0/16", "tunnels"} {
		got, err := a.Assign(ctxT(t), AssignRequest{Handle: "named-" + strings.ReplaceAll(name, "/", "-") + ".eth0", Node: "n1", IPv4: true, IPv4Pools: []string{name}})
		if err != nil {
			t.Fatalf("named %s: %v", name, err)
		}
		if name != "tunnels" && !in(got[0], "10.81.0.0/16") {
			t.Fatalf("named %s: got %s", name, got[0].Addr)
		}
	}
	if _, err := a.Assign(ctxT(t), AssignRequest{Handle: "x.eth0", Node: "n1", IPv4: true, IPv4Pools: []string{"10.99.0.0/16"}}); err == nil || !strings.Contains(err.Error(), `pool "10.99.0.0/16" does not exist`) {
		t.Fatalf("unknown CIDR: %v", err)
	}
	if _, err := a.Assign(ctxT(t), AssignRequest{Handle: "x.eth0", Node: "n1", IPv6: true, IPv6Pools: []string{"pods"}}); err == nil || !strings.Contains(err.Error(), "not of the family") {
		t.Fatalf("v4 pool for v6: %v", err)
	}
}

func TestPoolsOverlappingNodeOrServiceNetworksRefused(t *testing.T) {
	a, s := newAlloc(t)
	if _, err := s.Client.Put(ctxT(t), Prefix+nodeKey("n1"), `{"v":1,"name":"n1","ipv4Address":"192.168.10.5/24","ipv6Address":"fd00:1::5/64"}`); err != nil {
		t.Fatal(err)
	}
	if err := a.SetConfig(ctxT(t), Config{ServiceCIDRs: []string{"10.96.0.0/12"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.PublishServiceCIDRs(ctxT(t), []string{"fd00:96::/108"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ cidr, want string }{
		{"192.168.0.0/16", `overlaps the network 192.168.10.0/24 of node "n1" (192.168.10.5/24)`},
		{"192.168.10.128/26", `overlaps the network 192.168.10.0/24 of node "n1"`},
		{"fd00:1::/64", `overlaps the network fd00:1::/64 of node "n1"`},
		{"10.100.0.0/16", "overlaps the Service CIDR 10.96.0.0/12"},
		{"fd00:96::/112", "overlaps the Service CIDR fd00:96::/108"},
	} {
		_, err := a.ApplyPool(ctxT(t), conf.IPPool{Metadata: conf.ObjectMeta{Name: "bad"}, Spec: conf.IPPoolSpec{CIDR: tc.cidr}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want %q, got %v", tc.cidr, tc.want, err)
		}
	}
	if pools, _ := a.ListPools(ctxT(t)); len(pools) != 0 {
		t.Fatalf("refused pools stored: %v", pools)
	}
	addPool(t, a, "fine", "10.244.0.0/16", nil)
	if err := a.SetConfig(ctxT(t), Config{ServiceCIDRs: []string{"10.96.0.1/12"}}); err == nil || !strings.Contains(err.Error(), `serviceCIDRs "10.96.0.1/12"`) {
		t.Fatalf("bad service cidr: %v", err)
	}
}
