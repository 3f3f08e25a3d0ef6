package bgpd

import (
	"net/netip"
	"sort"

	"github.com/brindle-net/brindle/conf"
)

// DesiredPeers is the set of sessions node self should have: the full mesh
// (or, with the mesh off, the route-reflector topology) among the nodes,
// plus the BGPPeers that select it.
//
// With the mesh off, a node with a route-reflector cluster ID (the field
// or the label, conf.Node.RRClusterID) is a route reflector: it peers with every other node, treating plain nodes as its
// clients and other reflectors as non-clients; a plain node peers with
// every reflector.
func DesiredPeers(self *conf.Node, nodes []conf.Node, cfg *conf.BGPConfiguration, peers []conf.BGPPeer) []PeerSpec {
	out := map[netip.Addr]PeerSpec{}
	selfAddr, selfOK := self.IPv4()
	selfAS := self.AS(cfg.Spec.ASNumber)
	for i := range nodes {
		n := &nodes[i]
		if n.Name == self.Name {
			continue
		}
		addr, ok := n.IPv4()
		if !ok || !selfOK || addr.Addr() == selfAddr.Addr() {
			continue
		}
		// Between two nodes only the lower address dials. With both
		// dialling, GoBGP's FSMs can take turns refusing each other's
		// connections (each refusal costs a 5 s idle hold), and a session
		// then needs tens of seconds to come back after a restart.
		spec := PeerSpec{Address: addr.Addr(), ASN: n.AS(cfg.Spec.ASNumber), Port: cfg.Spec.ListenPort, Name: n.Name,
			Passive: selfAddr.Addr().Compare(addr.Addr()) > 0}
		switch {
		case cfg.Mesh():
			spec.Kind = "mesh"
		case self.RRClusterID() != "" && n.RRClusterID() == "":
			spec.Kind, spec.RRClient, spec.ClusterID = "rr-client", true, self.RRClusterID()
			if spec.ASN != selfAS {
				continue // reflection is for iBGP only
			}
		case n.RRClusterID() != "":
			spec.Kind = "rr"
		default:
			continue
		}
		out[spec.Address] = spec
	}
	for i := range peers {
		p := &peers[i]
		if !p.Selects(self) {
			continue
		}
		a, err := netip.ParseAddr(p.Spec.PeerIP)
		if err != nil || (selfOK && a == selfAddr.Addr()) {
			continue
		}
		spec := PeerSpec{Address: a, ASN: p.Spec.ASNumber, Port: p.Spec.Port, Password: p.Spec.Password,
			MultihopTTL: p.Spec.MultihopTTL, Passive: p.Spec.Passive, Name: p.Metadata.Name, Kind: "bgppeer",
			RestartAfter: p.Spec.MaxPrefixesRestartSeconds}
		if p.Spec.MaxPrefixes != nil {
			spec.MaxPrefixes = *p.Spec.MaxPrefixes
		}
		out[a] = spec
	}
	list := make([]PeerSpec, 0, len(out))
	for _, p := range out {
		list = append(list, p)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Address.Less(list[j].Address) })
	return list
}

// ImportRanges are the prefixes a node accepts: inside a pool, from the
// pool's block size down to a single address. A disabled pool counts: it
// gives out no new addresses, but the pods it already has keep their routes.
func ImportRanges(pools []conf.IPPool) []ImportRange {
	var out []ImportRange
	for i := range pools {
		p := &pools[i]
		pfx := p.Prefix()
		if !pfx.IsValid() {
			continue
		}
		out = append(out, ImportRange{Prefix: pfx, MinLen: p.Spec.BlockSize, MaxLen: pfx.Addr().BitLen()})
	}
	return out
}

