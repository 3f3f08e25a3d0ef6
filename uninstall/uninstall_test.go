package uninstall

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/internal/testenv"
)

func ipn(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// TestUninstallRemovesBrindleOnly builds, in a throwaway namespace and
// directories, what brindle leaves on a node next to things that are not
// brindle's, and checks that uninstall removes exactly brindle's.
func TestUninstallRemovesBrindleOnly(t *testing.T) {
	testenv.RequireRoot(t)
	n := testenv.NewNS(t)
	root := t.TempDir()
	o := Options{BinDir: filepath.Join(root, "opt/cni/bin"), NetDir: filepath.Join(root, "etc/cni/net.d"), ConfName: "10-brindle.conflist",
		Binaries: []string{"brindle", "brindle-ipam"}, StateDir: filepath.Join(root, "var/lib/brindle"), LogDir: filepath.Join(root, "var/log/brindle")}
	for path, body := range map[string]string{
		filepath.Join(o.NetDir, "10-brindle.conflist"):      "{}",
		filepath.Join(o.NetDir, "brindle-tls", "ca.crt"):    "pem",
		filepath.Join(o.NetDir, "05-other.conflist"):        "{}",
		filepath.Join(o.BinDir, "brindle"):                  "bin",
		filepath.Join(o.BinDir, "brindle-ipam"):             "bin",
		filepath.Join(o.BinDir, "portmap"):                  "bin",
		filepath.Join(o.StateDir, "nodename"):               "node-1\n",
		filepath.Join(o.StateDir, "ipam-handles", "c.eth0"): "",
		filepath.Join(o.LogDir, "cni.log"):                  "{}",
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := testenv.Do(t, n, func() error {
		pod := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "bri0123456789ab"}, PeerName: "podend"}
		if err := netlink.LinkAdd(pod); err != nil {
			return err
		}
		if err := netlink.LinkSetAlias(pod, "brindle:k8s/c1/eth0"); err != nil {
			return err
		}
		up := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "world"}
		if err := netlink.LinkAdd(up); err != nil {
			return err
		}
		eth0, _ := netlink.LinkByName("eth0")
		_ = netlink.LinkSetUp(eth0)
		if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: ipn("198.19.1.11/24")}); err != nil {
			return err
		}
		vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: bgpd.VXLANDevice}, VxlanId: 4096, Port: 4789}
		if err := netlink.LinkAdd(vx); err != nil {
			return err
		}
		for _, r := range []*netlink.Route{
			{Dst: ipn("10.244.1.0/26"), Type: unix.RTN_BLACKHOLE, Protocol: bgpd.RouteProtocol},
			{Dst: ipn("fd00:244::/122"), Type: unix.RTN_BLACKHOLE, Protocol: bgpd.RouteProtocol},
			{Dst: ipn("10.244.2.0/26"), Gw: net.ParseIP("198.19.1.12"), Protocol: bgpd.RouteProtocol},
			{Dst: ipn("192.0.2.0/24"), Gw: net.ParseIP("198.19.1.1"), Protocol: unix.RTPROT_STATIC},
		} {
			if err := netlink.RouteAdd(r); err != nil {
				return err
			}
		}
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "brindle"})
		c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "brindle"})
		c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "other"})
		return c.Flush()
	})
	if err != nil {
		t.Fatal(err)
	}

	var r Report
	if err := testenv.Do(t, n, func() (err error) { r, err = Run(o); return err }); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, strings.Join(r.Done, "\n"))
	}
	t.Logf("done:\n%s\nleft:\n%s", strings.Join(r.Done, "\n"), strings.Join(r.Left, "\n"))

	// Files: brindle's gone, the others there.
	for _, p := range []string{filepath.Join(o.NetDir, "10-brindle.conflist"), filepath.Join(o.NetDir, "brindle-tls"),
		filepath.Join(o.BinDir, "brindle"), filepath.Join(o.BinDir, "brindle-ipam"), o.StateDir, o.LogDir} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left", p)
		}
	}
	for _, p := range []string{filepath.Join(o.NetDir, "05-other.conflist"), filepath.Join(o.BinDir, "portmap")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	err = testenv.Do(t, n, func() error {
		rs, err := (bgpd.Netlink{H: &netlink.Handle{}}).List()
		if err != nil || len(rs) != 0 {
			t.Errorf("routes of protocol 98 left: %v %v", rs, err)
		}
		all, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		if !slices.ContainsFunc(all, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == "192.0.2.0/24" }) {
			t.Error("a static route was removed")
		}
		if _, err := netlink.LinkByName(bgpd.VXLANDevice); err == nil {
			t.Error(bgpd.VXLANDevice + " left")
		}
		if _, err := netlink.LinkByName("bri0123456789ab"); err != nil {
			t.Error("the host veth of an attached pod was removed without --veths")
		}
		c, _ := nftables.New()
		tables, err := c.ListTables()
		if err != nil {
			return err
		}
		var names []string
		for _, tb := range tables {
			names = append(names, family(tb.Family)+" "+tb.Name)
		}
		if slices.Contains(names, "ip brindle") || slices.Contains(names, "inet brindle") || !slices.Contains(names, "ip other") {
			t.Errorf("nftables tables after uninstall: %v", names)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(r.Left, func(s string) bool { return strings.Contains(s, "host veths") }) {
		t.Errorf("the report does not say the pod's veth was left: %v", r.Left)
	}

	// With --veths the pod's veth goes too; after that there is nothing left.
	o.Veths = true
	if err := testenv.Do(t, n, func() (err error) { r, err = Run(o); return err }); err != nil {
		t.Fatal(err)
	}
	if len(r.Done) != 1 || !strings.Contains(r.Done[0], "bri0123456789ab") {
		t.Errorf("second run: %v", r.Done)
	}
	if err := testenv.Do(t, n, func() (err error) { r, err = Run(o); return err }); err != nil || len(r.Done) != 0 {
		t.Errorf("third run did %v (%v)", r.Done, err)
	}
}
