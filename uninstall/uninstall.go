// Package uninstall removes what brindle put on a node: its kernel routes,
// tunnel devices and nftables tables, the CNI binaries and network config,
// and its state directory. It is `brindlectl uninstall`, which the cleanup
// DaemonSet (conf/k8s/uninstall) runs on every node; docs/operations.md
// says what it removes and what it leaves.
package uninstall

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/sysctl"
	"github.com/brindle-net/brindle/policy/nft"
)

// Options say where brindle's files are and what else to remove.
type Options struct {
	BinDir, NetDir, ConfName string
	// Binaries are removed from BinDir (brindle and brindle-ipam by
	// default: portmap may serve another CNI).
	Binaries []string
	// StateDir is brindle's directory (/var/lib/brindle); LogDir the
	// plugin's logs (/var/log/brindle).
	StateDir, LogDir string
	// Veths also deletes the host veths brindle stamped (pods still
	// attached lose their network).
	Veths bool
	// RestoreForwarding puts ip_forward and IPv6 forwarding back to what
	// they were before brindled first set them (recorded in StateDir).
	RestoreForwarding bool
	// DryRun reports and changes nothing.
	DryRun bool
}

// Report is what Run did (or, in a dry run, would do), a line each.
type Report struct {
	Done, Left []string
}

// Run removes brindle from this node. It goes on after a failure and
// returns every error; running it again finishes what is left.
func Run(o Options) (Report, error) {
	var r Report
	var errs []error
	try := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	try(r.routes(o))
	try(r.tunnels(o))
	try(r.nftables(o))
	try(r.veths(o))
	try(r.forwarding(o))
	try(r.files(o))
	return r, errors.Join(errs...)
}

func (r *Report) did(o Options, format string, args ...any) {
	verb := ""
	if o.DryRun {
		verb = "would "
	}
	r.Done = append(r.Done, verb+fmt.Sprintf(format, args...))
}

// routes deletes every route with brindle's protocol: the blackholes of the
// node's blocks and the routes to the other nodes' blocks, both families.
func (r *Report) routes(o Options) error {
	rs, err := (bgpd.Netlink{H: &netlink.Handle{}}).List()
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	n := 0
	for i := range rs {
		if !o.DryRun {
			if err := netlink.RouteDel(&rs[i]); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s: %w", rs[i].Dst, err))
				continue
			}
		}
		n++
	}
	if n > 0 {
		r.did(o, "delete %d routes of protocol %d (blackholes of the node's blocks, routes to the other nodes' blocks)", n, bgpd.RouteProtocol)
	}
	return errors.Join(errs...)
}

// tunnels deletes vxlan.brindle, and takes brindle's address off tunl0
// (which cannot be deleted), setting it down if nothing else is on it.
func (r *Report) tunnels(o Options) error {
	var errs []error
	if l, err := netlink.LinkByName(bgpd.VXLANDevice); err == nil {
		if !o.DryRun {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", bgpd.VXLANDevice, err))
			}
		}
		r.did(o, "delete device %s", bgpd.VXLANDevice)
	}
	l, err := netlink.LinkByName(bgpd.IPIPDevice)
	if err != nil {
		return errors.Join(errs...)
	}
	addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
	foreign := 0
	for i := range addrs {
		if addrs[i].Label != bgpd.IPIPAddrLabel {
			foreign++
			continue
		}
		if !o.DryRun {
			if err := netlink.AddrDel(l, &addrs[i]); err != nil {
				errs = append(errs, fmt.Errorf("delete %s from %s: %w", addrs[i].IPNet, bgpd.IPIPDevice, err))
				continue
			}
		}
		r.did(o, "delete address %s from %s", addrs[i].IPNet, bgpd.IPIPDevice)
	}
	switch {
	case foreign > 0:
		r.Left = append(r.Left, fmt.Sprintf("%s: it has %d addresses brindle did not put there", bgpd.IPIPDevice, foreign))
	case l.Attrs().Flags&net.FlagUp != 0:
		if !o.DryRun {
			if err := netlink.LinkSetDown(l); err != nil {
				errs = append(errs, err)
			}
		}
		r.did(o, "set %s down (the ipip module's device cannot be deleted)", bgpd.IPIPDevice)
	}
	return errors.Join(errs...)
}

