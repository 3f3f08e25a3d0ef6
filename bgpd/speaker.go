// Package bgpd is brindled's routing: an embedded GoBGP speaker that
// announces the node's blocks and learns the others', the policy that
// decides which peers a node has and which prefixes it accepts, and the
// route sync that makes the kernel hold exactly the routes brindle wants.
package bgpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/brindle-net/brindle/conf"
)

// PeerSpec is one BGP session the node should have.
type PeerSpec struct {
	Address     netip.Addr
	ASN         uint32
	Port        int
	Password    string
	MultihopTTL int
	Passive     bool
	// RRClient makes the peer a route-reflector client of this node, with
	// ClusterID as the cluster.
	RRClient  bool
	ClusterID string
	// Name is the node or BGPPeer the session is for (for status and logs).
	Name string
	// Kind is "mesh", "rr" (to a reflector), "rr-client" (of this
	// reflector) or "bgppeer".
	Kind string
	// LocalAddress, when set, is the session's source address.
	LocalAddress netip.Addr
	// MaxPrefixes, when not 0, bounds what the peer may send per family;
	// one more closes the session, which is tried again after
	// RestartAfter seconds.
	MaxPrefixes  uint32
	RestartAfter int
}

// Path is a best path learned from a peer.
type Path struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Peer    netip.Addr
}

// GlobalSpec is the speaker's own identity.
type GlobalSpec struct {
	ASN        uint32
	RouterID   netip.Addr
	ListenPort int // -1: no listener
	// ListenAddresses restricts the listener; empty listens on all.
	ListenAddresses []string
	GR              bool
	RestartTime     int
}

// Speaker wraps an embedded GoBGP server with declarative setters: given
// the full desired set of peers, exports or import ranges, each makes the
// server match it, however often it is called.
type Speaker struct {
	s      *server.BgpServer
	log    *slog.Logger
	global GlobalSpec

	mu       sync.Mutex
	peers    map[netip.Addr]PeerSpec
	exported map[netip.Prefix][]byte // prefix -> path UUID
	ranges   map[string]ImportRange  // import defined-set entries
	rib      map[netip.Prefix]Path
	sorted   []Path              // rib in order, nil when it must be sorted again
	reenable map[netip.Addr]bool // peers closed for too many prefixes, waiting
	// noExport and external are what SetNoExport last installed.
	noExport []netip.Prefix
	external []netip.Addr

	changed chan struct{} // a best path changed; capacity 1
	events  chan struct{} // a peer's state changed; capacity 1
}

// NewSpeaker starts GoBGP and its BGP instance.
func NewSpeaker(ctx context.Context, g GlobalSpec, log *slog.Logger) (*Speaker, error) {
	s := server.NewBgpServer(server.LoggerOption(&gobgpLogger{log: log.With("component", "gobgp")}))
	go s.Serve() // must run before any other call, or the call blocks forever
	sp := &Speaker{s: s, log: log, global: g,
		peers: map[netip.Addr]PeerSpec{}, exported: map[netip.Prefix][]byte{}, ranges: map[string]ImportRange{},
		rib: map[netip.Prefix]Path{}, reenable: map[netip.Addr]bool{}, changed: make(chan struct{}, 1), events: make(chan struct{}, 1)}
	gl := &api.Global{
		Asn: g.ASN, RouterId: g.RouterID.String(), ListenPort: int32(g.ListenPort), ListenAddresses: g.ListenAddresses,
	}
	if g.GR {
		gl.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(g.RestartTime), NotificationEnabled: true}
	}
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: gl}); err != nil {
		s.Stop()
		return nil, fmt.Errorf("start BGP (AS %d, router ID %s, port %d): %w", g.ASN, g.RouterID, g.ListenPort, err)
	}
	if err := sp.setupImportPolicy(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	if err := sp.setupExportPolicy(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	err := s.WatchEvent(ctx, &api.WatchEventRequest{
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true}}},
		Peer:  &api.WatchEventRequest_Peer{},
	}, sp.onEvent)
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("watch BGP events: %w", err)
	}
	return sp, nil
}

// Global returns the speaker's own settings.
func (sp *Speaker) Global() GlobalSpec { return sp.global }

