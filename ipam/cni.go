package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/brindle-net/brindle/conf"
)

// ErrCodePluginNotAvailable is the CNI error code STATUS returns when the
// plugin cannot serve ADDs (spec 1.1.0, code 50).
const ErrCodePluginNotAvailable uint = 50

// Plugin is the CNI side of brindle-ipam: it turns CNI calls into allocator
// calls. cmd/brindle-ipam only wires it to skel.
type Plugin struct {
	// Env looks up environment variables (os.LookupEnv outside tests).
	Env func(string) (string, bool)
	// Connect opens the store; the returned func closes it.
	Connect func(conf.EtcdConfig) (Store, func(), error)
	// Log is where the plugin logs; stderr, since stdout carries the result.
	Log *slog.Logger
}

// NewPlugin returns the plugin as the binary runs it: the real environment,
// logging warnings to stderr, and the given way to reach etcd.
func NewPlugin(connect func(conf.EtcdConfig) (Store, func(), error)) *Plugin {
	return &Plugin{
		Env:     os.LookupEnv,
		Connect: connect,
		Log:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// Funcs returns the skel entry points.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

// cniArgs are the CNI_ARGS brindle-ipam understands; others are ignored.
type cniArgs struct {
	types.CommonArgs
	IP                types.UnmarshallableString
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive // CNI_ARGS names
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive
	K8S_POD_UID       types.UnmarshallableString //nolint:revive
}

// call is what every command needs: config, node, allocator, deadline.
type call struct {
	n      *conf.IPAMNetConf
	node   string
	alloc  *Allocator
	notes  *HandleNotes // nil where brindled's directory does not exist
	ctx    context.Context
	cancel context.CancelFunc
	close  func()
}

func (c *call) done() {
	c.cancel()
	c.close()
}

func (p *Plugin) setup(args *skel.CmdArgs) (*call, error) {
	n, err := conf.LoadIPAMNetConf(args.StdinData, p.Env)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid ipam config", err.Error())
	}
	p.openLog(n, args)
	node, from, err := n.IPAM.NodeName(p.Env)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "no node name", err.Error())
	}
	p.Log.Debug("ipam call", "node", node, "nodeFrom", from, "etcd", n.IPAM.Etcd.Endpoints, "timeout", n.IPAM.Timeout)
	if strings.Contains(from, "missing") {
		p.Log.Warn("node name not from brindled's nodename file; blocks are claimed for this name", "node", node, "from", from)
	}
	store, closeFn, err := p.Connect(n.IPAM.Etcd)
	if err != nil {
		return nil, err
	}
	a := New(store)
	a.Log = p.Log
	// Block hints live next to the nodename file, in the directory brindled
	// owns; where it does not exist, ADD just makes one more round trip.
	var notes *HandleNotes
	if dir := filepath.Dir(n.IPAM.NodenameFile); dirExists(dir) {
		a.Hints = FileHints{Dir: dir}
		notes = &HandleNotes{Dir: filepath.Join(dir, "ipam-handles")}
		// Concurrent calls on this node share transactions (nodelocal.go).
		a.Local = &NodeLocal{Dir: NodeLocalDir(dir, node, n.IPAM.Etcd.Endpoints), Node: node}
	}
	// One deadline bounds the whole call, retries included, so an
	// unreachable etcd fails the call instead of hanging the runtime.
	ctx, cancel := context.WithTimeout(context.Background(), n.IPAM.Timeout)
	return &call{n: n, node: node, alloc: a, notes: notes, ctx: ctx, cancel: cancel, close: closeFn}, nil
}

// Add assigns the attachment's addresses and prints the result.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	res, version, err := p.add(args)
	if err != nil {
		return err
	}
	return types.PrintResult(res, version)
}

// AddResult is ADD without printing: the assigned addresses as a result,
// for the brindle plugin, which runs this code in its own process
// (plugins/routed). Its errors are what Add's would be; an error that is
// not a *types.Error is one skel would print with code 999.
func (p *Plugin) AddResult(args *skel.CmdArgs) (*current.Result, error) {
	res, _, err := p.add(args)
	return res, err
}

