package bgpd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks every kernel route brindled owns (rtnetlink protocol
// number; `ip route show proto 98`). A sync never touches a route without it.
const RouteProtocol netlink.RouteProtocol = 98

// RouteType is what a route does with a packet.
type RouteType int

// Route types brindle installs.
const (
	Unicast RouteType = iota
	Blackhole
)

// Route is one kernel route brindle wants, in the main table.
type Route struct {
	Dst  netip.Prefix
	Type RouteType
	Gw   netip.Addr
	// Dev is the output device by name; empty lets the kernel find it from Gw.
	Dev    string
	OnLink bool
}

func (r Route) String() string {
	s := r.Dst.String()
	if r.Type == Blackhole {
		return "blackhole " + s
	}
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.OnLink {
		s += " onlink"
	}
	return s
}

// RouteTable is the kernel as route sync sees it; Netlink is the real one,
// and tests substitute a recorder.
type RouteTable interface {
	// List returns the routes in the main table that carry RouteProtocol.
	List() ([]netlink.Route, error)
	// Add creates a route and fails with EEXIST when the kernel already
	// has one for the destination (of any protocol): it never replaces.
	Add(*netlink.Route) error
	// Replace changes one of brindle's own routes.
	Replace(*netlink.Route) error
	Delete(*netlink.Route) error
	LinkIndex(name string) (int, error)
}

// FIB keeps the kernel's brindle routes equal to a desired set. Set is
// declarative and idempotent: given the full set it adds, replaces and
// deletes what differs, however often it is called.
type FIB struct {
	t   RouteTable
	log *slog.Logger

	mu sync.Mutex
	// holdDeletes keeps routes that are no longer wanted, while a restarted
	// daemon has not yet relearned everything (graceful restart).
	holdDeletes bool
	last        SyncResult
	// conflicts are destinations a route of another owner holds; each is
	// logged once, when it starts.
	conflicts map[netip.Prefix]bool
}

// SyncResult describes one Set.
type SyncResult struct {
	At        time.Time     `json:"at"`
	Took      time.Duration `json:"took"`
	Installed int           `json:"installed"`
	Added     int           `json:"added"`
	Replaced  int           `json:"replaced"`
	Deleted   int           `json:"deleted"`
	Held      int           `json:"held"`
	// Conflicts counts wanted routes not installed because a route brindle
	// did not make (a local pod's /32, an operator's route) holds the
	// destination; that route is left alone.
	Conflicts int    `json:"conflicts"`
	Err       string `json:"error,omitempty"`
}

// NewFIB syncs into t. With holdDeletes, stale routes stay until
// ReleaseDeletes is called.
func NewFIB(t RouteTable, log *slog.Logger, holdDeletes bool) *FIB {
	return &FIB{t: t, log: log, holdDeletes: holdDeletes, conflicts: map[netip.Prefix]bool{}}
}

// HoldDeletes keeps unwanted routes again until ReleaseDeletes (a speaker
// rebuilt in place relearns everything).
func (f *FIB) HoldDeletes() {
	f.mu.Lock()
	f.holdDeletes = true
	f.mu.Unlock()
}

// ReleaseDeletes lets Set delete unwanted routes from now on.
func (f *FIB) ReleaseDeletes() {
	f.mu.Lock()
	f.holdDeletes = false
	f.mu.Unlock()
}

// Last returns the result of the latest Set.
func (f *FIB) Last() SyncResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Set makes the kernel hold exactly want (of the routes with brindle's
// protocol). Routes that cannot be installed are reported together; the
// others are still applied.
func (f *FIB) Set(want []Route) (SyncResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	start := time.Now()
	res := SyncResult{At: start}
	wantBy := make(map[netip.Prefix]*netlink.Route, len(want))
	var errs []error
	for _, r := range want {
		nr, err := f.render(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r, err))
			continue
		}
		wantBy[r.Dst.Masked()] = nr
	}
	have, err := f.t.List()
	if err != nil {
		res.Err = err.Error()
		f.last = res
		return res, fmt.Errorf("list routes: %w", err)
	}
	done := make(map[netip.Prefix]bool, len(have))
	ours := make(map[netip.Prefix]bool, len(have))
	for i := range have {
		h := &have[i]
		dst := prefixOf(h.Dst, h.Family)
		ours[dst] = true
		w, ok := wantBy[dst]
		switch {
		case !ok && f.holdDeletes:
			res.Held++
		case !ok:
			if err := f.t.Delete(h); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete %s: %w", dst, err))
				continue
			}
			res.Deleted++
			f.log.Debug("route deleted", "dst", dst)
		case sameRoute(h, w):
			done[dst] = true
		}
	}
	conflicts := map[netip.Prefix]bool{}
	for dst, w := range wantBy {
		if done[dst] {
			continue
		}
		// Only a route of brindle's own is ever replaced. Anything else is
		// created exclusively: the kernel matches routes by destination and
		// metric, not protocol, so a replace would take over a local pod's
		// route (and a later sync would delete it).
		var err error
		if ours[dst] {
			err = f.t.Replace(w)
		} else {
			err = f.t.Add(w)
		}
		if errors.Is(err, unix.EEXIST) {
			conflicts[dst] = true
			if !f.conflicts[dst] {
				f.log.Warn("route not installed: another route holds the destination and is left alone", "route", describe(w))
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("install %s: %w", describe(w), err))
			continue
		}
		res.Added++
		done[dst] = true
		f.log.Debug("route installed", "route", describe(w))
	}
	for dst := range f.conflicts {
		if !conflicts[dst] {
			f.log.Info("route conflict over", "dst", dst)
		}
	}
	f.conflicts = conflicts
	res.Conflicts = len(conflicts)
	res.Installed = len(done)
	res.Took = time.Since(start)
	err = errors.Join(errs...)
	if err != nil {
		res.Err = err.Error()
	}
	f.last = res
	return res, err
}

