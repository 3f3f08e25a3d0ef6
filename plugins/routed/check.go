package routed

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/sysctl"
)

// CmdCheck verifies the attachment against prevResult in the kernel: the pod
// interface, its addresses and routes, the host veth, its sysctls and the
// host routes, and then the IPAM plugin's own CHECK. Each mismatch is
// reported as what was found against what was expected.
func (p *Plugin) CmdCheck(args *skel.CmdArgs) (retErr error) {
	c, err := p.newCall(args, "CHECK")
	if err != nil {
		return err
	}
	defer c.closer()
	defer func() {
		if retErr != nil {
			c.log.Warn("CHECK failed", "err", retErr)
		}
	}()
	if c.conf.RawPrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "prevResult: missing; CHECK needs the result of ADD", "")
	}
	if err := version.ParsePrevResult(&c.conf.NetConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
	}
	prev, err := current.NewResultFromResult(c.conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
	}
	if err := c.ipamCheck(); err != nil {
		return err
	}

	want, err := c.expected(prev)
	if err != nil {
		return cniErr(ErrCheckFailed, "prevResult", err)
	}
	_, podNL, closePod, err := openPod(args.Netns)
	if err != nil {
		return err
	}
	defer closePod()

	pod, err := checkPodSide(podNL, args.IfName, want)
	if err != nil {
		return cniErr(ErrCheckFailed, fmt.Sprintf("pod interface %s in %s", args.IfName, args.Netns), err)
	}
	if err := c.checkHostSide(pod, want); err != nil {
		return cniErr(ErrCheckFailed, fmt.Sprintf("host veth %s", c.veth), err)
	}
	return nil
}

// expectation is what prevResult says the kernel should hold.
type expectation struct {
	podMAC string
	addrs  []netip.Addr
}

func (c *call) expected(prev *current.Result) (expectation, error) {
	var e expectation
	podIdx, hostFound := -1, false
	for i, intf := range prev.Interfaces {
		switch {
		case intf.Sandbox == c.args.Netns && intf.Name == c.args.IfName:
			podIdx, e.podMAC = i, intf.Mac
		case intf.Sandbox == "" && intf.Name == c.veth:
			hostFound = true
		}
	}
	if podIdx < 0 {
		return e, fmt.Errorf("no interface %s with sandbox %s", c.args.IfName, c.args.Netns)
	}
	if !hostFound {
		return e, fmt.Errorf("no host interface %s", c.veth)
	}
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface != podIdx {
			continue
		}
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return e, fmt.Errorf("invalid address %v", ipc.Address.IP)
		}
		e.addrs = append(e.addrs, a.Unmap())
	}
	if len(e.addrs) == 0 {
		return e, errors.New("no IP address for the pod interface")
	}
	return e, nil
}

func checkPodSide(nl *netlink.Handle, ifname string, want expectation) (netlink.Link, error) {
	l, err := nl.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("missing: %w", err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return nil, fmt.Errorf("is a %s, want a veth", l.Type())
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return nil, errors.New("is down")
	}
	if want.podMAC != "" && !strings.EqualFold(l.Attrs().HardwareAddr.String(), want.podMAC) {
		return nil, fmt.Errorf("MAC is %s, want %s", l.Attrs().HardwareAddr, want.podMAC)
	}
	have, err := nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range want.addrs {
		p := netip.PrefixFrom(a, a.BitLen())
		if !hasAddr(have, p) {
			return nil, fmt.Errorf("address %s missing", p)
		}
	}
	v4, v6 := families(want.addrs)
	// The pod's first interface routes in the main table; another one
	// (net1 next to eth0) in a table of its own, with a rule per address.
	table := unix.RT_TABLE_MAIN
	if sec := SecondaryTable(l.Attrs().Index); hasRules(nl, sec, want.addrs) {
		table = sec
	}
	if v4 {
		routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: l.Attrs().Index, Table: table}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		if !hasRoute(routes, func(r netlink.Route) bool {
			return r.Dst != nil && r.Dst.String() == GatewayV4.String()+"/32" && r.Scope == netlink.SCOPE_LINK
		}) {
			return nil, fmt.Errorf("route %s/32 scope link missing", GatewayV4)
		}
		if !hasRoute(routes, func(r netlink.Route) bool { return isDefaultVia(r, GatewayV4) }) {
			return nil, fmt.Errorf("default route via %s missing", GatewayV4)
		}
	}
	if v6 {
		routes, err := nl.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: l.Attrs().Index, Table: table}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		if !hasRoute(routes, func(r netlink.Route) bool { return isDefaultVia(r, GatewayV6) }) {
			return nil, fmt.Errorf("default route via %s missing", GatewayV6)
		}
	}
	return l, nil
}

