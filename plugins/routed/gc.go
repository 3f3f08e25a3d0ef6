package routed

import (
	"errors"
	"fmt"
	"strings"

	"github.com/brindle-net/brindle/conf"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CmdGC removes the host veths of this network whose attachment is not in
// the runtime's list of valid attachments, then lets the IPAM plugin release
// the addresses of the same. Veths stamped by another network, or not by
// brindle at all, are never touched.
func (p *Plugin) CmdGC(args *skel.CmdArgs) error {
	c, err := p.newCall(args, "GC")
	if err != nil {
		return err
	}
	defer c.closer()

	valid := make(map[attachment]bool, len(c.conf.ValidAttachments))
	for _, v := range c.conf.ValidAttachments {
		valid[attachment{Network: c.conf.Name, ContainerID: v.ContainerID, IfName: v.IfName}] = true
	}
	links, err := linkList()
	if err != nil {
		return cniErr(ErrGC, "list links", err)
	}
	var errs []error
	removed := 0
	for _, l := range links {
		if !strings.HasPrefix(l.Attrs().Name, conf.VethPrefix) || l.Type() != "veth" {
			continue
		}
		a, ok := parseAlias(l.Attrs().Alias)
		if !ok || a.Network != c.conf.Name || valid[a] {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("remove %s: %w", l.Attrs().Name, err))
			continue
		}
		removed++
		c.log.Info("GC removed orphaned host veth", "veth", l.Attrs().Name, "attachment", l.Attrs().Alias)
	}
	if err := c.ipamGC(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return cniErr(ErrGC, "gc", errors.Join(errs...))
	}
	c.log.Info("GC done", "removed", removed, "valid", len(valid))
	return nil
}

// linkList retries a dump the kernel interrupted because links changed
// under it, as happens while pods come and go.
func linkList() ([]netlink.Link, error) {
	var err error
	for range 5 {
		var links []netlink.Link
		if links, err = netlink.LinkList(); err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
	}
	return nil, err
}