// add returns the result and the CNI version the config asks for.
func (p *Plugin) add(args *skel.CmdArgs) (*current.Result, string, error) {
	var ca cniArgs
	// Runtimes add arguments of their own (K8S_POD_INFRA_CONTAINER_ID, ...);
	// only the ones read below matter, so unknown ones are never an error.
	cargs := args.Args
	if cargs != "" {
		cargs = "IgnoreUnknown=1;" + cargs
	}
	if err := types.LoadArgs(cargs, &ca); err != nil {
		return nil, "", fmt.Errorf("parse CNI_ARGS %q: %w", args.Args, err)
	}
	c, err := p.setup(args)
	if err != nil {
		return nil, "", err
	}
	defer c.done()
	ips, err := requestedIPs(string(ca.IP), c.n.RuntimeIPs)
	if err != nil {
		return nil, "", err
	}
	ns, pod := string(ca.K8S_POD_NAMESPACE), string(ca.K8S_POD_NAME)
	attrs := map[string]string{AttrNode: c.node, AttrContainerID: args.ContainerID, AttrIfName: args.IfName, AttrNetwork: c.n.Name}
	if ns != "" {
		attrs[AttrNamespace], attrs[AttrPod] = ns, pod
	}
	handle := HandleID(args.ContainerID, args.IfName)
	p.Log.Debug("ipam add", "handle", handle, "ipv4", c.n.IPAM.AssignIPv4, "ipv6", c.n.IPAM.AssignIPv6, "requested", ips)
	// The note must exist before anything is committed; it is written
	// while the pod's annotations are read (a file create and a socket
	// round trip, each a few tenths of a millisecond, overlap).
	noted := make(chan error, 1)
	switch {
	case c.notes == nil || !safeName(handle):
		noted <- nil
	case ns != "" && pod != "":
		go func() { noted <- c.notes.Put(handle) }()
	default:
		noted <- c.notes.Put(handle)
	}
	req := AssignRequest{
		Handle:    handle,
		Node:      c.node,
		Attrs:     attrs,
		IPv4:      c.n.IPAM.AssignIPv4,
		IPv6:      c.n.IPAM.AssignIPv6,
		IPv4Pools: c.n.IPAM.IPv4Pools,
		IPv6Pools: c.n.IPAM.IPv6Pools,
		IPs:       ips,
		Endpoint: &Endpoint{Namespace: ns, Pod: pod, ContainerID: args.ContainerID,
			IfName: args.IfName, HostVeth: conf.HostVethNameIf(ns, pod, args.ContainerID, args.IfName)},
	}
	ask, err := p.kubeRequest(c, ns, pod, string(ca.K8S_POD_UID), &req)
	if nerr := <-noted; nerr != nil {
		return nil, "", fmt.Errorf("note handle %s in %s: %w", handle, c.notes.Dir, nerr)
	}
	if err != nil {
		p.Log.Error("ipam add failed", "container", args.ContainerID, "namespace", ns, "pod", pod, "err", err)
		return nil, "", err
	}
	got, err := c.alloc.Assign(c.ctx, req)
	if err != nil {
		err = ask.explain(err)
		p.Log.Error("ipam add failed", "container", args.ContainerID, "namespace", ns, "pod", pod, "err", err)
		return nil, "", cniError(err)
	}
	p.Log.Info("ipam add", "container", args.ContainerID, "namespace", ns, "pod", pod, "ips", addrsOf(got))
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, ha := range got {
		bits := ha.Addr.BitLen()
		res.IPs = append(res.IPs, &current.IPConfig{Address: net.IPNet{
			IP: ha.Addr.AsSlice(), Mask: net.CIDRMask(bits, bits)}})
	}
	return res, c.n.CNIVersion, nil
}

// requestedIPs merges IP= from CNI_ARGS (comma-separated) and the `ips`
// capability; entries may be bare addresses or address/prefix.
func requestedIPs(arg string, runtime []string) ([]netip.Addr, error) {
	var out []netip.Addr
	var items []string
	if arg != "" {
		items = strings.Split(arg, ",")
	}
	for _, s := range append(items, runtime...) {
		s = strings.TrimSpace(s)
		if i := strings.IndexByte(s, '/'); i >= 0 {
			s = s[:i]
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("requested ip %q: not an address", s), err.Error())
		}
		if !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// Del releases whatever the attachment holds; nothing held is success.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	c, err := p.setup(args)
	if err != nil {
		return err
	}
	defer c.done()
	handle := HandleID(args.ContainerID, args.IfName)
	rel, err := c.alloc.ReleaseHandle(c.ctx, handle)
	if err != nil {
		if errors.Is(err, ErrUnreachable) && c.notes != nil && !c.notes.Has(handle) {
			// No note: this attachment holds nothing here (released by an
			// earlier DEL or GC, or never allocated), so the DEL is done.
			p.Log.Warn("ipam del: etcd unreachable, but this node holds no addresses for the attachment; nothing to release",
				"container", args.ContainerID, "handle", handle, "err", err)
			return nil
		}
		return cniError(err)
	}
	if c.notes != nil {
		c.notes.Remove(handle)
	}
	p.Log.Info("ipam del", "container", args.ContainerID, "released", addrsOf(rel))
	if len(rel) == 0 {
		p.detachSticky(c, args.Args, args.ContainerID, args.IfName)
	}
	// Runtimes do not all call GC, so a DEL also releases this node's
	// blocks that have stayed empty past the grace period. It is one read
	// when there are none, and DEL is dominated by deleting the veth anyway;
	// a failure here never fails the DEL. The node-local state, when there
	// is one, says whether any block is due, and spares the read if none is.
	if c.alloc.Local != nil && !c.alloc.Local.EmptyBlocksDue(c.alloc.Now(), c.alloc.EmptyBlockGrace) {
		return nil
	}
	if blocks, err := c.alloc.ReleaseEmptyBlocks(c.ctx, c.node); err != nil {
		p.Log.Warn("release empty blocks", "node", c.node, "err", err)
	} else if len(blocks) > 0 {
		p.Log.Info("released empty blocks", "node", c.node, "blocks", blocks)
	}
	return nil
}

