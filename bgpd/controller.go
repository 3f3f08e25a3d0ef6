package bgpd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

// ControllerConfig wires a Controller.
type ControllerConfig struct {
	NodeName string
	Speaker  *Speaker
	FIB      *FIB
	Cache    *Cache
	// Render builds the route renderer for a node under the pools in
	// force; default Encapsulating.
	Render func(self *conf.Node, pools []conf.IPPool) Renderer
	// Tunnels keeps the tunnel devices; TunnelAddrs gives the node its
	// tunnel address; NAT keeps NAT outgoing. Each may be nil (left alone).
	Tunnels     *Tunnels
	TunnelAddrs *TunnelAddrs
	NAT         *NAT
	// HostMTU is the MTU of the node's underlay interface; MTUFile, when
	// set, receives the MTU pods get (HostMTU less the overhead in force).
	HostMTU int
	MTUFile string
	Log     *slog.Logger
	Metrics *Metrics
	// Resync re-applies everything this often, so drift is mended even
	// without an event.
	Resync time.Duration
	// HoldMax bounds how long a restarted daemon keeps routes it has not
	// relearned yet (graceful restart); 0 deletes stale routes at once.
	HoldMax time.Duration
	// RouteEvents, when set, is signalled when a brindle route was removed
	// from the kernel by someone else.
	RouteEvents <-chan struct{}
	// Records decides which cluster records are in force (the last valid
	// value of a key whose value is not); shared by the controllers an
	// Agent runs one after the other. Default: a new one.
	Records *Records
	// RouterID, when set, makes Run return ErrSpeakerChanged as soon as
	// the speaker's own settings in force (AS number, listen port,
	// graceful restart) differ from the speaker's: the Agent then builds a
	// new speaker, instead of the peers being set up with an AS the
	// speaker does not have.
	RouterID netip.Addr
	// ReadyChecks are more reasons not to be ready (the filter table's),
	// each returning none when all is well.
	ReadyChecks []func() []string
}

// ErrSpeakerChanged ends Controller.Run when the speaker must be rebuilt.
var ErrSpeakerChanged = errors.New("BGP speaker settings changed")

// Controller turns the cluster state in etcd and the paths BGP learned into
// the speaker's peers, exports and import policy, and the kernel's routes.
type Controller struct {
	cfg ControllerConfig

	mu       sync.Mutex
	self     conf.Node
	desired  []PeerSpec
	routes   []Route
	exports  []netip.Prefix
	blocks   []netip.Prefix
	errs     []string
	started  time.Time
	allUpAt  time.Time
	released bool
	podMTU   int
	rebuild  *GlobalSpec // the speaker settings that must replace the running ones
	// lastState is the cluster state the last config reconcile parsed.
	lastState *clusterState
	// tunnels is the tunnel spec last applied whole (tunnelsOK); only
	// the controller's loop touches them.
	tunnels   TunnelSpec
	tunnelsOK bool
	// tunnelRecheck fires a second after the tunnel spec changed: the
	// kernel may have made neighbour entries while it changed (a packet
	// still on its way to a removed peer's tunnel address leaves a FAILED
	// one), and the next check removes them.
	tunnelRecheck <-chan time.Time
}

