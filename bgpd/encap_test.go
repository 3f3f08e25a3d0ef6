package bgpd

import (
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/conf"
)

func pool(name, cidr string, ipip, vxlan conf.EncapMode) conf.IPPool {
	p := conf.IPPool{Metadata: conf.ObjectMeta{Name: name}, Spec: conf.IPPoolSpec{CIDR: cidr, IPIPMode: ipip, VXLANMode: vxlan}}
	p.Default()
	return p
}

// The lab's shape: a and b share a subnet, c is behind a router.
func encapNodes() (self conf.Node, nodes []conf.Node) {
	a := node("a", "198.19.1.11/24", "", nil)
	b := node("b", "198.19.1.12/24", "", nil)
	b.TunnelIPv4, b.VXLANMAC = "10.244.1.0", "02:00:00:00:00:0b"
	c := node("c", "198.19.2.13/24", "", nil)
	c.TunnelIPv4, c.VXLANMAC = "10.244.2.0", "02:00:00:00:00:0c"
	return a, []conf.Node{a, b, c}
}

func TestRenderPerMode(t *testing.T) {
	self, nodes := encapNodes()
	rib := []Path{
		{Prefix: netip.MustParsePrefix("10.244.1.0/26"), NextHop: netip.MustParseAddr("198.19.1.12")},
		{Prefix: netip.MustParsePrefix("10.244.2.0/26"), NextHop: netip.MustParseAddr("198.19.2.13")},
	}
	for _, tc := range []struct {
		name        string
		ipip, vxlan conf.EncapMode
		want        []string
	}{
		{"native", conf.EncapNever, conf.EncapNever, []string{
			"10.244.1.0/26 via 198.19.1.12", "10.244.2.0/26 via 198.19.2.13"}},
		{"vxlan always", conf.EncapNever, conf.EncapAlways, []string{
			"10.244.1.0/26 via 10.244.1.0 dev vxlan.brindle onlink", "10.244.2.0/26 via 10.244.2.0 dev vxlan.brindle onlink"}},
		{"vxlan cross-subnet", conf.EncapNever, conf.EncapCrossSubnet, []string{
			"10.244.1.0/26 via 198.19.1.12", "10.244.2.0/26 via 10.244.2.0 dev vxlan.brindle onlink"}},
		{"ipip always", conf.EncapAlways, conf.EncapNever, []string{
			"10.244.1.0/26 via 198.19.1.12 dev tunl0 onlink", "10.244.2.0/26 via 198.19.2.13 dev tunl0 onlink"}},
		{"ipip cross-subnet", conf.EncapCrossSubnet, conf.EncapNever, []string{
			"10.244.1.0/26 via 198.19.1.12", "10.244.2.0/26 via 198.19.2.13 dev tunl0 onlink"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools := []conf.IPPool{pool("p", "10.244.0.0/16", tc.ipip, tc.vxlan)}
			rs, errs := KernelRoutes(&self, nodes, nil, rib, ImportRanges(pools), Encapsulating(&self, pools))
			var got []string
			for _, r := range rs {
				got = append(got, r.String())
			}
			if len(errs) > 0 || !slices.Equal(got, tc.want) {
				t.Errorf("routes %v (errs %v), want %v", got, errs, tc.want)
			}
		})
	}
}

func TestRenderVXLANWithoutPeerTunnelIsAnError(t *testing.T) {
	self, nodes := encapNodes()
	nodes[2].TunnelIPv4 = ""
	pools := []conf.IPPool{pool("p", "10.244.0.0/16", conf.EncapNever, conf.EncapAlways)}
	_, err := Encapsulating(&self, pools)(Path{Prefix: netip.MustParsePrefix("10.244.2.0/26"), NextHop: netip.MustParseAddr("198.19.2.13")}, &nodes[2])
	if err == nil || !strings.Contains(err.Error(), "node c has not published a VXLAN tunnel address") {
		t.Errorf("err = %v", err)
	}
}

