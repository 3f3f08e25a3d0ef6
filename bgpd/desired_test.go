package bgpd

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/brindle-net/brindle/conf"
)

func node(name, addr string, rr string, labels map[string]string) conf.Node {
	return conf.Node{V: 1, Name: name, IPv4Address: addr, RouteReflectorClusterID: rr, Labels: labels}
}

func peerSummary(ps []PeerSpec) []string {
	var out []string
	for _, p := range ps {
		s := p.Address.String() + " " + p.Kind
		if p.RRClient {
			s += " client-of-" + p.ClusterID
		}
		if p.Passive {
			s += " passive"
		}
		out = append(out, s)
	}
	return out
}

func TestDesiredPeers(t *testing.T) {
	meshOff := false
	nodes := []conf.Node{
		node("a", "10.0.0.1/24", "", map[string]string{"rack": "r1"}),
		node("b", "10.0.0.2/24", "", map[string]string{"rack": "r2"}),
		node("rr1", "10.0.0.10/24", "224.0.0.1", nil),
		// A reflector by its label (Calico's model), the other by its field.
		node("rr2", "10.0.0.11/24", "", map[string]string{conf.RouteReflectorLabel: "224.0.0.1"}),
	}
	mesh := conf.DefaultBGPConfiguration()
	noMesh := conf.DefaultBGPConfiguration()
	noMesh.Spec.NodeToNodeMesh = &meshOff
	tor := conf.BGPPeer{Metadata: conf.ObjectMeta{Name: "tor-r1"}, Spec: conf.BGPPeerSpec{PeerIP: "10.0.0.254", ASNumber: 65000, NodeSelector: "rack == 'r1'"}}
	tor.Default()
	global := conf.BGPPeer{Metadata: conf.ObjectMeta{Name: "global"}, Spec: conf.BGPPeerSpec{PeerIP: "10.0.0.253", ASNumber: 65001, Password: "pw"}}
	global.Default()

	cases := []struct {
		name  string
		self  int
		cfg   conf.BGPConfiguration
		peers []conf.BGPPeer
		want  []string
	}{
		{"mesh: every other node, lower address dials", 1, mesh, nil,
			[]string{"10.0.0.1 mesh passive", "10.0.0.10 mesh", "10.0.0.11 mesh"}},
		{"no mesh, plain node: the reflectors", 0, noMesh, nil,
			[]string{"10.0.0.10 rr", "10.0.0.11 rr"}},
		{"no mesh, reflector: clients and the other reflector", 2, noMesh, nil,
			[]string{"10.0.0.1 rr-client client-of-224.0.0.1 passive", "10.0.0.2 rr-client client-of-224.0.0.1 passive", "10.0.0.11 rr"}},
		{"no mesh, reflector by label: clients and the other reflector", 3, noMesh, nil,
			[]string{"10.0.0.1 rr-client client-of-224.0.0.1 passive", "10.0.0.2 rr-client client-of-224.0.0.1 passive", "10.0.0.10 rr passive"}},
		{"external peers by selector", 0, noMesh, []conf.BGPPeer{tor, global},
			[]string{"10.0.0.10 rr", "10.0.0.11 rr", "10.0.0.253 bgppeer", "10.0.0.254 bgppeer"}},
		{"selector that does not match", 1, noMesh, []conf.BGPPeer{tor},
			[]string{"10.0.0.10 rr", "10.0.0.11 rr"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := peerSummary(DesiredPeers(&nodes[c.self], nodes, &c.cfg, c.peers))
			if !slices.Equal(got, c.want) {
				t.Errorf("got  %q\nwant %q", got, c.want)
			}
		})
	}
	// The password reaches the session.
	ps := DesiredPeers(&nodes[0], nodes, &noMesh, []conf.BGPPeer{global})
	if ps[len(ps)-1].Password != "pw" || ps[len(ps)-1].ASN != 65001 {
		t.Errorf("external peer spec = %+v", ps[len(ps)-1])
	}
}

func TestImportRanges(t *testing.T) {
	p4 := conf.IPPool{Metadata: conf.ObjectMeta{Name: "v4"}, Spec: conf.IPPoolSpec{CIDR: "10.244.0.0/16"}}
	p6 := conf.IPPool{Metadata: conf.ObjectMeta{Name: "v6"}, Spec: conf.IPPoolSpec{CIDR: "fd00:244::/48"}}
	off := conf.IPPool{Metadata: conf.ObjectMeta{Name: "off"}, Spec: conf.IPPoolSpec{CIDR: "10.99.0.0/16", Disabled: true}}
	for _, p := range []*conf.IPPool{&p4, &p6, &off} {
		p.Default()
	}
	rs := ImportRanges([]conf.IPPool{p4, p6, off})
	if len(rs) != 3 {
		t.Fatalf("ranges %v", rs)
	}
	for _, c := range []struct {
		p  string
		ok bool
	}{
		{"10.244.1.0/26", true}, {"10.244.1.7/32", true}, {"10.244.0.0/16", false}, {"10.244.1.0/24", false},
		{"0.0.0.0/0", false}, {"192.0.2.0/24", false}, {"10.99.1.0/26", true}, {"10.98.1.0/26", false},
		{"fd00:244:0:1::/122", true}, {"fd00:244::1/128", true}, {"fd00:244::/64", false}, {"::/0", false},
	} {
		if got := inRanges(netip.MustParsePrefix(c.p), rs); got != c.ok {
			t.Errorf("inRanges(%s) = %v, want %v", c.p, got, c.ok)
		}
	}
}

