package bgpd

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
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

// BatchTable is a RouteTable that makes many changes at once; results[i]
// is the outcome of ops[i] (EEXIST for an add whose destination is taken).
type BatchTable interface {
	Apply(ops []RouteOp) (results []error, err error)
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
	// view is brindle's routes in the kernel as the last Set left them;
	// nil when the kernel must be listed.
	view map[netip.Prefix]routeKey
	// lastWant is the last Set's wanted routes; clean says the kernel took
	// all of them (no error, no conflict, nothing held).
	lastWant []Route
	clean    bool
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
// others are still applied. What is in the kernel is known from the last
// Set (its view); the kernel is listed again only when the view is not
// trusted: at the first Set, after a failure, and after Invalidate (a
// periodic resync, a route removed behind brindled's back).
func (f *FIB) Set(want []Route) (SyncResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	start := time.Now()
	res := SyncResult{At: start}
	if f.view != nil && f.clean && !f.holdDeletes && slices.Equal(want, f.lastWant) {
		// The same set as last time, which the kernel took whole: nothing
		// to compare (a change behind brindled's back invalidates the view).
		res.Installed, res.Took = f.last.Installed, time.Since(start)
		f.last = res
		return res, nil
	}
	var errs []error
	links := map[string]int{} // device indexes, looked up once per Set
	type wanted struct {
		key routeKey
		i   int // in want
	}
	wantBy := make(map[netip.Prefix]wanted, len(want))
	for i, r := range want {
		k, err := f.keyOf(r, links)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r, err))
			continue
		}
		wantBy[r.Dst.Masked()] = wanted{k, i}
	}
	if f.view == nil {
		view, err := f.list()
		if err != nil {
			res.Err = err.Error()
			f.last = res
			return res, fmt.Errorf("list routes: %w", err)
		}
		f.view = view
	}
	// The changes, in the order they are made: deletes, then replaces of
	// brindle's own routes, then exclusive adds. Only a route of brindle's
	// own is ever replaced; anything else is created exclusively: the
	// kernel matches routes by destination and metric, not protocol, so a
	// replace would take over a local pod's route (and a later sync would
	// delete it). Only the routes that change are rendered.
	var ops []RouteOp
	var dsts []netip.Prefix
	installed := 0
	for dst, h := range f.view {
		if _, ok := wantBy[dst]; ok {
			continue
		}
		if f.holdDeletes {
			res.Held++
			continue
		}
		ops, dsts = append(ops, RouteOp{Route: h.route(dst), Kind: RouteDelete}), append(dsts, dst)
	}
	for dst, w := range wantBy {
		h, ours := f.view[dst]
		kind := RouteAdd
		switch {
		case ours && h.same(w.key):
			installed++
			continue
		case ours:
			kind = RouteReplace
		}
		ops, dsts = append(ops, RouteOp{Route: f.render(want[w.i], w.key), Kind: kind}), append(dsts, dst)
	}
	results, err := f.apply(ops)
	if err != nil {
		errs = append(errs, err)
	}
	conflicts := map[netip.Prefix]bool{}
	for i, op := range ops {
		dst, err := dsts[i], results[i]
		switch {
		case op.Kind == RouteDelete && (err == nil || errors.Is(err, unix.ESRCH)):
			delete(f.view, dst)
			res.Deleted++
			f.log.Debug("route deleted", "dst", dst)
		case op.Kind == RouteDelete:
			errs = append(errs, fmt.Errorf("delete %s: %w", dst, err))
		case op.Kind == RouteAdd && errors.Is(err, unix.EEXIST):
			conflicts[dst] = true
			if !f.conflicts[dst] {
				f.log.Warn("route not installed: another route holds the destination and is left alone", "route", describe(op.Route))
			}
		case err != nil:
			errs = append(errs, fmt.Errorf("install %s: %w", describe(op.Route), err))
			if op.Kind == RouteReplace {
				f.view = nil // what the kernel holds for dst is not known now
			}
		default:
			if f.view != nil {
				f.view[dst] = wantBy[dst].key
			}
			res.Added++
			installed++
			f.log.Debug("route installed", "route", describe(op.Route))
		}
	}
	for dst := range f.conflicts {
		if !conflicts[dst] {
			f.log.Info("route conflict over", "dst", dst)
		}
	}
	f.conflicts = conflicts
	res.Conflicts = len(conflicts)
	res.Installed = installed
	res.Took = time.Since(start)
	err = errors.Join(errs...)
	if err != nil {
		res.Err = err.Error()
		f.view = nil // list again next time
	}
	f.clean = err == nil && res.Conflicts == 0 && res.Held == 0
	f.lastWant = append(f.lastWant[:0], want...)
	f.last = res
	return res, err
}

// routeKey is what route sync compares of a route; the kernel fills in the
// rest. A wanted route without a device (link 0) matches any device.
type routeKey struct {
	typ    int
	gw     netip.Addr
	link   int
	onlink bool
}

func (h routeKey) same(w routeKey) bool {
	return h.typ == w.typ && h.gw == w.gw && (w.link == 0 || h.link == w.link) && h.onlink == w.onlink
}