// WantedGlobal is the speaker a node should run under the cluster's BGP
// configuration: its AS (the node's own or the cluster's), the listen port
// and graceful restart, with routerID.
func WantedGlobal(self *conf.Node, cfg *conf.BGPConfiguration, routerID netip.Addr) GlobalSpec {
	return GlobalSpec{ASN: self.AS(cfg.Spec.ASNumber), RouterID: routerID, ListenPort: cfg.Spec.ListenPort,
		GR: cfg.GR(), RestartTime: cfg.Spec.RestartTimeSeconds}
}

// Same reports whether two speakers' settings are the same.
func (g GlobalSpec) Same(o GlobalSpec) bool {
	return g.ASN == o.ASN && g.RouterID == o.RouterID && g.ListenPort == o.ListenPort && g.GR == o.GR &&
		(!g.GR || g.RestartTime == o.RestartTime) && slices.Equal(g.ListenAddresses, o.ListenAddresses)
}

// Changed is signalled (coalesced) when a learned best path changes.
func (sp *Speaker) Changed() <-chan struct{} { return sp.changed }

// PeerEvents is signalled (coalesced) when a session changes state.
func (sp *Speaker) PeerEvents() <-chan struct{} { return sp.events }

// onEvent runs on GoBGP's goroutine: it only updates the RIB map and
// signals; the work happens on the controller's loop.
func (sp *Speaker) onEvent(r *api.WatchEventResponse) {
	if p := r.GetPeer(); p != nil {
		if st := p.GetPeer().GetState(); st != nil && st.AdminState == api.PeerState_PFX_CT {
			sp.overLimit(st.NeighborAddress)
		}
		signal(sp.events)
		return
	}
	t := r.GetTable()
	if t == nil {
		return
	}
	sp.mu.Lock()
	changed := false
	for _, p := range t.Paths {
		pfx, nh, err := parsePath(p)
		if err != nil {
			sp.log.Debug("ignoring path", "err", err)
			continue
		}
		local := p.NeighborIp == "<nil>" || p.NeighborIp == ""
		if p.IsWithdraw || local {
			// A withdrawal, or our own path winning: nothing to install.
			if old, ok := sp.rib[pfx]; ok && (p.IsWithdraw || local) {
				if !p.IsWithdraw || old.Peer.String() == p.NeighborIp || local {
					delete(sp.rib, pfx)
					changed = true
				}
			}
			continue
		}
		peer, _ := netip.ParseAddr(p.NeighborIp)
		np := Path{Prefix: pfx, NextHop: nh, Peer: peer}
		old, had := sp.rib[pfx]
		if old == np {
			continue
		}
		sp.rib[pfx] = np
		sp.sorted = nil
		// The same next hop from another peer (the second route reflector
		// winning the tie) changes no kernel route: only who sent it,
		// which a later withdrawal is matched against.
		if !had || old.NextHop != nh {
			changed = true
		}
	}
	if changed {
		sp.sorted = nil
	}
	sp.mu.Unlock()
	if changed {
		signal(sp.changed)
	}
}

