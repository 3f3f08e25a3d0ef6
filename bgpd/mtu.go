package bgpd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// UnderlayMTU is the MTU encapsulated packets must fit in: that of the
// interface holding addr (the node's address), unless that interface does
// not carry traffic to the peers — a loopback or dummy device, where nodes
// often keep their BGP address — in which case that of the interface of the
// default route, which does. It is clamped to what a veth accepts. how,
// when not empty, says what was chosen instead of the plain answer, for a
// warning.
func UnderlayMTU(addr netip.Addr) (mtu int, how string, err error) {
	l, err := linkHolding(addr)
	if err != nil {
		return 0, "", err
	}
	mtu = l.Attrs().MTU
	if l.Attrs().Flags&net.FlagLoopback != 0 || l.Type() == "dummy" {
		fam := netlink.FAMILY_V4
		if addr.Is6() {
			fam = netlink.FAMILY_V6
		}
		d, derr := defaultRouteLink(fam)
		if derr != nil {
			return 0, "", fmt.Errorf("%s is on %s (%s), which reaches no peer, and %w", addr, l.Attrs().Name, l.Type(), derr)
		}
		how = fmt.Sprintf("%s is on %s (%s); using %s, the default route's device", addr, l.Attrs().Name, l.Type(), d.Attrs().Name)
		mtu = d.Attrs().MTU
	}
	if mtu > maxVethMTU {
		how = strings.TrimPrefix(how+fmt.Sprintf("; MTU %d clamped to %d", mtu, maxVethMTU), "; ")
		mtu = maxVethMTU
	}
	return mtu, how, nil
}

// maxVethMTU is the largest MTU the CNI plugin gives a pod.
const maxVethMTU = 65535

func defaultRouteLink(family int) (netlink.Link, error) {
	rs, err := netlink.RouteListFiltered(family, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	for _, r := range rs {
		if (r.Dst == nil || prefixOf(r.Dst, family).Bits() == 0) && r.LinkIndex > 0 {
			return netlink.LinkByIndex(r.LinkIndex)
		}
	}
	return nil, errors.New("there is no default route")
}

func linkHolding(addr netip.Addr) (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface holds %s", addr)
}

// WriteMTU records the MTU pods should get (the host's less the
// encapsulation overhead in force) for the CNI plugin, atomically.
func WriteMTU(path string, mtu int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(mtu)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
