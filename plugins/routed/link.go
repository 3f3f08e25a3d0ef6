package routed

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/sysctl"
)

func nsHandle(n ns.NetNS) netns.NsHandle { return netns.NsHandle(int(n.Fd())) }

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// mtu is the configured MTU, else the one brindled wrote to the MTU file
// (the host's less the encapsulation overhead in force), else that of the
// interface holding the host's IPv4 (then IPv6) default route, else 1500.
func (c *call) mtu() (int, error) {
	if c.conf.MTU != 0 {
		return c.conf.MTU, nil
	}
	if m, why := readMTUFile(c.conf.MTUFile); why == "" {
		c.log.Debug("mtu from brindled's file", "mtu", m, "file", c.conf.MTUFile)
		return m, nil
	} else if why != "missing" {
		c.log.Warn("ignoring brindled's MTU file; using the default-route interface's MTU", "file", c.conf.MTUFile, "why", why)
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return 0, err
		}
		for _, r := range routes {
			if (r.Dst == nil || isDefault(r.Dst)) && r.LinkIndex > 0 {
				l, err := netlink.LinkByIndex(r.LinkIndex)
				if err != nil {
					return 0, err
				}
				return l.Attrs().MTU, nil
			}
		}
	}
	return 1500, nil
}

// readMTUFile reads brindled's MTU file. It returns why the file cannot be
// used ("missing", or what is wrong with it), or "" with the MTU; a file
// that cannot be used is ignored (the plugin then falls back to the
// default-route interface's MTU) and, unless missing, logged.
func readMTUFile(path string) (int, string) {
	if path == "" {
		return 0, "missing"
	}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0, "missing"
	}
	if err != nil {
		return 0, err.Error()
	}
	m, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Sprintf("%q is not a number", strings.TrimSpace(string(b)))
	}
	if m < conf.MinMTU || m > conf.MaxMTU {
		return 0, fmt.Sprintf("%d is out of range (%d-%d)", m, conf.MinMTU, conf.MaxMTU)
	}
	return m, ""
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// createVeth makes the pair in one netlink request: the host end in the
// plugin's namespace, named and addressed by brindle's convention and
// stamped with the attachment, the pod end created directly in the pod's
// namespace under its final name, so there is no rename and no window in
// which a half-made pair sits in the wrong namespace.
func createVeth(hostName, podIf string, mtu int, podNS ns.NetNS, podNL *netlink.Handle, alias string) (host, pod netlink.Link, err error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostName
	attrs.MTU = mtu
	attrs.HardwareAddr = HostVethMAC
	veth := &netlink.Veth{
		LinkAttrs:     attrs,
		PeerName:      podIf,
		PeerMTU:       uint32(mtu),
		PeerNamespace: netlink.NsFd(int(podNS.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, nil, err
	}
	if host, err = netlink.LinkByName(hostName); err != nil {
		return nil, nil, fmt.Errorf("find host veth after creating it: %w", err)
	}
	if err := netlink.LinkSetAlias(host, alias); err != nil {
		return nil, nil, fmt.Errorf("set alias: %w", err)
	}
	if pod, err = podNL.LinkByName(podIf); err != nil {
		return nil, nil, fmt.Errorf("find pod veth after creating it: %w", err)
	}
	return host, pod, nil
}

// hostSysctls are the settings of a host veth, in the order they are
// applied and checked. proxy_arp with proxy_delay 0 makes the veth answer
// the pod's ARP for 169.254.1.1 at once; rp_filter 1 drops packets whose
// source is not the pod's own address.
func hostSysctls(ifname string, v4, v6 bool) [][2]string {
	var s [][2]string
	if v4 {
		s = append(s,
			[2]string{sysctl.Iface("ipv4", ifname, "forwarding"), "1"},
			[2]string{sysctl.Iface("ipv4", ifname, "rp_filter"), "1"},
			[2]string{sysctl.Iface("ipv4", ifname, "proxy_arp"), "1"},
			[2]string{sysctl.Neigh("ipv4", ifname, "proxy_delay"), "0"},
		)
	}
	if v6 {
		s = append(s,
			[2]string{sysctl.Iface("ipv6", ifname, "forwarding"), "1"},
			[2]string{sysctl.Iface("ipv6", ifname, "accept_ra"), "0"},
			[2]string{sysctl.Iface("ipv6", ifname, "proxy_ndp"), "1"},
		)
	}
	return s
}

func families(addrs []netip.Addr) (v4, v6 bool) {
	for _, a := range addrs {
		if a.Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// configureHostSide sets the host veth's sysctls and brings it up. The
// sysctls go first: the veth must not forward a packet before rp_filter is
// in force.
func configureHostSide(host netlink.Link, addrs []netip.Addr) error {
	v4, v6 := families(addrs)
	name := host.Attrs().Name
	if v6 {
		// The veth needs IPv6 for its link-local address, the pods' gateway.
		if err := sysctl.Set(sysctl.Iface("ipv6", name, "disable_ipv6"), "0"); err != nil {
			return err
		}
		// With duplicate address detection that address stays tentative,
		// answering no neighbour solicitation, for about 2 s after the link
		// comes up: a new pod could send nothing over IPv6 for that long.
		// Nothing else on this point-to-point link can hold it (the pod
		// side has its own MAC), so there is nothing to detect. Set before
		// the link is up, when the address is made; CHECK does not look at
		// it, since it matters only then.
		if err := sysctl.Set(sysctl.Iface("ipv6", name, "accept_dad"), "0"); err != nil {
			return err
		}
	}
	for _, kv := range hostSysctls(name, v4, v6) {
		if err := sysctl.Set(kv[0], kv[1]); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

// configurePodSide gives the pod interface its addresses as host prefixes,
// brings it up and routes everything through the link-local gateways.
func configurePodSide(podNS ns.NetNS, nl *netlink.Handle, pod netlink.Link, addrs []netip.Addr) error {
	v4, v6 := families(addrs)
	if v6 {
		ifname := pod.Attrs().Name
		if err := podNS.Do(func(ns.NetNS) error {
			if err := sysctl.Set(sysctl.Iface("ipv6", ifname, "disable_ipv6"), "0"); err != nil {
				return err
			}
			return sysctl.Set(sysctl.Iface("ipv6", ifname, "accept_dad"), "0")
		}); err != nil {
			return err
		}
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(a, a.BitLen()))}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := nl.AddrAdd(pod, addr); err != nil {
			return fmt.Errorf("add address %s: %w", addr.IPNet, err)
		}
	}
	if err := nl.LinkSetUp(pod); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	idx := pod.Attrs().Index
	for _, fam := range []struct {
		on     bool
		family int
		gw     netip.Addr
	}{{v4, netlink.FAMILY_V4, GatewayV4}, {v6, netlink.FAMILY_V6, GatewayV6}} {
		if !fam.on {
			continue
		}
		// A second interface of the pod (net1 next to eth0) keeps the
		// first one's default route: its own routes go to a table of its
		// own, used for traffic from its addresses.
		table := unix.RT_TABLE_MAIN
		if hasDefaultRoute(nl, fam.family) {
			table = SecondaryTable(idx)
		}
		if err := podRoutes(nl, idx, table, fam.gw); err != nil {
			return err
		}
		if table == unix.RT_TABLE_MAIN {
			continue
		}
		for _, a := range addrs {
			if a.Is6() != (fam.family == netlink.FAMILY_V6) {
				continue
			}
			rule := netlink.NewRule()
			rule.Family, rule.Table, rule.Priority = fam.family, table, SecondaryRulePriority
			rule.Src = prefixIPNet(netip.PrefixFrom(a, a.BitLen()))
			if err := nl.RuleAdd(rule); err != nil {
				return fmt.Errorf("add rule from %s lookup %d: %w", a, table, err)
			}
		}
	}
	return nil
}

// SecondaryRulePriority is the priority of the rules that send traffic
// from a pod's second interface's addresses to that interface's table.
const SecondaryRulePriority = 1000

// SecondaryTable is the routing table, in the pod's namespace, of a pod
// interface that is not the pod's first (its index there, offset past the
// kernel's reserved tables).
func SecondaryTable(podIfIndex int) int { return 1000 + podIfIndex }

// hasDefaultRoute reports whether the pod's main table already routes the
// family by default (another interface of the pod holds it).
func hasDefaultRoute(nl *netlink.Handle, family int) bool {
	rs, err := nl.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false
	}
	for _, r := range rs {
		if r.Dst == nil || isDefault(r.Dst) {
			return true
		}
	}
	return false
}

// podRoutes routes everything through the link-local gateway gw in table:
// for IPv4 the gateway itself scope link first, then the default route.
func podRoutes(nl *netlink.Handle, idx, table int, gw netip.Addr) error {
	if gw.Is4() {
		dst := prefixIPNet(netip.PrefixFrom(gw, 32))
		if err := nl.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: dst, Scope: netlink.SCOPE_LINK, Table: table}); err != nil {
			return fmt.Errorf("add route %s scope link: %w", dst, err)
		}
		if err := nl.RouteAdd(&netlink.Route{LinkIndex: idx, Gw: net.IP(gw.AsSlice()), Table: table}); err != nil {
			return fmt.Errorf("add default route via %s: %w", gw, err)
		}
		return nil
	}
	if err := nl.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: prefixIPNet(netip.MustParsePrefix("::/0")), Gw: net.IP(gw.AsSlice()), Table: table}); err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	return nil
}