// Exports are what node announces: its blocks as aggregates, and as host
// prefixes the addresses its pods hold in blocks it does not own
// (borrowed when its own blocks were full).
func Exports(blocks []netip.Prefix, podAddrs []netip.Addr) []netip.Prefix {
	out := append([]netip.Prefix(nil), blocks...)
	for _, a := range podAddrs {
		if !containedIn(a, blocks) {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func containedIn(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Renderer turns a learned path into a kernel route: natively via the next
// hop, or through a tunnel. peer is the node that owns the next hop (nil
// for a path from outside the cluster).
type Renderer func(p Path, peer *conf.Node) (Route, error)

// Native routes a path straight to its next hop, which must be on a
// connected subnet.
func Native(p Path, _ *conf.Node) (Route, error) {
	return Route{Dst: p.Prefix, Type: Unicast, Gw: p.NextHop}, nil
}

// KernelRoutes is the whole desired route set of a node: a blackhole for
// each local block (so traffic to its unused addresses stops here instead
// of looping), and a route for each learned path that falls in an import
// range and does not point back at the node itself.
func KernelRoutes(self *conf.Node, nodes []conf.Node, blocks []netip.Prefix, rib []Path, ranges []ImportRange, render Renderer) ([]Route, []error) {
	return IndexNodes(self, nodes).KernelRoutes(blocks, rib, ranges, render)
}

// NodeIndex finds the node records by address. Building it parses every
// record's addresses, so the controller builds it once per cluster state,
// not once per learned path: at 100 nodes a route reflector's client
// renders its routes after every path it learns.
type NodeIndex struct {
	byAddr map[netip.Addr]*conf.Node
	self   map[netip.Addr]bool
}

// IndexNodes indexes nodes (and self's own addresses); it keeps pointers
// into nodes, which must not change afterwards.
func IndexNodes(self *conf.Node, nodes []conf.Node) *NodeIndex {
	x := &NodeIndex{byAddr: make(map[netip.Addr]*conf.Node, 2*len(nodes)), self: map[netip.Addr]bool{}}
	for i := range nodes {
		if a, ok := nodes[i].IPv4(); ok {
			x.byAddr[a.Addr()] = &nodes[i]
		}
		if a, ok := nodes[i].IPv6(); ok {
			x.byAddr[a.Addr()] = &nodes[i]
		}
	}
	if a, ok := self.IPv4(); ok {
		x.self[a.Addr()] = true
	}
	if a, ok := self.IPv6(); ok {
		x.self[a.Addr()] = true
	}
	return x
}

// KernelRoutes is the package-level KernelRoutes on an index built before.
func (x *NodeIndex) KernelRoutes(blocks []netip.Prefix, rib []Path, ranges []ImportRange, render Renderer) ([]Route, []error) {
	out := make([]Route, 0, len(blocks)+len(rib))
	var errs []error
	for _, b := range blocks {
		out = append(out, Route{Dst: b, Type: Blackhole})
	}
	// Prefixes the nodes themselves announce: a path from outside the
	// cluster (an external peer's own, or a router's with next-hop-self)
	// may not take traffic for addresses inside them, nor inside this
	// node's own blocks — a peer announcing a pod's /32 would otherwise
	// pull that pod's traffic away from the node that has it. Only needed
	// when there is such a path.
	var owned []netip.Prefix
	for _, p := range rib {
		if p.NextHop.IsValid() && x.byAddr[p.NextHop] == nil {
			owned = x.owned(blocks, rib)
			break
		}
	}
	for _, p := range rib {
		if x.self[p.NextHop] || !p.NextHop.IsValid() || !inRanges(p.Prefix, ranges) {
			continue
		}
		peer := x.byAddr[p.NextHop]
		if peer == nil && coveredBy(p.Prefix, owned) {
			continue
		}
		r, err := render(p, peer)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	return out, errs
}

// owned are the prefixes announced by nodes, and the node's own blocks.
func (x *NodeIndex) owned(blocks []netip.Prefix, rib []Path) []netip.Prefix {
	var owned []netip.Prefix
	for _, p := range rib {
		if x.byAddr[p.NextHop] != nil {
			owned = append(owned, p.Prefix)
		}
	}
	return append(owned, blocks...)
}

// coveredBy reports whether p equals or lies inside one of ps.
func coveredBy(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func inRanges(p netip.Prefix, ranges []ImportRange) bool {
	for _, r := range ranges {
		if r.Contains(p) {
			return true
		}
	}
	return false
}