// NewController builds a controller; Run drives it.
func NewController(cfg ControllerConfig) *Controller {
	if cfg.Render == nil {
		cfg.Render = Encapsulating
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Records == nil {
		cfg.Records = NewRecords()
	}
	return &Controller{cfg: cfg, started: time.Now()}
}

// clusterState is what the controller reads from the cache.
type clusterState struct {
	self   conf.Node
	nodes  []conf.Node
	bgp    conf.BGPConfiguration
	peers  []conf.BGPPeer
	pools  []conf.IPPool
	blocks []netip.Prefix
	pods   []netip.Addr
	// idx indexes nodes; read builds it, so that a learned path does not
	// cost parsing every node's addresses again.
	idx *NodeIndex
}

func (c *Controller) read() (*clusterState, error) {
	ca, log := c.cfg.Cache, c.cfg.Log
	recs := c.cfg.Records
	st := &clusterState{bgp: conf.DefaultBGPConfiguration()}
	found := false
	nodes := ca.Snapshot(ipam.Prefix + "nodes/")
	recs.Forget(ipam.Prefix+"nodes/", nodes)
	for k, v := range nodes {
		name := strings.TrimPrefix(k, ipam.Prefix+"nodes/")
		n, ok := pickRecord(recs, log, k, v, func(b []byte) (conf.Node, error) { return validNode(b, name) })
		if !ok {
			continue
		}
		st.nodes = append(st.nodes, n)
		if n.Name == c.cfg.NodeName {
			st.self, found = n, true
		}
	}
	if !found {
		return nil, fmt.Errorf("node %s is not registered in etcd", c.cfg.NodeName)
	}
	if cfg, ok := BGPConfigInForce(ca, recs, log); ok {
		st.bgp = cfg
	}
	peers := ca.Snapshot(ipam.Prefix + "bgp/peers/")
	recs.Forget(ipam.Prefix+"bgp/peers/", peers)
	for k, v := range peers {
		p, ok := pickRecord(recs, log, k, v, validPeer)
		if !ok {
			continue
		}
		st.peers = append(st.peers, p)
	}
	pools := ca.Snapshot(ipam.Prefix + "ippools/")
	recs.Forget(ipam.Prefix+"ippools/", pools)
	for k, v := range pools {
		p, ok := pickRecord(recs, log, k, v, validPool)
		if !ok {
			continue
		}
		st.pools = append(st.pools, p)
	}
	sort.Slice(st.pools, func(i, j int) bool { return st.pools[i].Metadata.Name < st.pools[j].Metadata.Name })
	for i := range st.pools {
		for j := i + 1; j < len(st.pools); j++ {
			a, b := &st.pools[i], &st.pools[j]
			if a.Prefix().Overlaps(b.Prefix()) {
				// Routed as the union (their pods keep their routes);
				// IPAM allocates only from the one created first.
				recs.Warn(log, ipam.Prefix+"ippools/"+b.Metadata.Name, fmt.Sprintf(
					"pools %s (%s) and %s (%s) overlap: IPAM allocates only from the one created first; delete the other (ippools/%s, ippools/%s)",
					a.Metadata.Name, a.Spec.CIDR, b.Metadata.Name, b.Spec.CIDR, a.Metadata.Name, b.Metadata.Name))
			}
		}
	}
	affPrefix := ipam.Prefix + "ipam/affinity/" + c.cfg.NodeName + "/"
	for k, v := range ca.Snapshot(affPrefix) {
		cidr, err := parseCIDRKey(strings.TrimPrefix(k, affPrefix))
		if err != nil {
			continue
		}
		var af ipam.Affinity
		if json.Unmarshal(v, &af) != nil {
			continue
		}
		if af.State == ipam.AffinityConfirmed || af.State == ipam.AffinityPendingDeletion {
			st.blocks = append(st.blocks, cidr)
		}
	}
	// In a stable order, so that the same state renders the same routes
	// (route sync then has nothing to compare).
	slices.SortFunc(st.blocks, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	st.idx = IndexNodes(&st.self, st.nodes)
	for _, v := range ca.Snapshot(ipam.Prefix + "endpoints/" + c.cfg.NodeName + "/") {
		var ep ipam.Endpoint
		if json.Unmarshal(v, &ep) != nil {
			continue
		}
		for _, s := range ep.Addresses {
			if p, err := netip.ParsePrefix(s); err == nil {
				st.pods = append(st.pods, p.Addr())
			} else if a, err := netip.ParseAddr(s); err == nil {
				st.pods = append(st.pods, a)
			}
		}
	}
	return st, nil
}

// state is the cluster state as the cache holds it: read and parsed again
// after the cache changed (config), else the last one parsed, so that a
// path learned by BGP does not cost parsing every node record (100 nodes,
// 100 routes arriving: 10,000 records).
func (c *Controller) state(config bool) (*clusterState, error) {
	c.mu.Lock()
	last := c.lastState
	c.mu.Unlock()
	if !config && last != nil {
		return last, nil
	}
	st, err := c.read()
	c.mu.Lock()
	c.lastState = st // nil after an error: read again next time
	c.mu.Unlock()
	return st, err
}

// validNode decodes and validates a node record stored under name.
func validNode(b []byte, name string) (conf.Node, error) {
	n, err := conf.UnmarshalNode(b)
	if err == nil {
		err = n.Validate()
	}
	if err == nil && n.Name != name {
		err = fmt.Errorf("name %q: not the name in the key", n.Name)
	}
	return n, err
}

func validPeer(b []byte) (conf.BGPPeer, error) {
	p, err := conf.UnmarshalBGPPeer(b)
	if err == nil {
		err = p.Validate()
	}
	return p, err
}

func validPool(b []byte) (conf.IPPool, error) {
	p, err := conf.UnmarshalPool(b)
	if err == nil {
		err = p.Validate()
	}
	return p, err
}

// BGPConfigInForce is the cluster's BGP configuration: bgp/config when
// valid, else its last valid value, else (ok false) none.
func BGPConfigInForce(ca *Cache, recs *Records, log *slog.Logger) (conf.BGPConfiguration, bool) {
	key := ipam.Prefix + "bgp/config"
	v, ok := ca.Snapshot(key)[key]
	if !ok {
		recs.Forget(key, nil)
		return conf.BGPConfiguration{}, false
	}
	return pickRecord(recs, log, key, v, validBGPConfig)
}

func validBGPConfig(b []byte) (conf.BGPConfiguration, error) {
	c, err := conf.UnmarshalBGPConfiguration(b)
	if err == nil {
		err = c.Validate()
	}
	return c, err
}

func parseCIDRKey(s string) (netip.Prefix, error) {
	i := strings.LastIndex(s, "-")
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("bad block key %q", s)
	}
	return netip.ParsePrefix(s[:i] + "/" + s[i+1:])
}

// Run reconciles on every change until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	ticker := time.NewTicker(c.cfg.Resync)
	defer ticker.Stop()
	hold := time.NewTicker(500 * time.Millisecond)
	defer hold.Stop()
	holdC := hold.C // nil once the hold is released: an idle node then wakes only for its resync
	for !c.cfg.Cache.Synced() {
		select {
		case <-ctx.Done():
			return nil
		case <-c.cfg.Cache.Changed():
		case <-time.After(100 * time.Millisecond):
		}
	}
	c.reconcile(ctx, true)
	for {
		if c.rebuildWanted() {
			return ErrSpeakerChanged
		}
		config := false
		select {
		case <-ctx.Done():
			return nil
		case <-c.cfg.Cache.Changed():
			config = true
		case <-c.cfg.Speaker.Changed():
		case <-c.cfg.Speaker.PeerEvents():
			c.peerEvent(ctx)
			continue
		case <-c.cfg.RouteEvents:
			c.cfg.Log.Info("a brindle route was removed behind brindled's back; resyncing")
			c.cfg.FIB.Invalidate()
			c.tunnelsOK = false // a tunnel device may have gone with it
		case <-c.tunnelRecheck:
			c.tunnelRecheck = nil
			c.tunnelsOK = false
		case <-ticker.C:
			config = true
			c.cfg.FIB.Invalidate()
		case <-holdC:
			if c.holdReleased() {
				hold.Stop()
				holdC = nil
				continue
			}
			if !c.releaseHold(c.allEstablished(ctx)) {
				continue
			}
		}
		c.reconcile(ctx, config)
	}
}