func TestExportsAndKernelRoutes(t *testing.T) {
	blocks := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/26")}
	pods := []netip.Addr{netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.9.70")} // the second borrowed
	ex := Exports(blocks, pods)
	if want := []string{"10.244.1.0/26", "10.244.9.70/32"}; !slices.Equal(prefixStrings(ex), want) {
		t.Errorf("exports %v, want %v", ex, want)
	}
	self := node("a", "10.0.0.1/24", "", nil)
	nodes := []conf.Node{self, node("b", "10.0.0.2/24", "", nil)}
	pool := conf.IPPool{Metadata: conf.ObjectMeta{Name: "p"}, Spec: conf.IPPoolSpec{CIDR: "10.244.0.0/16"}}
	pool.Default()
	rib := []Path{
		{Prefix: netip.MustParsePrefix("10.244.2.0/26"), NextHop: netip.MustParseAddr("10.0.0.2")},
		{Prefix: netip.MustParsePrefix("10.244.1.0/26"), NextHop: netip.MustParseAddr("10.0.0.1")}, // our own, reflected back
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), NextHop: netip.MustParseAddr("10.0.0.2")},     // outside the pools
	}
	var seenPeer *conf.Node
	render := func(p Path, peer *conf.Node) (Route, error) { seenPeer = peer; return Native(p, peer) }
	rs, errs := KernelRoutes(&self, nodes, blocks, rib, ImportRanges([]conf.IPPool{pool}), render)
	var got []string
	for _, r := range rs {
		got = append(got, r.String())
	}
	if want := []string{"blackhole 10.244.1.0/26", "10.244.2.0/26 via 10.0.0.2"}; len(errs) > 0 || !slices.Equal(got, want) {
		t.Errorf("routes %v (errs %v), want %v", got, errs, want)
	}
	if seenPeer == nil || seenPeer.Name != "b" {
		t.Errorf("renderer got peer %+v, want node b", seenPeer)
	}
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// A path from outside the cluster may not take traffic for addresses
// inside a prefix a node announces, nor inside this node's own blocks (a
// hostile peer announcing a pod's /32); where no node announces the range
// (nodes learning each other through routers with next-hop-self), it is
// installed.
func TestKernelRoutesExternalPathsCannotShadowNodes(t *testing.T) {
	self := node("a", "10.0.0.1/24", "", nil)
	nodes := []conf.Node{self, node("b", "10.0.0.2/24", "", nil)}
	pool := conf.IPPool{Metadata: conf.ObjectMeta{Name: "p"}, Spec: conf.IPPoolSpec{CIDR: "10.244.0.0/16"}}
	pool.Default()
	ext := netip.MustParseAddr("10.0.0.250")
	blocks := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/26")}
	rib := []Path{
		{Prefix: netip.MustParsePrefix("10.244.2.0/26"), NextHop: netip.MustParseAddr("10.0.0.2")}, // node b's block
		{Prefix: netip.MustParsePrefix("10.244.2.5/32"), NextHop: ext},                             // a pod of b, hijacked
		{Prefix: netip.MustParsePrefix("10.244.2.0/26"), NextHop: ext},                             // b's block itself
		{Prefix: netip.MustParsePrefix("10.244.1.9/32"), NextHop: ext},                             // inside our own block
		{Prefix: netip.MustParsePrefix("10.244.9.0/26"), NextHop: ext},                             // no node announces it
		{Prefix: netip.MustParsePrefix("10.244.9.70/32"), NextHop: ext},
	}
	rs, errs := KernelRoutes(&self, nodes, blocks, rib, ImportRanges([]conf.IPPool{pool}), Native)
	var got []string
	for _, r := range Sorted(rs) {
		got = append(got, r.String())
	}
	want := []string{"blackhole 10.244.1.0/26", "10.244.2.0/26 via 10.0.0.2", "10.244.9.0/26 via 10.0.0.250", "10.244.9.70/32 via 10.0.0.250"}
	if len(errs) > 0 || !slices.Equal(got, want) {
		t.Errorf("routes %v (errs %v), want %v", got, errs, want)
	}
}
