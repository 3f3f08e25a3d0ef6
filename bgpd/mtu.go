package bgpd

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"github.com/vishvananda/netlink"
)

// HostMTU is the MTU of the interface that holds addr (the node's
// underlay address): the size every encapsulated packet must fit in.
func HostMTU(addr netip.Addr) (int, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				return l.Attrs().MTU, nil
			}
		}
	}
	return 0, fmt.Errorf("no interface holds %s", addr)
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
