package routed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// CmdAdd creates the pod's attachment. The config, the netns and the
// absence of CNI_IFNAME in it are checked before the IPAM plugin starts,
// so bad input allocates nothing. The IPAM plugin then runs while the
// plugin makes the veth (mtu, a stale veth removed, the pair created and
// stamped): neither needs the other until the addresses are configured,
// and IPAM (an executed plugin's process, or brindle-ipam's etcd
// transaction in this one) is the longest step of an ADD. Once both are done, any
// failure of either, or of a later step, removes the veth (and with it the
// host route) and, if IPAM gave addresses, runs IPAM DEL.
func (p *Plugin) CmdAdd(args *skel.CmdArgs) (retErr error) {
	c, err := p.newCall(args, "ADD")
	if err != nil {
		return err
	}
	defer c.closer()
	defer func() {
		if retErr != nil {
			c.log.Error("ADD failed", "err", retErr)
		}
	}()

	netns, podNL, closePod, err := openPod(args.Netns)
	if err != nil {
		return err
	}
	defer closePod()
	if _, err := podNL.LinkByName(args.IfName); err == nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_IFNAME %q: an interface of that name already exists in netns %s", args.IfName, args.Netns), "")
	}

	ipamDone := make(chan ipamOutcome, 1)
	go func() {
		res, err := c.ipamAdd()
		ipamDone <- ipamOutcome{res, err}
	}()
	// The conntrack table is read now too, while IPAM runs: its dump is
	// the costly half of the flush and needs no address (conntrack.go).
	ctDone := make(chan ctOutcome, 1)
	go func() {
		e, err := dumpConntrack()
		ctDone <- ctOutcome{e, err}
	}()
	l, linkErr := c.makeLink(netns, podNL)
	if linkErr != nil {
		c.log.Debug("veth step failed; waiting for IPAM to release what it gives", "veth", c.veth, "err", linkErr)
	}
	// Every path from here waits for IPAM: an address it hands out after
	// the veth step failed must be released, never leaked.
	ipam, ct := <-ipamDone, <-ctDone
	defer func() {
		if retErr == nil {
			return
		}
		if err := c.removeAttachment(); err != nil {
			c.log.Error("rollback: remove veth", "veth", c.veth, "err", err)
		}
		if ipam.err != nil {
			return
		}
		if err := c.ipamDel(); err != nil {
			c.log.Error("rollback: IPAM DEL", "ipam", c.conf.IPAM.Type, "err", err)
		}
	}()
	if ipam.err != nil {
		return ipam.err
	}
	if linkErr != nil {
		return linkErr
	}

	addrs, err := podAddrs(ipam.res)
	if err != nil {
		return cniErr(ErrIPAM, fmt.Sprintf("ipam plugin %q", c.conf.IPAM.Type), err)
	}
	c.log.Debug("ipam result", "ipam", c.conf.IPAM.Type, "addresses", addrs)
	// An address handed out again must not inherit flows of the pod that
	// had it (its DEL may never have run: a crash, a kill -9). Those flows
	// are older than this ADD, so the table as it was when ADD began holds
	// them; nothing can reach the pod yet: it has no address and the host
	// no route to it.
	c.deleteFlows(ct, addrs)

	if err := configureHostSide(l.host, addrs); err != nil {
		return cniErr(ErrHostSide, fmt.Sprintf("configure host veth %s", c.veth), err)
	}
	if v4, v6 := families(addrs); c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("host side configured", "veth", c.veth, "sysctls", hostSysctls(c.veth, v4, v6))
	}
	if err := configurePodSide(netns, podNL, l.pod, addrs); err != nil {
		return cniErr(ErrPodSide, fmt.Sprintf("configure %s in %s", args.IfName, args.Netns), err)
	}
	c.log.Debug("pod side configured", "ifname", args.IfName, "addresses", addrs)
	if err := addHostRoutes(l.host, addrs); err != nil {
		return cniErr(ErrHostSide, fmt.Sprintf("add host routes via %s", c.veth), err)
	}
	c.log.Debug("host routes added", "veth", c.veth, "addresses", addrs)

	c.waitAdmitted(addrs)
	res := buildResult(ipam.res, c.conf, l.host, l.pod, args.Netns, addrs)
	c.log.Info("pod attached", "veth", c.veth, "addresses", addrs, "mtu", l.mtu)
	return types.PrintResult(res, c.conf.CNIVersion)
}

// ctOutcome is the conntrack dump ADD takes while IPAM runs.
type ctOutcome struct {
	entries ctEntries
	err     error
}

// deleteFlows deletes the dumped conntrack entries of addrs; a dump the
// kernel interrupted (entries changed under it) may miss some, so the table
// is then read again. A failure is logged, never fatal: stale flows time
// out on their own.
func (c *call) deleteFlows(ct ctOutcome, addrs []netip.Addr) {
	n, err := ct.entries.deleteMatching(addrs)
	if errors.Is(ct.err, nl.ErrDumpInterrupted) {
		again, ferr := flushConntrack(addrs)
		n, err = n+again, errors.Join(err, ferr)
	} else {
		err = errors.Join(ct.err, err)
	}
	if err != nil {
		c.log.Debug("conntrack flush", "addresses", addrs, "entries", n, "err", err)
		return
	}
	c.log.Debug("conntrack flushed", "addresses", addrs, "entries", n, "dumped", len(ct.entries))
}

// ipamOutcome is what the IPAM plugin's ADD gave.
type ipamOutcome struct {
	res *current.Result
	err error
}

// podLink is the veth pair ADD made, before any address is on it.
type podLink struct {
	host, pod netlink.Link
	mtu       int
}

// makeLink is the part of ADD that does not need the pod's addresses: the
// MTU, removing a veth an earlier sandbox left, and the pair itself.
func (c *call) makeLink(netns ns.NetNS, podNL *netlink.Handle) (podLink, error) {
	mtu, err := c.mtu()
	if err != nil {
		return podLink{}, cniErr(ErrHostSide, "mtu: find the host's default-route interface", err)
	}
	// A host veth of this name left by an earlier sandbox of the same pod
	// (or an ADD that was retried) is in the way; it belongs to no live
	// attachment of this pod any more.
	if _, err := c.removeHostVeth(false); err != nil {
		return podLink{}, cniErr(ErrVeth, fmt.Sprintf("remove stale host veth %s", c.veth), err)
	}
	host, pod, err := createVeth(c.veth, c.args.IfName, mtu, netns, podNL, c.attachment().alias())
	if err != nil {
		return podLink{}, cniErr(ErrVeth, fmt.Sprintf("create veth %s (host) / %s (pod)", c.veth, c.args.IfName), err)
	}
	c.log.Debug("veth created", "veth", c.veth, "podIf", c.args.IfName, "mtu", mtu, "alias", c.attachment().alias())
	return podLink{host: host, pod: pod, mtu: mtu}, nil
}
