package bgpd

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"

	"github.com/brindle-net/brindle/conf"
)

// Tunnel devices, by DESIGN.md's kernel conventions.
const (
	VXLANDevice = "vxlan.brindle"
	IPIPDevice  = "tunl0"
	VXLANVNI    = 4096
	VXLANPort   = 4789
)

// Encapsulation overhead in bytes: an outer IPv4 header for IPIP; outer
// Ethernet, IPv4, UDP and VXLAN headers for VXLAN.
const (
	IPIPOverhead  = 20
	VXLANOverhead = 50
)

// Encap is how traffic to one destination leaves the node.
type Encap int

// The ways a route can be rendered.
const (
	EncapNone Encap = iota
	EncapIPIP
	EncapVXLAN
)

func (e Encap) String() string {
	return [...]string{"native", "ipip", "vxlan"}[e]
}

// PoolEncap says how traffic from self to pool's addresses on peer is
// carried: a pool's ipipMode or vxlanMode (at most one is on) applies to
// every peer when Always, and only to peers outside self's subnet when
// CrossSubnet. Paths from outside the cluster (peer nil) and IPv6 pools
// are always native: IPIP carries IPv4 only, and brindle's VXLAN tunnel
// has an IPv4 address only.
func PoolEncap(pool *conf.IPPool, self, peer *conf.Node) Encap {
	if pool == nil || peer == nil || !pool.Prefix().Addr().Is4() {
		return EncapNone
	}
	mode, kind := pool.Spec.VXLANMode, EncapVXLAN
	if mode == conf.EncapNever || mode == "" {
		mode, kind = pool.Spec.IPIPMode, EncapIPIP
	}
	switch mode {
	case conf.EncapAlways:
		return kind
	case conf.EncapCrossSubnet:
		if SameSubnet(self, peer) {
			return EncapNone
		}
		return kind
	}
	return EncapNone
}

// SameSubnet reports whether peer's IPv4 address is inside self's IPv4
// subnet (the prefix length of self's address), i.e. directly reachable.
func SameSubnet(self, peer *conf.Node) bool {
	s, ok := self.IPv4()
	p, ok2 := peer.IPv4()
	return ok && ok2 && s.Masked().Contains(p.Addr())
}

// NodeEncaps are the tunnel devices a node needs: one for each kind of
// encapsulation some IPv4 pool has on. A node keeps its VTEP while any
// pool might send to it through one, even if CrossSubnet makes every
// current peer native, so that a node joining another subnet is reached
// at once.
func NodeEncaps(pools []conf.IPPool) (ipip, vxlan bool) {
	for i := range pools {
		p := &pools[i]
		if !p.Prefix().Addr().Is4() {
			continue
		}
		if p.Spec.VXLANMode == conf.EncapAlways || p.Spec.VXLANMode == conf.EncapCrossSubnet {
			vxlan = true
		}
		if p.Spec.IPIPMode == conf.EncapAlways || p.Spec.IPIPMode == conf.EncapCrossSubnet {
			ipip = true
		}
	}
	return ipip, vxlan
}

// Overhead is the encapsulation overhead pods must leave room for: the
// largest among the encapsulations in force.
func Overhead(pools []conf.IPPool) int {
	ipip, vxlan := NodeEncaps(pools)
	switch {
	case vxlan:
		return VXLANOverhead
	case ipip:
		return IPIPOverhead
	}
	return 0
}

// poolOf is the pool holding prefix p, or nil.
func poolOf(pools []conf.IPPool, p netip.Prefix) *conf.IPPool {
	for i := range pools {
		pp := pools[i].Prefix()
		if pp.IsValid() && pp.Bits() <= p.Bits() && pp.Contains(p.Addr()) {
			return &pools[i]
		}
	}
	return nil
}

// Encapsulating renders paths for self under pools: natively
// (`via <node ip>`), through IPIP (`via <node ip> dev tunl0 onlink`) or
// through VXLAN (`via <peer tunnel ip> dev vxlan.brindle onlink`, the
// peer's tunnel address resolved by a permanent neighbour entry the tunnel
// manager keeps). It is pure: everything it needs is in its arguments.
func Encapsulating(self *conf.Node, pools []conf.IPPool) Renderer {
	return func(p Path, peer *conf.Node) (Route, error) {
		switch PoolEncap(poolOf(pools, p.Prefix), self, peer) {
		case EncapIPIP:
			nh, ok := peer.IPv4()
			if !ok {
				return Route{}, fmt.Errorf("route %s: node %s has no IPv4 address for IPIP", p.Prefix, peer.Name)
			}
			return Route{Dst: p.Prefix, Type: Unicast, Gw: nh.Addr(), Dev: IPIPDevice, OnLink: true}, nil
		case EncapVXLAN:
			tip, err := netip.ParseAddr(peer.TunnelIPv4)
			if err != nil || !tip.Is4() {
				return Route{}, fmt.Errorf("route %s: node %s has not published a VXLAN tunnel address yet", p.Prefix, peer.Name)
			}
			if _, err := net.ParseMAC(peer.VXLANMAC); err != nil {
				return Route{}, fmt.Errorf("route %s: node %s has not published a VTEP MAC yet", p.Prefix, peer.Name)
			}
			return Route{Dst: p.Prefix, Type: Unicast, Gw: tip, Dev: VXLANDevice, OnLink: true}, nil
		}
		return Native(p, peer)
	}
}

// DefaultVTEPMAC is the VTEP MAC of a node whose record names none:
// derived from the node name, so that it survives restarts and
// re-creation of the device, locally administered and unicast.
func DefaultVTEPMAC(node string) net.HardwareAddr {
	h := sha256.Sum256([]byte("brindle-vtep/" + node))
	mac := net.HardwareAddr(h[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// VTEP is a remote VXLAN endpoint: how to reach a peer's tunnel address.
type VTEP struct {
	Node     string
	TunnelIP netip.Addr
	MAC      net.HardwareAddr
	NodeIP   netip.Addr
}

// VTEPsFor are the remote endpoints the routes send through VXLAN: one per
// distinct tunnel next hop, resolved from the node records.
func VTEPsFor(routes []Route, nodes []conf.Node) []VTEP {
	byTunnel := map[netip.Addr]*conf.Node{}
	for i := range nodes {
		if a, err := netip.ParseAddr(nodes[i].TunnelIPv4); err == nil {
			byTunnel[a] = &nodes[i]
		}
	}
	seen := map[netip.Addr]bool{}
	var out []VTEP
	for _, r := range routes {
		if r.Dev != VXLANDevice || seen[r.Gw] {
			continue
		}
		n := byTunnel[r.Gw]
		if n == nil {
			continue
		}
		mac, err := net.ParseMAC(n.VXLANMAC)
		ip, ok := n.IPv4()
		if err != nil || !ok {
			continue
		}
		seen[r.Gw] = true
		out = append(out, VTEP{Node: n.Name, TunnelIP: r.Gw, MAC: mac, NodeIP: ip.Addr()})
	}
	return out
}