// overLimit handles a session GoBGP closed because the peer sent more than
// its MaxPrefixes: GoBGP leaves it administratively down; it is enabled
// again after the peer's RestartAfter, so a peer that sends too much is
// kept out for that long each time and the memory it costs stays bounded.
func (sp *Speaker) overLimit(addr string) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return
	}
	sp.mu.Lock()
	spec, ok := sp.peers[a]
	pending := sp.reenable[a]
	if ok && !pending {
		sp.reenable[a] = true
	}
	sp.mu.Unlock()
	if !ok || pending {
		return
	}
	after := time.Duration(spec.RestartAfter) * time.Second
	sp.log.Warn("BGP peer sent more than its maxPrefixes; session closed", "peer", a, "name", spec.Name,
		"maxPrefixes", spec.MaxPrefixes, "retryAfter", after)
	time.AfterFunc(after, func() {
		sp.mu.Lock()
		delete(sp.reenable, a)
		cur, still := sp.peers[a]
		sp.mu.Unlock()
		if !still || cur != spec {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sp.s.EnablePeer(ctx, &api.EnablePeerRequest{Address: a.String()}); err != nil {
			sp.log.Warn("re-enable BGP peer after maxPrefixes", "peer", a, "err", err)
		}
	})
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// RIB returns the learned best paths, in order. The slice is shared with
// later calls until the table changes: callers must not modify it.
func (sp *Speaker) RIB() []Path {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.sorted != nil {
		return sp.sorted
	}
	out := make([]Path, 0, len(sp.rib))
	for _, p := range sp.rib {
		out = append(out, p)
	}
	// By address, not by text: the table may hold 100,000 paths.
	slices.SortFunc(out, func(a, b Path) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	sp.sorted = out
	return out
}

func parsePath(p *api.Path) (netip.Prefix, netip.Addr, error) {
	var n api.IPAddressPrefix
	if err := p.Nlri.UnmarshalTo(&n); err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("nlri: %w", err)
	}
	a, err := netip.ParseAddr(n.Prefix)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	pfx := netip.PrefixFrom(a, int(n.PrefixLen)).Masked()
	var nh netip.Addr
	for _, attr := range p.Pattrs {
		var nha api.NextHopAttribute
		var mp api.MpReachNLRIAttribute
		switch {
		case attr.MessageIs(&nha):
			if attr.UnmarshalTo(&nha) == nil {
				nh, _ = netip.ParseAddr(nha.NextHop)
			}
		case attr.MessageIs(&mp):
			if attr.UnmarshalTo(&mp) == nil && len(mp.NextHops) > 0 {
				nh, _ = netip.ParseAddr(mp.NextHops[0])
			}
		}
	}
	return pfx, nh, nil
}

// SetPeers makes the speaker's sessions exactly want. A peer whose
// settings changed is removed and added again.
func (sp *Speaker) SetPeers(ctx context.Context, want []PeerSpec) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	wantBy := map[netip.Addr]PeerSpec{}
	for _, p := range want {
		wantBy[p.Address] = p
	}
	var errs []error
	for addr, have := range sp.peers {
		if w, ok := wantBy[addr]; ok && w == have {
			continue
		}
		if err := sp.s.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("delete peer %s: %w", addr, err))
			continue
		}
		delete(sp.peers, addr)
		sp.log.Info("BGP peer removed", "peer", addr, "name", have.Name)
	}
	for addr, w := range wantBy {
		if _, ok := sp.peers[addr]; ok {
			continue
		}
		if err := sp.s.AddPeer(ctx, &api.AddPeerRequest{Peer: sp.apiPeer(w)}); err != nil {
			errs = append(errs, fmt.Errorf("add peer %s (%s, AS %d): %w", addr, w.Name, w.ASN, err))
			continue
		}
		sp.peers[addr] = w
		sp.log.Info("BGP peer added", "peer", addr, "name", w.Name, "asn", w.ASN, "kind", w.Kind)
	}
	return errors.Join(errs...)
}

func (sp *Speaker) apiPeer(w PeerSpec) *api.Peer {
	families := []*api.Family{{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, {Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}}
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: w.Address.String(), PeerAsn: w.ASN, AuthPassword: w.Password, Description: w.Name},
		Transport: &api.Transport{RemotePort: uint32(w.Port), PassiveMode: w.Passive},
		Timers: &api.Timers{Config: &api.TimersConfig{
			// Quick to (re)connect: a peer that joins or restarts is
			// peered in about a second rather than GoBGP's default 120 s.
			ConnectRetry: 1, HoldTime: 9, KeepaliveInterval: 3, IdleHoldTimeAfterReset: 1,
		}},
	}
	if w.LocalAddress.IsValid() {
		p.Transport.LocalAddress = w.LocalAddress.String()
	}
	if w.MultihopTTL > 1 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(w.MultihopTTL)}
	}
	if w.RRClient {
		p.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: w.ClusterID}
	}
	if sp.global.GR {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(sp.global.RestartTime), NotificationEnabled: true}
	}
	for _, f := range families {
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if w.MaxPrefixes > 0 {
			as.PrefixLimits = &api.PrefixLimit{Family: f, MaxPrefixes: w.MaxPrefixes, ShutdownThresholdPct: 80}
		}
		if sp.global.GR {
			as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = append(p.AfiSafis, as)
	}
	return p
}

