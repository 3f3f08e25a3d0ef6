// Package routed is the logic of the `brindle` CNI plugin: a veth per pod,
// the pod side with its address as a /32 (/128) and a default route via the
// link-local gateway 169.254.1.1, the host side answering ARP for that
// gateway by proxy ARP, and a host route to each pod address.
package routed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

// call is what every command starts from: the parsed config, a logger
// writing to the config's log file, and the attachment's identity.
type call struct {
	args   *skel.CmdArgs
	conf   *conf.NetConf
	log    *slog.Logger
	pod    podArgs
	veth   string // host veth name
	closer func()
	// inProcess is brindle-ipam's code when this call runs it in this
	// process instead of executing the IPAM plugin (ipam.go).
	inProcess *ipam.Plugin
	// removed are the pod addresses of the veths this call removed, whose
	// conntrack entries go too.
	removed []netip.Addr
}

func (p *Plugin) newCall(args *skel.CmdArgs, cmd string) (*call, error) {
	c, err := conf.ParseNetConf(args.StdinData)
	if err != nil {
		return nil, configErr(err)
	}
	pod := parseArgs(args.Args)
	log, closer := openLog(c)
	log = log.With("cmd", cmd, "network", c.Name, "containerID", args.ContainerID, "ifname", args.IfName)
	if pod.Name != "" {
		log = log.With("pod", pod.Namespace+"/"+pod.Name)
	}
	log.Debug("call", "netns", args.Netns, "ipam", c.IPAM.Type, "cniVersion", c.CNIVersion, "args", args.Args)
	return &call{
		args: args, conf: c, log: log, pod: pod, closer: closer, inProcess: p.inProcess(c),
		veth: conf.HostVethNameIf(pod.Namespace, pod.Name, args.ContainerID, args.IfName),
	}, nil
}

func (c *call) attachment() attachment {
	return attachment{Network: c.conf.Name, ContainerID: c.args.ContainerID, IfName: c.args.IfName}
}

// openLog opens the config's log file for appending. A log that cannot be
// opened must not fail the pod: the plugin then logs to stderr, which the
// runtime keeps, and never to stdout, which carries the result.
func openLog(c *conf.NetConf) (*slog.Logger, func()) {
	level, _ := c.SlogLevel()
	opts := &slog.HandlerOptions{Level: level}
	if err := os.MkdirAll(filepath.Dir(c.LogFile), 0o755); err == nil {
		if f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			return slog.New(slog.NewJSONHandler(f, opts)), func() { f.Close() }
		}
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts)), func() {}
}

// podAddrs is the list of addresses IPAM gave, each as a host prefix: brindle
// routes every pod address on its own, whatever the pool's prefix length.
func podAddrs(res *current.Result) ([]netip.Addr, error) {
	if len(res.IPs) == 0 {
		return nil, errors.New("returned no IP address")
	}
	out := make([]netip.Addr, 0, len(res.IPs))
	for _, ipc := range res.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return nil, fmt.Errorf("returned an invalid IP address %v", ipc.Address.IP)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

// buildResult is the ADD result: the host veth, the pod interface (with its
// sandbox), each address as a host prefix on the pod interface, and the
// default routes through the gateways.
func buildResult(ipamRes *current.Result, c *conf.NetConf, host, pod netlink.Link, sandbox string, addrs []netip.Addr) *current.Result {
	podIdx := 1
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: host.Attrs().Name, Mac: host.Attrs().HardwareAddr.String()},
			{Name: pod.Attrs().Name, Mac: pod.Attrs().HardwareAddr.String(), Sandbox: sandbox},
		},
		DNS: ipamRes.DNS,
	}
	if res.DNS.Nameservers == nil && c.DNS.Nameservers != nil {
		res.DNS = c.DNS
	}
	var v4, v6 bool
	for _, a := range addrs {
		gw := GatewayV4
		if a.Is6() {
			gw, v6 = GatewayV6, true
		} else {
			v4 = true
		}
		res.IPs = append(res.IPs, &current.IPConfig{
			Interface: &podIdx,
			Address:   *prefixIPNet(netip.PrefixFrom(a, a.BitLen())),
			Gateway:   net.IP(gw.AsSlice()),
		})
	}
	if v4 {
		res.Routes = append(res.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: net.IP(GatewayV4.AsSlice())})
	}
	if v6 {
		res.Routes = append(res.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, GW: net.IP(GatewayV6.AsSlice())})
	}
	return res
}