func TestOverheadAndNodeEncaps(t *testing.T) {
	for _, tc := range []struct {
		pools []conf.IPPool
		want  int
	}{
		{[]conf.IPPool{pool("p", "10.244.0.0/16", conf.EncapNever, conf.EncapNever)}, 0},
		{[]conf.IPPool{pool("p", "10.244.0.0/16", conf.EncapCrossSubnet, conf.EncapNever)}, 20},
		{[]conf.IPPool{pool("p", "10.244.0.0/16", conf.EncapAlways, conf.EncapNever), pool("q", "10.245.0.0/16", conf.EncapNever, conf.EncapCrossSubnet)}, 50},
		{[]conf.IPPool{pool("v6", "fd00::/48", conf.EncapNever, conf.EncapAlways)}, 0},
	} {
		if got := Overhead(tc.pools); got != tc.want {
			t.Errorf("Overhead(%v) = %d, want %d", tc.pools, got, tc.want)
		}
	}
}

func TestDefaultVTEPMAC(t *testing.T) {
	a, b := DefaultVTEPMAC("node-1"), DefaultVTEPMAC("node-1")
	if a.String() != b.String() || a.String() == DefaultVTEPMAC("node-2").String() {
		t.Errorf("not deterministic per name: %s %s %s", a, b, DefaultVTEPMAC("node-2"))
	}
	if a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Errorf("%s is not a locally administered unicast MAC", a)
	}
}

// TestIPIPRoutesAsKernelObjects pins the exact netlink route an IPIP
// path becomes (this machine has no ipip module to try it on).
func TestIPIPRoutesAsKernelObjects(t *testing.T) {
	self, nodes := encapNodes()
	pools := []conf.IPPool{pool("p", "10.244.0.0/16", conf.EncapAlways, conf.EncapNever)}
	rs, _ := KernelRoutes(&self, nodes, nil, []Path{{Prefix: netip.MustParsePrefix("10.244.2.0/26"), NextHop: netip.MustParseAddr("198.19.2.13")}},
		ImportRanges(pools), Encapsulating(&self, pools))
	tab := newFakeTable()
	if _, err := NewFIB(tab, quiet(), false).Set(rs); err != nil {
		t.Fatal(err)
	}
	got := tab.routes["10.244.2.0/26"]
	want := netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.244.2.0/26")), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN,
		Family: netlink.FAMILY_V4, Type: unix.RTN_UNICAST, Gw: net.IP{198, 19, 2, 13}, LinkIndex: 8, Flags: int(netlink.FLAG_ONLINK)}
	if got.String() != want.String() || got.Protocol != want.Protocol || got.Type != want.Type || got.Table != want.Table || got.Flags != want.Flags {
		t.Errorf("route\n%+v\nwant\n%+v", got, want)
	}
}

func TestVTEPsFor(t *testing.T) {
	_, nodes := encapNodes()
	routes := []Route{
		{Dst: netip.MustParsePrefix("10.244.1.0/26"), Gw: netip.MustParseAddr("198.19.1.12")},
		{Dst: netip.MustParsePrefix("10.244.2.0/26"), Gw: netip.MustParseAddr("10.244.2.0"), Dev: VXLANDevice, OnLink: true},
		{Dst: netip.MustParsePrefix("10.244.2.64/26"), Gw: netip.MustParseAddr("10.244.2.0"), Dev: VXLANDevice, OnLink: true},
	}
	got := VTEPsFor(routes, nodes)
	if len(got) != 1 || got[0].Node != "c" || got[0].MAC.String() != "02:00:00:00:00:0c" || got[0].NodeIP.String() != "198.19.2.13" {
		t.Errorf("VTEPs %+v; want only c's", got)
	}
}

func TestNATRules(t *testing.T) {
	all := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")}
	nat := all[:1]
	var got []string
	for _, r := range NATRules(nat, all) {
		got = append(got, r.Text)
	}
	want := []string{"ip daddr 10.244.0.0/16 return", "ip daddr 10.96.0.0/12 return", "ip saddr 10.244.0.0/16 masquerade"}
	if !slices.Equal(got, want) {
		t.Errorf("rules %v, want %v", got, want)
	}
	if NATRules(nil, all) != nil {
		t.Error("rules without any NAT pool")
	}
	// The exact expressions of `ip saddr 10.244.0.0/16 masquerade`.
	wantExprs := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 244, 0, 0}},
		&expr.Masq{},
	}
	if r := NATRules(nat, all)[2]; !reflect.DeepEqual(r.Exprs, wantExprs) {
		t.Errorf("masquerade rule exprs %#v", r.Exprs)
	}
	if r := NATRules(nat, all)[1]; r.Exprs[0].(*expr.Payload).Offset != 16 || r.Exprs[3].(*expr.Verdict).Kind != expr.VerdictReturn {
		t.Errorf("return rule exprs %#v", r.Exprs)
	}
}