// SetExports makes the locally originated paths exactly prefixes, with the
// node's addresses as next hops.
func (sp *Speaker) SetExports(ctx context.Context, prefixes []netip.Prefix, nh4, nh6 netip.Addr) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	want := map[netip.Prefix]bool{}
	for _, p := range prefixes {
		want[p.Masked()] = true
	}
	var errs []error
	for p, uuid := range sp.exported {
		if want[p] {
			continue
		}
		// Always by UUID: a DeletePath with neither path nor UUID
		// withdraws every local path.
		if err := sp.s.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: uuid}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(sp.exported, p)
		sp.log.Info("withdrew", "prefix", p)
	}
	for p := range want {
		if _, ok := sp.exported[p]; ok {
			continue
		}
		nh := nh4
		if p.Addr().Is6() {
			nh = nh6
		}
		if !nh.IsValid() {
			errs = append(errs, fmt.Errorf("announce %s: the node has no %s address for the next hop", p, family(p)))
			continue
		}
		path, err := apiPath(p, nh)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res, err := sp.s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", p, err))
			continue
		}
		sp.exported[p] = res.Uuid
		sp.log.Info("announced", "prefix", p, "nexthop", nh)
	}
	return errors.Join(errs...)
}

// Exported returns the prefixes the speaker announces.
func (sp *Speaker) Exported() []netip.Prefix {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make([]netip.Prefix, 0, len(sp.exported))
	for p := range sp.exported {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func apiPath(p netip.Prefix, nh netip.Addr) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	origin, _ := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	var nhAttr *anypb.Any
	if p.Addr().Is4() {
		nhAttr, _ = anypb.New(&api.NextHopAttribute{NextHop: nh.String()})
	} else {
		fam = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
		nhAttr, _ = anypb.New(&api.MpReachNLRIAttribute{Family: fam, NextHops: []string{nh.String()}, Nlris: []*anypb.Any{nlri}})
	}
	return &api.Path{Family: fam, Nlri: nlri, Pattrs: []*anypb.Any{origin, nhAttr}}, nil
}

// Stop ends the speaker. With graceful restart it leaves the sessions to
// die with the process, without a NOTIFICATION: GoBGP would send a Cease
// that RFC 8538 turns into a Hard Reset, and the peers would drop this
// node's routes. A closed TCP session instead makes them keep the routes,
// marked stale, for the restart time. Without graceful restart, or when
// hard is set (the node is leaving), every session is closed and the peers
// withdraw at once.
func (sp *Speaker) Stop(hard bool) {
	if sp.global.GR && !hard {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = sp.s.StopBgp(ctx, &api.StopBgpRequest{})
}

// gobgpLogger sends GoBGP's logs to slog, at one level lower than GoBGP
// gives them: GoBGP is chatty at info.
type gobgpLogger struct {
	log   *slog.Logger
	level gobgplog.LogLevel
}

func (l *gobgpLogger) emit(lv slog.Level, msg string, f gobgplog.Fields) {
	if !l.log.Enabled(context.Background(), lv) {
		return
	}
	args := make([]any, 0, 2*len(f))
	for k, v := range f {
		args = append(args, k, v)
	}
	l.log.Log(context.Background(), lv, msg, args...)
}

func (l *gobgpLogger) Panic(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *gobgpLogger) Fatal(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *gobgpLogger) Error(msg string, f gobgplog.Fields) { l.emit(slog.LevelWarn, msg, f) }
func (l *gobgpLogger) Warn(msg string, f gobgplog.Fields)  { l.emit(slog.LevelInfo, msg, f) }
func (l *gobgpLogger) Info(msg string, f gobgplog.Fields)  { l.emit(slog.LevelDebug, msg, f) }
func (l *gobgpLogger) Debug(msg string, f gobgplog.Fields) {}
func (l *gobgpLogger) SetLevel(level gobgplog.LogLevel)    { l.level = level }
func (l *gobgpLogger) GetLevel() gobgplog.LogLevel         { return gobgplog.InfoLevel }