// CmdDel removes the attachment. It is forgiving: a missing netns, veth or
// IPAM record is success, and the IPAM plugin's DEL always runs, so that an
// address is never leaked because the kernel side was already gone.
func (p *Plugin) CmdDel(args *skel.CmdArgs) error {
	c, err := p.newCall(args, "DEL")
	if err != nil {
		return err
	}
	defer c.closer()

	var errs []error
	if err := c.removeAttachment(); err != nil {
		errs = append(errs, cniErr(ErrVeth, fmt.Sprintf("remove host veth %s", c.veth), err))
	}
	// The addresses are free from now on: none of their flows may outlive
	// the pod. The veth's routes named them; prevResult (cached by the
	// runtime) covers a veth that was already gone.
	c.flushConntrack(append(c.removed, prevAddrs(c.conf)...))
	if err := c.ipamDel(); err != nil {
		errs = append(errs, err)
	}
	c.log.Debug("ipam released", "ipam", c.conf.IPAM.Type, "ok", len(errs) == 0)
	if len(errs) > 0 {
		c.log.Error("DEL failed", "err", errors.Join(errs...))
		return errs[0]
	}
	c.log.Info("pod detached", "veth", c.veth)
	return nil
}

// CmdStatus reports whether the plugin is ready for ADDs: that is, whether
// its IPAM plugin is.
func (p *Plugin) CmdStatus(args *skel.CmdArgs) error {
	c, err := p.newCall(args, "STATUS")
	if err != nil {
		return err
	}
	defer c.closer()
	if err := c.ipamStatus(); err != nil {
		return err
	}
	return nil
}

// openPod opens the pod's namespace and a netlink handle in it; closer
// releases both.
func openPod(path string) (ns.NetNS, *netlink.Handle, func(), error) {
	n, err := openNetNS(path)
	if err != nil {
		return nil, nil, nil, err
	}
	// Only a routing socket: the pod side needs nothing else, and each
	// socket of a handle is made with two setns calls.
	h, err := netlink.NewHandleAt(nsHandle(n), unix.NETLINK_ROUTE)
	if err != nil {
		n.Close()
		return nil, nil, nil, cniErr(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q: open netlink socket", path), err)
	}
	return n, h, func() { h.Close(); n.Close() }, nil
}

func openNetNS(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		if errors.As(err, &notExist) {
			return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q: no such network namespace", path), err.Error())
		}
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q: not a network namespace", path), err.Error())
	}
	return n, nil
}

// flushConntrack drops the host's conntrack entries of addrs. A failure is
// logged, never fatal: stale flows time out on their own.
func (c *call) flushConntrack(addrs []netip.Addr) {
	if len(addrs) == 0 {
		return
	}
	n, err := flushConntrack(addrs)
	if err != nil {
		c.log.Debug("conntrack flush", "addresses", addrs, "err", err)
		return
	}
	c.log.Debug("conntrack flushed", "addresses", addrs, "entries", n)
}

// prevAddrs are the addresses of the config's prevResult, if any.
func prevAddrs(n *conf.NetConf) []netip.Addr {
	if n.RawPrevResult == nil {
		return nil
	}
	if err := version.ParsePrevResult(&n.NetConf); err != nil || n.PrevResult == nil {
		return nil
	}
	prev, err := current.NewResultFromResult(n.PrevResult)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ipc := range prev.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}