// addHostRoutes routes each pod address to the host veth.
func addHostRoutes(host netlink.Link, addrs []netip.Addr) error {
	for _, a := range addrs {
		r := hostRoute(host.Attrs().Index, a)
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s dev %s: %w", r.Dst, host.Attrs().Name, err)
		}
	}
	return nil
}

func hostRoute(linkIndex int, a netip.Addr) *netlink.Route {
	r := &netlink.Route{LinkIndex: linkIndex, Dst: prefixIPNet(netip.PrefixFrom(a, a.BitLen()))}
	if a.Is4() {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

// removeHostVeth deletes the host veth (its peer and the host routes go
// with it) and says whether it did. With onlyOurs it leaves alone a veth of
// the same name that another attachment stamped: a late DEL of an old
// sandbox must not cut off the pod's new one. Without it, any veth brindle
// stamped goes (ADD clears what an earlier sandbox of the same pod left),
// but a device brindle did not create is an error, never deleted.
func (c *call) removeHostVeth(onlyOurs bool) (bool, error) {
	l, err := netlink.LinkByName(c.veth)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, err
	}
	a, stamped := parseAlias(l.Attrs().Alias)
	switch {
	case !stamped || l.Type() != "veth":
		if onlyOurs {
			return false, nil
		}
		return false, fmt.Errorf("name %s is taken by a %s device that brindle did not create", c.veth, l.Type())
	case onlyOurs && a != c.attachment():
		c.log.Info("host veth belongs to another attachment; left alone", "veth", c.veth, "alias", l.Attrs().Alias)
		return false, nil
	case !onlyOurs:
		c.log.Warn("removing host veth left by an earlier attachment", "veth", c.veth, "alias", l.Attrs().Alias)
	}
	addrs := linkAddrs(l)
	if err := netlink.LinkDel(l); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return false, nil
		}
		return false, err
	}
	c.removed = append(c.removed, addrs...)
	c.log.Debug("host veth removed", "veth", c.veth, "addresses", addrs)
	return true, nil
}

// removeAttachment removes this attachment's veth pair: by the host end
// when brindle's stamp says it is ours, else by the pod end in the pod's
// namespace (a runtime may give other CNI_ARGS on DEL than on ADD, and the
// host name then differs). Nothing found is success.
func (c *call) removeAttachment() error {
	removed, err := c.removeHostVeth(true)
	if err != nil || removed {
		return err
	}
	return c.removePodVeth()
}

// removePodVeth deletes the pod end through the pod's namespace. A missing
// namespace or interface is success.
func (c *call) removePodVeth() error {
	if c.args.Netns == "" {
		return nil
	}
	_, h, closePod, err := openPod(c.args.Netns)
	if err != nil {
		return nil
	}
	defer closePod()
	l, err := h.LinkByName(c.args.IfName)
	if err != nil {
		return nil
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return nil
	}
	addrs, _ := h.AddrList(l, netlink.FAMILY_ALL)
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.IsLinkLocalUnicast() {
			c.removed = append(c.removed, ip.Unmap())
		}
	}
	c.log.Debug("pod veth removed through the pod's namespace", "ifname", c.args.IfName, "netns", c.args.Netns)
	return nil
}
