package bgpd

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeLinks is the kernel's links, addresses and neighbours in memory; it
// records every change as a line of a transcript.
type fakeLinks struct {
	links      map[string]netlink.Link
	addrs      map[int][]netlink.Addr
	neighs     map[int][]netlink.Neigh
	next       int
	transcript []string
	failAdd    map[string]error
}

func newFakeLinks() *fakeLinks {
	return &fakeLinks{links: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}, neighs: map[int][]netlink.Neigh{}, next: 10}
}

func (f *fakeLinks) log(format string, args ...any) {
	f.transcript = append(f.transcript, fmt.Sprintf(format, args...))
}

func (f *fakeLinks) LinkByName(name string) (netlink.Link, error) {
	if l, ok := f.links[name]; ok {
		return l, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

func (f *fakeLinks) LinkAdd(l netlink.Link) error {
	a := l.Attrs()
	if err := f.failAdd[a.Name]; err != nil {
		return err
	}
	switch v := l.(type) {
	case *netlink.Vxlan:
		f.log("link add %s type vxlan id %d local %s dstport %d learning %v mtu %d address %s", a.Name, v.VxlanId, v.SrcAddr, v.Port, v.Learning, a.MTU, a.HardwareAddr)
	case *netlink.Iptun:
		f.log("link add %s type ipip mtu %d", a.Name, a.MTU)
	}
	f.next++
	a.Index = f.next
	f.links[a.Name] = l
	return nil
}

func (f *fakeLinks) LinkDel(l netlink.Link) error {
	f.log("link del %s", l.Attrs().Name)
	delete(f.links, l.Attrs().Name)
	delete(f.addrs, l.Attrs().Index)
	delete(f.neighs, l.Attrs().Index)
	return nil
}

func (f *fakeLinks) LinkSetUp(l netlink.Link) error {
	f.log("link set %s up", l.Attrs().Name)
	l.Attrs().Flags |= net.FlagUp
	return nil
}

func (f *fakeLinks) LinkSetDown(l netlink.Link) error {
	f.log("link set %s down", l.Attrs().Name)
	l.Attrs().Flags &^= net.FlagUp
	return nil
}

func (f *fakeLinks) LinkSetMTU(l netlink.Link, mtu int) error {
	f.log("link set %s mtu %d", l.Attrs().Name, mtu)
	l.Attrs().MTU = mtu
	return nil
}

func (f *fakeLinks) LinkSetHardwareAddr(l netlink.Link, hw net.HardwareAddr) error {
	f.log("link set %s address %s", l.Attrs().Name, hw)
	l.Attrs().HardwareAddr = hw
	return nil
}

func (f *fakeLinks) AddrList(l netlink.Link, _ int) ([]netlink.Addr, error) {
	return slices.Clone(f.addrs[l.Attrs().Index]), nil
}

func (f *fakeLinks) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	f.log("addr replace %s dev %s", a.IPNet, l.Attrs().Name)
	f.addrs[l.Attrs().Index] = append(f.addrs[l.Attrs().Index], *a)
	return nil
}

func (f *fakeLinks) AddrDel(l netlink.Link, a *netlink.Addr) error {
	f.log("addr del %s dev %s", a.IPNet, l.Attrs().Name)
	f.addrs[l.Attrs().Index] = slices.DeleteFunc(f.addrs[l.Attrs().Index], func(x netlink.Addr) bool { return x.IPNet.String() == a.IPNet.String() })
	return nil
}

func (f *fakeLinks) NeighList(idx, family int) ([]netlink.Neigh, error) {
	var out []netlink.Neigh
	for _, n := range f.neighs[idx] {
		if n.Family == family {
			out = append(out, n)
		}
	}
	return out, nil
}

func neighText(n *netlink.Neigh) string {
	if n.Family == unix.AF_BRIDGE {
		self := ""
		if n.Flags&netlink.NTF_SELF != 0 {
			self = " self"
		}
		return fmt.Sprintf("fdb %s dst %s dev #%d%s permanent=%v", n.HardwareAddr, n.IP, n.LinkIndex, self, n.State == netlink.NUD_PERMANENT)
	}
	return fmt.Sprintf("neigh %s lladdr %s dev #%d permanent=%v", n.IP, n.HardwareAddr, n.LinkIndex, n.State == netlink.NUD_PERMANENT)
}

func (f *fakeLinks) NeighSet(n *netlink.Neigh) error {
	f.log("set %s", neighText(n))
	f.neighs[n.LinkIndex] = append(f.neighs[n.LinkIndex], *n)
	return nil
}

func (f *fakeLinks) NeighDel(n *netlink.Neigh) error {
	f.log("del %s", neighText(n))
	f.neighs[n.LinkIndex] = slices.DeleteFunc(f.neighs[n.LinkIndex], func(x netlink.Neigh) bool {
		return x.Family == n.Family && neighKey(&x) == neighKey(n)
	})
	return nil
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func checkTranscript(t *testing.T, step string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: transcript\n  %s\nwant\n  %s", step, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestTunnelsVXLANTranscript(t *testing.T) {
	k := newFakeLinks()
	tun := NewTunnels(k, quiet())
	vtepB := VTEP{Node: "b", TunnelIP: netip.MustParseAddr("10.244.1.0"), MAC: mustMAC("02:00:00:00:00:0b"), NodeIP: netip.MustParseAddr("198.19.1.12")}
	vtepC := VTEP{Node: "c", TunnelIP: netip.MustParseAddr("10.244.2.0"), MAC: mustMAC("02:00:00:00:00:0c"), NodeIP: netip.MustParseAddr("198.19.2.13")}
	spec := &VXLANSpec{Local: netip.MustParseAddr("198.19.1.11"), MAC: mustMAC("02:00:00:00:00:0a"), MTU: 1450,
		Addr: netip.MustParseAddr("10.244.0.0"), Peers: []VTEP{vtepC, vtepB}}
	if err := tun.Set(TunnelSpec{VXLAN: spec}); err != nil {
		t.Fatal(err)
	}
	checkTranscript(t, "create", k.transcript, []string{
		"link add vxlan.brindle type vxlan id 4096 local 198.19.1.11 dstport 4789 learning false mtu 1450 address 02:00:00:00:00:0a",
		"link set vxlan.brindle up",
		"addr replace 10.244.0.0/32 dev vxlan.brindle",
		"set neigh 10.244.1.0 lladdr 02:00:00:00:00:0b dev #11 permanent=true",
		"set neigh 10.244.2.0 lladdr 02:00:00:00:00:0c dev #11 permanent=true",
		"set fdb 02:00:00:00:00:0b dst 198.19.1.12 dev #11 self permanent=true",
		"set fdb 02:00:00:00:00:0c dst 198.19.2.13 dev #11 self permanent=true",
	})

	k.transcript = nil
	if err := tun.Set(TunnelSpec{VXLAN: spec}); err != nil || len(k.transcript) != 0 {
		t.Errorf("second Set changed %v (err %v)", k.transcript, err)
	}

	// c leaves (CrossSubnet made it native, or it is gone): its entries go.
	k.transcript = nil
	spec.Peers = []VTEP{vtepB}
	if err := tun.Set(TunnelSpec{VXLAN: spec}); err != nil {
		t.Fatal(err)
	}
	checkTranscript(t, "stale peer", k.transcript, []string{
		"del neigh 10.244.2.0 lladdr 02:00:00:00:00:0c dev #11 permanent=true",
		"del fdb 02:00:00:00:00:0c dst 198.19.2.13 dev #11 self permanent=true",
	})

	// A new local address cannot be changed in place: the device is re-created.
	k.transcript = nil
	spec.Local = netip.MustParseAddr("198.19.1.21")
	if err := tun.Set(TunnelSpec{VXLAN: spec}); err != nil {
		t.Fatal(err)
	}
	checkTranscript(t, "new local", k.transcript, []string{
		"link del vxlan.brindle",
		"link add vxlan.brindle type vxlan id 4096 local 198.19.1.21 dstport 4789 learning false mtu 1450 address 02:00:00:00:00:0a",
		"link set vxlan.brindle up",
		"addr replace 10.244.0.0/32 dev vxlan.brindle",
		"set neigh 10.244.1.0 lladdr 02:00:00:00:00:0b dev #12 permanent=true",
		"set fdb 02:00:00:00:00:0b dst 198.19.1.12 dev #12 self permanent=true",
	})

	// No pool wants VXLAN any more: the device goes.
	k.transcript = nil
	if err := tun.Set(TunnelSpec{}); err != nil {
		t.Fatal(err)
	}
	checkTranscript(t, "off", k.transcript, []string{"link del vxlan.brindle"})
}

// TestTunnelsIPIPTranscript pins the IPIP kernel objects; the real kernel
// here has no ipip module, so this is where IPIP's device is tested.
func TestTunnelsIPIPTranscript(t *testing.T) {
	k := newFakeLinks()
	tun := NewTunnels(k, quiet())
	spec := TunnelSpec{IPIP: &IPIPSpec{MTU: 1480, Addr: netip.MustParseAddr("10.244.0.0")}}
	if err := tun.Set(spec); err != nil {
		t.Fatal(err)
	}
	checkTranscript(t, "create", k.transcript, []string{
		"link add tunl0 type ipip mtu 1480",
		"link set tunl0 up",
		"addr replace 10.244.0.0/32 dev tunl0",
	})
	k.transcript = nil
	if err := tun.Set(spec); err != nil || len(k.transcript) != 0 {
		t.Errorf("second Set changed %v (err %v)", k.transcript, err)
	}
	k.transcript = nil
	if err := tun.Set(TunnelSpec{}); err != nil {
		t.Fatal(err)
	}
	checkTranscript(t, "off", k.transcript, []string{"addr del 10.244.0.0/32 dev tunl0", "link set tunl0 down"})

	// Without the module, creating tunl0 fails, and the error says why.
	k = newFakeLinks()
	k.failAdd = map[string]error{"tunl0": unix.EOPNOTSUPP}
	err := NewTunnels(k, quiet()).Set(spec)
	if err == nil || !strings.Contains(err.Error(), "ipip module") {
		t.Errorf("err = %v; want it to name the missing ipip module", err)
	}
}

// Defect 11 (issue 12): on a host that uses tunl0 for something else, the
// addresses brindle did not put there stay, and so does the device's state.
func TestTunnelsIPIPLeavesForeignTunl0(t *testing.T) {
	k := newFakeLinks()
	foreign := netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("192.0.2.1/32"))}
	l := &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: IPIPDevice, Index: 3, MTU: 1480, Flags: net.FlagUp}}
	k.links[IPIPDevice] = l
	k.addrs[3] = []netlink.Addr{foreign}
	tun := NewTunnels(k, quiet())
	if err := tun.Set(TunnelSpec{}); err != nil {
		t.Fatal(err)
	}
	checkTranscript(t, "no pool uses IPIP", k.transcript, nil)
	// brindle's own address comes and goes; the host's stays.
	spec := TunnelSpec{IPIP: &IPIPSpec{MTU: 1480, Addr: netip.MustParseAddr("10.244.0.0")}}
	if err := tun.Set(spec); err != nil {
		t.Fatal(err)
	}
	checkTranscript(t, "IPIP on", k.transcript, []string{"addr replace 10.244.0.0/32 dev tunl0"})
	k.transcript = nil
	if err := tun.Set(TunnelSpec{}); err != nil {
		t.Fatal(err)
	}
	checkTranscript(t, "IPIP off again", k.transcript, []string{"addr del 10.244.0.0/32 dev tunl0"})
	if got := k.addrs[3]; len(got) != 1 || got[0].IPNet.String() != "192.0.2.1/32" {
		t.Fatalf("tunl0 addresses %v, want the host's 192.0.2.1/32 only", got)
	}
}