// reconcile applies the desired state: with config, the peers, exports and
// import policy too; always the kernel routes.
func (c *Controller) reconcile(ctx context.Context, config bool) {
	st, err := c.state(config)
	if err != nil {
		c.setErrs([]error{err})
		c.cfg.Log.Warn("cannot reconcile", "err", err)
		return
	}
	var errs []error
	ranges := ImportRanges(st.pools)
	if c.cfg.RouterID.IsValid() {
		if want := WantedGlobal(&st.self, &st.bgp, c.cfg.RouterID); !want.Same(c.cfg.Speaker.Global()) {
			c.cfg.Log.Info("BGP speaker settings changed; restarting the speaker in place",
				"asn", want.ASN, "was", c.cfg.Speaker.Global().ASN, "listenPort", want.ListenPort, "gracefulRestart", want.GR)
			c.mu.Lock()
			c.rebuild = &want
			c.mu.Unlock()
			return
		}
	}
	if config {
		peers := DesiredPeers(&st.self, st.nodes, &st.bgp, st.peers)
		if err := c.cfg.Speaker.SetImportRanges(ctx, ranges); err != nil {
			errs = append(errs, err)
		}
		if err := c.cfg.Speaker.SetNoExport(ctx, NoExportPrefixes(st.pools), ExternalPeers(peers)); err != nil {
			errs = append(errs, err)
		}
		if err := c.cfg.Speaker.SetPeers(ctx, peers); err != nil {
			errs = append(errs, err)
		}
		v4, _ := st.self.IPv4()
		v6, _ := st.self.IPv6()
		exports := Exports(st.blocks, st.pods)
		if err := c.cfg.Speaker.SetExports(ctx, exports, v4.Addr(), v6.Addr()); err != nil {
			errs = append(errs, err)
		}
		c.mu.Lock()
		c.self, c.desired, c.exports, c.blocks = st.self, peers, exports, st.blocks
		c.mu.Unlock()
	}
	errs = append(errs, c.tunnelAddr(ctx, st)...)
	routes, rerrs := st.idx.KernelRoutes(st.blocks, c.cfg.Speaker.RIB(), ranges, c.cfg.Render(&st.self, st.pools))
	errs = append(errs, rerrs...)
	// Tunnel devices first: routes through them need them up.
	errs = append(errs, c.setTunnels(st, routes, config)...)
	res, err := c.cfg.FIB.Set(routes)
	if err != nil {
		errs = append(errs, err)
	}
	if c.cfg.NAT != nil && config {
		if err := c.cfg.NAT.Set(natPrefixes(st.pools)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.writeMTU(st.pools); err != nil {
		errs = append(errs, err)
	}
	c.mu.Lock()
	c.routes = routes
	c.mu.Unlock()
	c.setErrs(errs)
	if m := c.cfg.Metrics; m != nil {
		m.observeSync(res, len(st.blocks), len(c.cfg.Speaker.Exported()), len(errs))
	}
	if len(errs) > 0 {
		c.cfg.Log.Warn("reconcile incomplete", "err", errors.Join(errs...))
	}
}

func (c *Controller) rebuildWanted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rebuild != nil
}

func (c *Controller) setErrs(errs []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = c.errs[:0]
	for _, e := range errs {
		c.errs = append(c.errs, e.Error())
	}
}

// peerEvent updates the metrics and, while deletes are held, notes when
// every session is up.
func (c *Controller) peerEvent(ctx context.Context) {
	peers, err := c.cfg.Speaker.Sessions(ctx)
	if err != nil {
		return
	}
	if m := c.cfg.Metrics; m != nil {
		m.observePeers(peers)
	}
	if !c.holdReleased() {
		c.releaseHold(c.established(peers))
	}
}

func (c *Controller) holdReleased() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.released
}

