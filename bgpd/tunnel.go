package bgpd

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Links is the kernel as the tunnel manager sees it. *netlink.Handle is the
// real one; tests substitute a recorder that keeps a transcript.
type Links interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetDown(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetHardwareAddr(link netlink.Link, hw net.HardwareAddr) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrReplace(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	NeighList(linkIndex, family int) ([]netlink.Neigh, error)
	NeighSet(neigh *netlink.Neigh) error
	NeighDel(neigh *netlink.Neigh) error
}

// TunnelSpec is the whole desired tunnel state of a node. A nil member
// means that device is not wanted.
type TunnelSpec struct {
	VXLAN *VXLANSpec
	IPIP  *IPIPSpec
}

// VXLANSpec describes vxlan.brindle and what hangs off it.
type VXLANSpec struct {
	// Local is the node's underlay address, the tunnel's source.
	Local netip.Addr
	// MAC is this node's VTEP MAC; MTU is the host's less VXLANOverhead.
	MAC net.HardwareAddr
	MTU int
	// Addr is the node's tunnel address (a /32 on the device): the source
	// of the node's own traffic to remote pods through the tunnel.
	Addr netip.Addr
	// Peers get a permanent neighbour entry (tunnel ip -> MAC) and a
	// permanent FDB entry (MAC -> node ip) each.
	Peers []VTEP
}

// Equal reports whether two specs ask for the same devices and entries.
func (s TunnelSpec) Equal(o TunnelSpec) bool {
	if (s.IPIP == nil) != (o.IPIP == nil) || s.IPIP != nil && *s.IPIP != *o.IPIP {
		return false
	}
	if (s.VXLAN == nil) != (o.VXLAN == nil) {
		return false
	}
	if s.VXLAN == nil {
		return true
	}
	a, b := s.VXLAN, o.VXLAN
	return a.Local == b.Local && bytes.Equal(a.MAC, b.MAC) && a.MTU == b.MTU && a.Addr == b.Addr &&
		slices.EqualFunc(a.Peers, b.Peers, func(x, y VTEP) bool {
			return x.Node == y.Node && x.TunnelIP == y.TunnelIP && bytes.Equal(x.MAC, y.MAC) && x.NodeIP == y.NodeIP
		})
}

// IPIPSpec describes tunl0. It is the ipip module's fallback device, which
// cannot be deleted: when IPIP is no longer wanted brindle takes its
// address away and sets it down.
type IPIPSpec struct {
	MTU  int
	Addr netip.Addr
}

// Tunnels keeps the tunnel devices equal to a TunnelSpec. Set is
// declarative and idempotent, like FIB.Set.
type Tunnels struct {
	k   Links
	log *slog.Logger
	mu  sync.Mutex
	// ipipUp: brindle set tunl0 up (and may set it down again).
	ipipUp bool
}

// NewTunnels manages tunnels through k.
func NewTunnels(k Links, log *slog.Logger) *Tunnels {
	return &Tunnels{k: k, log: log}
}

// Set makes the devices, addresses, neighbours and FDB entries match spec.
func (t *Tunnels) Set(spec TunnelSpec) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	if err := t.setVXLAN(spec.VXLAN); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", VXLANDevice, err))
	}
	if err := t.setIPIP(spec.IPIP); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", IPIPDevice, err))
	}
	return errors.Join(errs...)
}

func notFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// vxlanMatches reports whether an existing device has the settings that
// can only be given at creation.
func vxlanMatches(l netlink.Link, s *VXLANSpec) bool {
	v, ok := l.(*netlink.Vxlan)
	if !ok {
		return false
	}
	return v.VxlanId == VXLANVNI && v.Port == VXLANPort && !v.Learning && v.SrcAddr.Equal(net.IP(s.Local.AsSlice()))
}

func (t *Tunnels) setVXLAN(s *VXLANSpec) error {
	l, err := t.k.LinkByName(VXLANDevice)
	if err != nil && !notFound(err) {
		return err
	}
	if s == nil {
		if l == nil {
			return nil
		}
		t.log.Info("removing tunnel device", "device", VXLANDevice)
		return t.k.LinkDel(l)
	}
	if l != nil && !vxlanMatches(l, s) {
		t.log.Info("re-creating tunnel device with new settings", "device", VXLANDevice, "local", s.Local)
		if err := t.k.LinkDel(l); err != nil {
			return err
		}
		l = nil
	}
	if l == nil {
		v := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: VXLANDevice, MTU: s.MTU, HardwareAddr: s.MAC},
			VxlanId:   VXLANVNI, SrcAddr: net.IP(s.Local.AsSlice()), Port: VXLANPort, Learning: false,
		}
		if err := t.k.LinkAdd(v); err != nil {
			return fmt.Errorf("create: %w", err)
		}
		t.log.Info("tunnel device created", "device", VXLANDevice, "vni", VXLANVNI, "local", s.Local, "mac", s.MAC.String(), "mtu", s.MTU)
		if l, err = t.k.LinkByName(VXLANDevice); err != nil {
			return err
		}
	}
	if err := t.linkAttrs(l, s.MTU, s.MAC); err != nil {
		return err
	}
	if _, _, err := t.setAddr(l, s.Addr, ""); err != nil {
		return err
	}
	idx := l.Attrs().Index
	var arp, fdb []netlink.Neigh
	for _, p := range s.Peers {
		arp = append(arp, netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST,
			IP: net.IP(p.TunnelIP.AsSlice()), HardwareAddr: p.MAC})
		fdb = append(fdb, netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
			IP: net.IP(p.NodeIP.AsSlice()), HardwareAddr: p.MAC})
	}
	return errors.Join(t.setNeighs(idx, unix.AF_INET, arp), t.setNeighs(idx, unix.AF_BRIDGE, fdb))
}