// Check verifies that the handle exists and holds exactly the addresses
// of prevResult.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	c, err := p.setup(args)
	if err != nil {
		return err
	}
	defer c.done()
	handle := HandleID(args.ContainerID, args.IfName)
	h, err := c.alloc.HandleOf(c.ctx, handle)
	if err != nil {
		return cniError(err)
	}
	if h == nil {
		return fmt.Errorf("check: handle %q holds no addresses", handle)
	}
	if c.n.RawPrevResult == nil {
		return nil
	}
	if err := version.ParsePrevResult(&c.n.NetConf); err != nil {
		return fmt.Errorf("check: parse prevResult: %w", err)
	}
	prev, err := current.NewResultFromResult(c.n.PrevResult)
	if err != nil {
		return fmt.Errorf("check: convert prevResult: %w", err)
	}
	for _, ipc := range prev.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		if !slices.ContainsFunc(h.Addrs, func(x HandleAddr) bool { return x.Addr == a.Unmap() }) {
			return fmt.Errorf("check: prevResult ip %s is not held by handle %q (holds %v)", a, handle, addrsOf(h.Addrs))
		}
	}
	return nil
}

// GC releases this node's allocations whose attachment the runtime no
// longer has, and empty blocks past their grace period.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	c, err := p.setup(args)
	if err != nil {
		return err
	}
	defer c.done()
	var valid []Attachment
	for _, v := range c.n.ValidAttachments {
		valid = append(valid, Attachment{ContainerID: v.ContainerID, IfName: v.IfName})
	}
	rel, err := c.alloc.GC(c.ctx, c.node, c.n.Name, valid)
	if c.notes != nil {
		for _, h := range rel {
			c.notes.Remove(h)
		}
	}
	p.Log.Info("ipam gc", "node", c.node, "network", c.n.Name, "released", rel)
	if err != nil {
		return cniError(err)
	}
	return nil
}

// Status reports code 50 when etcd cannot be reached or no usable pool exists.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	c, err := p.setup(args)
	if err != nil {
		return err
	}
	defer c.done()
	if err := c.alloc.Status(c.ctx, c.n.IPAM.AssignIPv4, c.n.IPAM.AssignIPv6); err != nil {
		return types.NewError(ErrCodePluginNotAvailable, "brindle-ipam cannot assign addresses", err.Error())
	}
	return nil
}

// openLog sends the plugin's log to the network config's logFile at its
// logLevel (the brindle plugin's, which delegates its whole config), as
// JSON lines naming this plugin; without a logFile it stays on stderr.
func (p *Plugin) openLog(n *conf.IPAMNetConf, args *skel.CmdArgs) {
	if n.LogFile == "" && n.LogLevel == "" {
		return
	}
	lc := conf.NetConf{LogLevel: n.LogLevel}
	level, err := lc.SlogLevel()
	if err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if n.LogFile != "" {
		if err := os.MkdirAll(filepath.Dir(n.LogFile), 0o755); err == nil {
			if f, err := os.OpenFile(n.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
				h = slog.NewJSONHandler(f, opts) // closed when the process exits
			}
		}
	}
	p.Log = slog.New(h).With("plugin", "brindle-ipam", "network", n.Name, "containerID", args.ContainerID, "ifname", args.IfName)
}

func dirExists(d string) bool {
	fi, err := os.Stat(d)
	return err == nil && fi.IsDir()
}

// cniError gives unreachable etcd the "try again later" code, so the
// runtime retries instead of giving up on the pod.
func cniError(err error) error {
	if errors.Is(err, ErrUnreachable) || errors.Is(err, ErrNodeBusy) {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	return err
}