// releaseHold ends the graceful-restart hold on route deletions once every
// expected session (up says whether they are) has been up for a moment
// (time to receive the peers' tables), or HoldMax after start. It reports
// whether it released now.
func (c *Controller) releaseHold(up bool) bool {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.released:
		return false
	case !up:
		c.allUpAt = time.Time{}
		if now.Sub(c.started) < c.cfg.HoldMax {
			return false
		}
	case c.allUpAt.IsZero():
		c.allUpAt = now
		return false
	case now.Sub(c.allUpAt) < 2*time.Second:
		return false
	}
	c.released = true
	c.cfg.FIB.ReleaseDeletes()
	c.cfg.Log.Info("route deletions enabled", "after", now.Sub(c.started).Round(time.Millisecond), "allPeersUp", up)
	return true
}

func (c *Controller) allEstablished(ctx context.Context) bool {
	peers, err := c.cfg.Speaker.Sessions(ctx)
	return err == nil && c.established(peers)
}

// established reports whether every expected session is Established.
func (c *Controller) established(peers []PeerStatus) bool {
	c.mu.Lock()
	want := len(c.desired)
	c.mu.Unlock()
	n := 0
	for _, p := range peers {
		if p.State == "Established" {
			n++
		}
	}
	return n >= want
}

// Status is the controller's view for /status and `brindlectl node status`.
type Status struct {
	Node      conf.Node      `json:"node"`
	Peers     []PeerStatus   `json:"peers"`
	Exports   []string       `json:"exports"`
	Blocks    []string       `json:"blocks"`
	Routes    []string       `json:"routes"`
	Learned   []string       `json:"learned"`
	LastSync  SyncResult     `json:"lastSync"`
	Errors    []string       `json:"errors,omitempty"`
	Ready     bool           `json:"ready"`
	NotReady  []string       `json:"notReady,omitempty"`
	StartedAt time.Time      `json:"startedAt"`
	Desired   map[string]int `json:"desiredPeersByKind"`
}