// linkAttrs sets MTU and MAC where they differ, and brings the link up.
func (t *Tunnels) linkAttrs(l netlink.Link, mtu int, mac net.HardwareAddr) error {
	a := l.Attrs()
	if mtu > 0 && a.MTU != mtu {
		if err := t.k.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("mtu %d: %w", mtu, err)
		}
	}
	if mac != nil && !bytes.Equal(a.HardwareAddr, mac) {
		if err := t.k.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("mac %s: %w", mac, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := t.k.LinkSetUp(l); err != nil {
			return fmt.Errorf("up: %w", err)
		}
	}
	return nil
}

// IPIPAddrLabel marks the address brindle puts on tunl0: the host may use
// that device for tunnels of its own, and their addresses are not brindle's
// to remove. (An IPv4 address label must start with the device's name.)
const IPIPAddrLabel = IPIPDevice + ":brindle"

// setAddr leaves want/32 (or nothing, if want is not valid) as the link's
// IPv4 address. With label empty the link is brindle's and every other
// address goes; with a label, only addresses carrying it are brindle's,
// and want is added with it. It reports how many addresses the link keeps
// that are not brindle's, and how many of brindle's it removed.
func (t *Tunnels) setAddr(l netlink.Link, want netip.Addr, label string) (foreign, removed int, err error) {
	have, err := t.k.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return 0, 0, fmt.Errorf("list addresses: %w", err)
	}
	found := false
	for i := range have {
		if label != "" && have[i].Label != label {
			foreign++
			continue
		}
		a, _ := netip.AddrFromSlice(have[i].IP)
		ones, _ := have[i].Mask.Size()
		if want.IsValid() && a.Unmap() == want && ones == 32 {
			found = true
			continue
		}
		if err := t.k.AddrDel(l, &have[i]); err != nil {
			return foreign, removed, fmt.Errorf("delete address %s: %w", have[i].IPNet, err)
		}
		removed++
	}
	if found || !want.IsValid() {
		return foreign, removed, nil
	}
	if err := t.k.AddrReplace(l, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(want, 32)), Label: label}); err != nil {
		return foreign, removed, fmt.Errorf("address %s: %w", want, err)
	}
	return foreign, removed, nil
}

func neighKey(n *netlink.Neigh) string {
	return n.IP.String() + "/" + n.HardwareAddr.String()
}

// setNeighs makes the permanent entries of one family on a link exactly
// want: it deletes the others (stale peers) and adds what is missing.
func (t *Tunnels) setNeighs(idx, family int, want []netlink.Neigh) error {
	have, err := t.k.NeighList(idx, family)
	if err != nil {
		return fmt.Errorf("list neighbours: %w", err)
	}
	wantBy := map[string]bool{}
	for i := range want {
		wantBy[neighKey(&want[i])] = true
	}
	haveBy := map[string]bool{}
	var errs []error
	for i := range have {
		h := &have[i]
		if h.LinkIndex != 0 && h.LinkIndex != idx {
			continue
		}
		k := neighKey(h)
		if wantBy[k] && h.State&netlink.NUD_PERMANENT != 0 {
			haveBy[k] = true
			continue
		}
		h.LinkIndex, h.Family = idx, family
		if family == unix.AF_BRIDGE {
			h.Flags |= netlink.NTF_SELF
		}
		if err := t.k.NeighDel(h); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", k, err))
			continue
		}
		t.log.Debug("stale tunnel neighbour removed", "family", family, "entry", k)
	}
	sort.Slice(want, func(i, j int) bool { return neighKey(&want[i]) < neighKey(&want[j]) })
	for i := range want {
		if haveBy[neighKey(&want[i])] {
			continue
		}
		if err := t.k.NeighSet(&want[i]); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s: %w", neighKey(&want[i]), err))
		}
	}
	return errors.Join(errs...)
}

func (t *Tunnels) setIPIP(s *IPIPSpec) error {
	l, err := t.k.LinkByName(IPIPDevice)
	if err != nil && !notFound(err) {
		return err
	}
	if s == nil {
		if l == nil {
			return nil
		}
		// The fallback device stays; take brindle's address off it, and
		// set it down only if nothing else uses it.
		foreign, removed, err := t.setAddr(l, netip.Addr{}, IPIPAddrLabel)
		if err != nil {
			return err
		}
		if foreign == 0 && (removed > 0 || t.ipipUp) && l.Attrs().Flags&net.FlagUp != 0 {
			t.ipipUp = false
			return t.k.LinkSetDown(l)
		}
		t.ipipUp = false
		return nil
	}
	if l == nil {
		// Creating any ipip link loads the module, whose fallback tunl0
		// (any local, any remote) is what brindle routes through.
		if err := t.k.LinkAdd(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: IPIPDevice, MTU: s.MTU}}); err != nil {
			return fmt.Errorf("create (does this kernel have the ipip module?): %w", err)
		}
		if l, err = t.k.LinkByName(IPIPDevice); err != nil {
			return err
		}
	}
	if err := t.linkAttrs(l, s.MTU, nil); err != nil {
		return err
	}
	t.ipipUp = true
	_, _, err = t.setAddr(l, s.Addr, IPIPAddrLabel)
	return err
}

var _ Links = (*netlink.Handle)(nil)