func (c *call) checkHostSide(pod netlink.Link, want expectation) error {
	l, err := netlink.LinkByName(c.veth)
	if err != nil {
		return fmt.Errorf("missing: %w", err)
	}
	if l.Attrs().Index != pod.Attrs().ParentIndex {
		return fmt.Errorf("is not the peer of the pod interface (ifindex %d, pod's peer is %d)", l.Attrs().Index, pod.Attrs().ParentIndex)
	}
	if a, ok := parseAlias(l.Attrs().Alias); !ok || a != c.attachment() {
		return fmt.Errorf("belongs to attachment %q, want %q", l.Attrs().Alias, c.attachment().alias())
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return errors.New("is down")
	}
	if l.Attrs().HardwareAddr.String() != HostVethMAC.String() {
		return fmt.Errorf("MAC is %s, want %s", l.Attrs().HardwareAddr, HostVethMAC)
	}
	v4, v6 := families(want.addrs)
	for _, kv := range hostSysctls(c.veth, v4, v6) {
		got, err := sysctl.Get(kv[0])
		if err != nil {
			return err
		}
		if got != kv[1] {
			return fmt.Errorf("sysctl %s is %s, want %s", strings.ReplaceAll(kv[0], "/", "."), got, kv[1])
		}
	}
	if err := checkAntiSpoofing(c.log, c.veth, want.addrs); err != nil {
		return err
	}
	for _, a := range want.addrs {
		want := hostRoute(l.Attrs().Index, a)
		family := netlink.FAMILY_V4
		if a.Is6() {
			family = netlink.FAMILY_V6
		}
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Dst: want.Dst, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return fmt.Errorf("list routes: %w", err)
		}
		// IPv6 has no route scopes: the kernel reports every one as global.
		if !hasRoute(routes, func(r netlink.Route) bool {
			return r.LinkIndex == want.LinkIndex && (r.Scope == want.Scope || a.Is6())
		}) {
			return fmt.Errorf("host route %s dev %s%s missing", want.Dst, c.veth, map[bool]string{true: " scope link"}[a.Is4()])
		}
	}
	return nil
}

func hasAddr(have []netlink.Addr, p netip.Prefix) bool {
	for _, h := range have {
		if h.IPNet == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(h.IP)
		ones, _ := h.Mask.Size()
		if ok && a.Unmap() == p.Addr() && ones == p.Bits() {
			return true
		}
	}
	return false
}

func hasRoute(routes []netlink.Route, match func(netlink.Route) bool) bool {
	for _, r := range routes {
		if match(r) {
			return true
		}
	}
	return false
}

func isDefaultVia(r netlink.Route, gw netip.Addr) bool {
	return (r.Dst == nil || isDefault(r.Dst)) && r.Gw != nil && r.Gw.Equal(net.IP(gw.AsSlice()))
}

// hasRules reports whether every address has its rule to table.
func hasRules(nl *netlink.Handle, table int, addrs []netip.Addr) bool {
	rules, err := nl.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		found := false
		for _, r := range rules {
			if r.Table == table && r.Src != nil && r.Src.IP.Equal(net.IP(a.AsSlice())) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return len(addrs) > 0
}
