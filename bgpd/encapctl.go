package bgpd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/brindle-net/brindle/conf"
)

// tunnelAddr gives the node a tunnel address while some pool encapsulates,
// and gives it back when none does. The node record it publishes comes
// back through the cache and triggers the next reconcile.
func (c *Controller) tunnelAddr(ctx context.Context, st *clusterState) []error {
	t := c.cfg.TunnelAddrs
	if t == nil {
		return nil
	}
	ipip, vxlan := NodeEncaps(st.pools)
	self := &st.self
	switch {
	case (ipip || vxlan) && (self.TunnelIPv4 == "" || self.VXLANMAC == ""):
		var pools []string
		for i := range st.pools {
			p := &st.pools[i]
			if p.Prefix().Addr().Is4() && !p.Spec.Disabled && (p.Spec.VXLANMode != conf.EncapNever || p.Spec.IPIPMode != conf.EncapNever) &&
				p.Spec.Allows(conf.UseTunnel) {
				pools = append(pools, p.Metadata.Name)
			}
		}
		if len(pools) == 0 {
			return []error{fmt.Errorf("tunnel address: no enabled IPv4 pool that encapsulates allows Tunnel use (allowedUses) and automatic assignment")}
		}
		addr, err := t.Ensure(ctx, self.Name, pools, vtepMAC(self).String())
		if err != nil {
			return []error{fmt.Errorf("tunnel address: %w", err)}
		}
		c.cfg.Log.Info("tunnel address assigned and published", "tunnelIPv4", addr, "vxlanMAC", vtepMAC(self).String())
	case !ipip && !vxlan && self.TunnelIPv4 != "":
		if err := t.Release(ctx, self.Name); err != nil {
			return []error{fmt.Errorf("tunnel address: %w", err)}
		}
		c.cfg.Log.Info("tunnel address released: no pool encapsulates", "tunnelIPv4", self.TunnelIPv4)
	}
	return nil
}

// vtepMAC is the node's VTEP MAC: from its record, else derived from its name.
func vtepMAC(n *conf.Node) net.HardwareAddr {
	if m, err := net.ParseMAC(n.VXLANMAC); err == nil && len(m) == 6 {
		return m
	}
	return DefaultVTEPMAC(n.Name)
}

// tunnelSpec is the tunnel state the node needs: its devices while some
// pool encapsulates, and a VTEP for every peer a route goes through.
func (c *Controller) tunnelSpec(st *clusterState, routes []Route) TunnelSpec {
	ipip, vxlan := NodeEncaps(st.pools)
	var spec TunnelSpec
	local, ok := st.self.IPv4()
	if !ok {
		return spec
	}
	tip, _ := netip.ParseAddr(st.self.TunnelIPv4)
	if vxlan {
		spec.VXLAN = &VXLANSpec{Local: local.Addr(), MAC: vtepMAC(&st.self), MTU: c.cfg.HostMTU - VXLANOverhead, Addr: tip,
			Peers: VTEPsFor(routes, st.nodes)}
		if c.cfg.HostMTU == 0 {
			spec.VXLAN.MTU = 0
		}
	}
	if ipip {
		spec.IPIP = &IPIPSpec{MTU: c.cfg.HostMTU - IPIPOverhead, Addr: tip}
		if c.cfg.HostMTU == 0 {
			spec.IPIP.MTU = 0
		}
	}
	return spec
}

// setTunnels makes the tunnel devices match the state. Checking them asks
// the kernel for each device, so a path learned by BGP (the common event:
// at 100 nodes a reflector's client learns one per block claimed anywhere)
// applies them only when the spec changed; a configuration change, the
// periodic resync (config) and a route removed behind brindled's back
// (tunnelsOK cleared) check the kernel whatever the spec, and so does a
// check a second after the spec changed (tunnelRecheck).
func (c *Controller) setTunnels(st *clusterState, routes []Route, config bool) []error {
	if c.cfg.Tunnels == nil {
		return nil
	}
	spec := c.tunnelSpec(st, routes)
	if !config && c.tunnelsOK && spec.Equal(c.tunnels) {
		return nil
	}
	if err := c.cfg.Tunnels.Set(spec); err != nil {
		c.tunnelsOK = false
		return []error{err}
	}
	if !spec.Equal(c.tunnels) {
		c.tunnelRecheck = time.After(time.Second)
	}
	c.tunnels, c.tunnelsOK = spec, true
	return nil
}

// natPrefixes are the IPv4 pools that ask for NAT outgoing, and all IPv4
// pools (disabled ones too: their pods still live).
func natPrefixes(pools []conf.IPPool) (nat, all []netip.Prefix) {
	for i := range pools {
		p := pools[i].Prefix()
		if !p.Addr().Is4() {
			continue
		}
		all = append(all, p)
		if pools[i].Spec.NATOutgoing {
			nat = append(nat, p)
		}
	}
	return nat, all
}

// writeMTU records the pods' MTU when it changes. Pods attached earlier
// keep theirs (path MTU discovery covers them); new ones get the new one.
func (c *Controller) writeMTU(pools []conf.IPPool) error {
	if c.cfg.MTUFile == "" || c.cfg.HostMTU == 0 {
		return nil
	}
	mtu := c.cfg.HostMTU - Overhead(pools)
	c.mu.Lock()
	same := mtu == c.podMTU
	c.mu.Unlock()
	if same {
		return nil
	}
	if err := WriteMTU(c.cfg.MTUFile, mtu); err != nil {
		return fmt.Errorf("write pod MTU to %s: %w", c.cfg.MTUFile, err)
	}
	c.mu.Lock()
	c.podMTU = mtu
	c.mu.Unlock()
	c.cfg.Log.Info("pod MTU", "mtu", mtu, "hostMTU", c.cfg.HostMTU, "file", c.cfg.MTUFile)
	return nil
}