// tableName is the name of every nftables table brindle owns, whatever the
// family: ip brindle (NAT outgoing), inet brindle (the filter table).
const tableName = "brindle"

func (r *Report) nftables(o Options) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name != tableName {
			continue
		}
		if !o.DryRun {
			c.DelTable(t)
		}
		r.did(o, "delete nftables table %s %s", family(t.Family), t.Name)
	}
	if o.DryRun {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete tables: %w", err)
	}
	// The accept rules brindled put at the top of other tables' forward
	// chains with policy drop (policy/nft, docs/policy.md).
	chains, err := (&nft.Writer{}).RemoveForwardAccept()
	for _, ch := range chains {
		r.did(o, "remove brindle's accept rules from nftables chain %s", ch)
	}
	if err != nil {
		return fmt.Errorf("nftables: forward accept rules: %w", err)
	}
	return nil
}

func family(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprint(f)
}

// veths deletes (with o.Veths) or reports the host veths brindle stamped.
func (r *Report) veths(o Options) error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	var errs []error
	var left []string
	for _, l := range links {
		if l.Type() != "veth" || !strings.HasPrefix(l.Attrs().Name, conf.VethPrefix) || !strings.HasPrefix(l.Attrs().Alias, "brindle:") {
			continue
		}
		if !o.Veths {
			left = append(left, l.Attrs().Name)
			continue
		}
		if !o.DryRun {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete veth %s: %w", l.Attrs().Name, err))
				continue
			}
		}
		r.did(o, "delete host veth %s (%s)", l.Attrs().Name, l.Attrs().Alias)
	}
	if len(left) > 0 {
		r.Left = append(r.Left, fmt.Sprintf("%d host veths of pods still attached (%s...): delete the pods first, or pass --veths", len(left), left[0]))
	}
	return errors.Join(errs...)
}

// ForwardingFile records, in the state directory, what the forwarding
// sysctls were before brindled first set them.
const ForwardingFile = "forwarding-before.json"

// ForwardingSysctls are the sysctls brindled switches on.
var ForwardingSysctls = []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"}

// RecordForwarding writes the current forwarding sysctls to dir, unless a
// record exists (it is of the state before brindle, kept across restarts).
func RecordForwarding(dir string) error {
	path := filepath.Join(dir, ForwardingFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	before := map[string]string{}
	for _, s := range ForwardingSysctls {
		if v, err := sysctl.Get(s); err == nil {
			before[s] = v
		}
	}
	b, _ := json.Marshal(before)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func (r *Report) forwarding(o Options) error {
	b, err := os.ReadFile(filepath.Join(o.StateDir, ForwardingFile))
	if !o.RestoreForwarding || err != nil {
		r.Left = append(r.Left, "ip_forward and IPv6 forwarding stay on (kube-proxy and other containers need them); --restore-forwarding puts back what brindled found")
		return nil
	}
	var before map[string]string
	if err := json.Unmarshal(b, &before); err != nil {
		return fmt.Errorf("%s: %w", ForwardingFile, err)
	}
	var errs []error
	for _, s := range ForwardingSysctls {
		v, ok := before[s]
		if !ok {
			continue
		}
		if !o.DryRun {
			if err := sysctl.Set(s, v); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		r.did(o, "set %s back to %s", strings.ReplaceAll(s, "/", "."), v)
	}
	return errors.Join(errs...)
}

// files removes the network config, brindle's TLS copies, its binaries,
// its state directory and its logs.
func (r *Report) files(o Options) error {
	paths := []string{filepath.Join(o.NetDir, o.ConfName), filepath.Join(o.NetDir, "brindle-tls")}
	for _, b := range o.Binaries {
		paths = append(paths, filepath.Join(o.BinDir, b))
	}
	paths = append(paths, o.StateDir, o.LogDir)
	var errs []error
	for _, p := range paths {
		if p == "" || p == "/" {
			continue
		}
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if !o.DryRun {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		r.did(o, "remove %s", p)
	}
	return errors.Join(errs...)
}