func (f *FIB) render(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{
		Dst:      ipNet(r.Dst.Masked()),
		Protocol: RouteProtocol,
		Table:    unix.RT_TABLE_MAIN,
		Family:   netlink.FAMILY_V4,
	}
	if r.Dst.Addr().Is6() {
		nr.Family = netlink.FAMILY_V6
	}
	if r.Type == Blackhole {
		nr.Type = unix.RTN_BLACKHOLE
		return nr, nil
	}
	nr.Type = unix.RTN_UNICAST
	if r.Gw.IsValid() {
		nr.Gw = net.IP(r.Gw.AsSlice())
	}
	if r.Dev != "" {
		idx, err := f.t.LinkIndex(r.Dev)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", r.Dev, err)
		}
		nr.LinkIndex = idx
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr, nil
}

// sameRoute compares what brindle sets; the kernel fills in the rest.
func sameRoute(h, w *netlink.Route) bool {
	if h.Type != w.Type || !h.Gw.Equal(w.Gw) {
		return false
	}
	if w.LinkIndex != 0 && h.LinkIndex != w.LinkIndex {
		return false
	}
	return h.Flags&int(netlink.FLAG_ONLINK) == w.Flags&int(netlink.FLAG_ONLINK)
}

func describe(r *netlink.Route) string {
	if r.Type == unix.RTN_BLACKHOLE {
		return "blackhole " + r.Dst.String()
	}
	s := r.Dst.String()
	if r.Gw != nil {
		s += " via " + r.Gw.String()
	}
	if r.LinkIndex != 0 {
		s += fmt.Sprintf(" dev #%d", r.LinkIndex)
	}
	if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
		s += " onlink"
	}
	return s
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet, family int) netip.Prefix {
	if n == nil {
		if family == netlink.FAMILY_V6 {
			return netip.MustParsePrefix("::/0")
		}
		return netip.MustParsePrefix("0.0.0.0/0")
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked()
}

// Netlink is the real RouteTable, on a netlink handle (the daemon's own
// namespace, or another through netlink.NewHandleAt).
type Netlink struct{ H *netlink.Handle }

// List implements RouteTable.
func (n Netlink) List() ([]netlink.Route, error) {
	var out []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var rs []netlink.Route
		var err error
		for range 5 {
			rs, err = n.H.RouteListFiltered(fam, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
				netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return nil, err
		}
		for i := range rs {
			rs[i].Family = fam
		}
		out = append(out, rs...)
	}
	return out, nil
}

// Add implements RouteTable (NLM_F_CREATE|NLM_F_EXCL).
func (n Netlink) Add(r *netlink.Route) error { return n.H.RouteAdd(r) }

// Replace implements RouteTable.
func (n Netlink) Replace(r *netlink.Route) error { return n.H.RouteReplace(r) }

// Delete implements RouteTable.
func (n Netlink) Delete(r *netlink.Route) error { return n.H.RouteDel(r) }

// LinkIndex implements RouteTable.
func (n Netlink) LinkIndex(name string) (int, error) {
	l, err := n.H.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// Sorted returns routes ordered by destination, for stable output.
func Sorted(rs []Route) []Route {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Dst.String() < rs[j].Dst.String() })
	return rs
}