// Status reports the node's BGP sessions, exports and routes.
func (c *Controller) Status(ctx context.Context) Status {
	peers, _ := c.cfg.Speaker.Peers(ctx)
	c.mu.Lock()
	st := Status{Node: c.self, Peers: peers, LastSync: c.cfg.FIB.Last(), Errors: append([]string(nil), c.errs...),
		StartedAt: c.started, Desired: map[string]int{}}
	for _, p := range c.exports {
		st.Exports = append(st.Exports, p.String())
	}
	for _, b := range c.blocks {
		st.Blocks = append(st.Blocks, b.String())
	}
	for _, r := range Sorted(append([]Route(nil), c.routes...)) {
		st.Routes = append(st.Routes, r.String())
	}
	for _, d := range c.desired {
		st.Desired[d.Kind]++
	}
	c.mu.Unlock()
	st.Learned, _ = c.cfg.Speaker.Learned(ctx)
	st.Ready, st.NotReady = c.readiness(peers)
	return st
}

// Ready is the readiness /readyz reports; unlike Status it does not walk
// the BGP table, so probing it often costs little.
func (c *Controller) Ready(ctx context.Context) (bool, []string) {
	peers, err := c.cfg.Speaker.Sessions(ctx)
	if err != nil {
		return false, []string{"bgp: " + err.Error()}
	}
	return c.readiness(peers)
}

// readiness: etcd answered recently, every expected session is up, and the
// last route sync succeeded.
func (c *Controller) readiness(peers []PeerStatus) (bool, []string) {
	var why []string
	if !c.cfg.Cache.Synced() {
		why = append(why, "etcd: not listed yet")
	}
	for _, check := range c.cfg.ReadyChecks {
		why = append(why, check()...)
	}
	est := map[string]bool{}
	for _, p := range peers {
		est[p.Address] = p.State == "Established"
	}
	c.mu.Lock()
	for _, d := range c.desired {
		if !est[d.Address.String()] {
			why = append(why, fmt.Sprintf("bgp: session with %s (%s) not established", d.Address, d.Name))
		}
	}
	c.mu.Unlock()
	last := c.cfg.FIB.Last()
	switch {
	case last.At.IsZero():
		why = append(why, "routes: not synced yet")
	case last.Err != "":
		why = append(why, "routes: last sync failed: "+last.Err)
	}
	return len(why) == 0, why
}