// route is a kernel route with this key at dst, for deleting it.
func (h routeKey) route(dst netip.Prefix) *netlink.Route {
	r := &netlink.Route{Dst: ipNet(dst), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, Family: netlink.FAMILY_V4,
		Type: h.typ, LinkIndex: h.link}
	if dst.Addr().Is6() {
		r.Family = netlink.FAMILY_V6
	}
	if h.gw.IsValid() {
		r.Gw = net.IP(h.gw.AsSlice())
	}
	if h.onlink {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	return r
}

func kernelKey(r *netlink.Route) routeKey {
	k := routeKey{typ: r.Type, link: r.LinkIndex, onlink: r.Flags&int(netlink.FLAG_ONLINK) != 0}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		k.gw = gw.Unmap()
	}
	return k
}

// keyOf is the key of a wanted route; links caches device indexes.
func (f *FIB) keyOf(r Route, links map[string]int) (routeKey, error) {
	if r.Type == Blackhole {
		return routeKey{typ: unix.RTN_BLACKHOLE}, nil
	}
	k := routeKey{typ: unix.RTN_UNICAST, gw: r.Gw.Unmap(), onlink: r.OnLink}
	if r.Dev != "" {
		idx, ok := links[r.Dev]
		if !ok {
			var err error
			if idx, err = f.t.LinkIndex(r.Dev); err != nil {
				return k, fmt.Errorf("device %s: %w", r.Dev, err)
			}
			links[r.Dev] = idx
		}
		k.link = idx
	}
	return k, nil
}

// list reads brindle's routes from the kernel, as keys.
func (f *FIB) list() (map[netip.Prefix]routeKey, error) {
	if kl, ok := f.t.(keyLister); ok {
		if view, ok, err := kl.listKeys(); ok {
			return view, err
		}
	}
	have, err := f.t.List()
	if err != nil {
		return nil, err
	}
	view := make(map[netip.Prefix]routeKey, len(have))
	for i := range have {
		view[prefixOf(have[i].Dst, have[i].Family)] = kernelKey(&have[i])
	}
	return view, nil
}

// keyLister is a RouteTable that can list routes straight into keys;
// ok is false when this one cannot.
type keyLister interface {
	listKeys() (view map[netip.Prefix]routeKey, ok bool, err error)
}

// listKeys implements keyLister through Sock, when there is one.
func (n Netlink) listKeys() (map[netip.Prefix]routeKey, bool, error) {
	if n.Sock == nil {
		return nil, false, nil
	}
	v4 := map[netip.Prefix]routeKey{}
	if err := n.Sock.dumpKeys(unix.AF_INET, v4); err != nil {
		return nil, true, err
	}
	v6 := map[netip.Prefix]routeKey{}
	if err := n.Sock.dumpKeys(unix.AF_INET6, v6); err != nil {
		return nil, true, err
	}
	maps.Copy(v4, v6)
	return v4, true, nil
}

// Invalidate makes the next Set list the kernel instead of trusting what
// the last one left: for a periodic resync, or when a route may have been
// changed by someone else.
func (f *FIB) Invalidate() {
	f.mu.Lock()
	f.view = nil
	f.mu.Unlock()
}

// apply makes the changes: all at once when the table can (BatchTable),
// else one by one. results[i] is the outcome of ops[i].
func (f *FIB) apply(ops []RouteOp) ([]error, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	if bt, ok := f.t.(BatchTable); ok {
		return bt.Apply(ops)
	}
	results := make([]error, len(ops))
	for i, op := range ops {
		switch op.Kind {
		case RouteDelete:
			results[i] = f.t.Delete(op.Route)
		case RouteReplace:
			results[i] = f.t.Replace(op.Route)
		default:
			results[i] = f.t.Add(op.Route)
		}
	}
	return results, nil
}

// render is the kernel route for r, whose key is k.
func (f *FIB) render(r Route, k routeKey) *netlink.Route {
	nr := k.route(r.Dst.Masked())
	nr.Scope = netlink.SCOPE_UNIVERSE
	return nr
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
// namespace, or another through netlink.NewHandleAt). With Sock (a
// RouteSocket of the same namespace) it lists and changes routes in bulk.
type Netlink struct {
	H    *netlink.Handle
	Sock *RouteSocket
}

// Apply implements BatchTable, through Sock when there is one.
func (n Netlink) Apply(ops []RouteOp) ([]error, error) {
	if n.Sock != nil {
		return n.Sock.Apply(ops)
	}
	results := make([]error, len(ops))
	for i, op := range ops {
		switch op.Kind {
		case RouteDelete:
			results[i] = n.Delete(op.Route)
		case RouteReplace:
			results[i] = n.Replace(op.Route)
		default:
			results[i] = n.Add(op.Route)
		}
	}
	return results, nil
}

// List implements RouteTable.
func (n Netlink) List() ([]netlink.Route, error) {
	if n.Sock != nil {
		v4, err := n.Sock.Dump(unix.AF_INET)
		if err != nil {
			return nil, err
		}
		v6, err := n.Sock.Dump(unix.AF_INET6)
		return append(v4, v6...), err
	}
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
