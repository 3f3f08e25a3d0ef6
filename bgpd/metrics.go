package bgpd

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are brindled's Prometheus metrics (docs/operations.md says what
// each means).
type Metrics struct {
	Registry *prometheus.Registry

	peers     *prometheus.GaugeVec
	routes    prometheus.Gauge
	blocks    prometheus.Gauge
	exported  prometheus.Gauge
	syncTime  prometheus.Histogram
	syncs     prometheus.Counter
	errors    *prometheus.CounterVec
	routeOps  *prometheus.CounterVec
	conflicts prometheus.Gauge
	sessState []string
}

// NewMetrics registers brindled's metrics in a new registry (with the Go
// runtime and process collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "brindle_bgp_peers",
			Help: "BGP sessions by state (Established, Active, Connect, Idle, OpenSent, OpenConfirm)."}, []string{"state"}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "brindle_routes_installed",
			Help: "Kernel routes with brindle's protocol (98) that match the desired set, after the last sync."}),
		blocks: prometheus.NewGauge(prometheus.GaugeOpts{Name: "brindle_blocks",
			Help: "Address blocks affine to this node."}),
		exported: prometheus.NewGauge(prometheus.GaugeOpts{Name: "brindle_bgp_exported_prefixes",
			Help: "Prefixes this node announces (its blocks and borrowed addresses)."}),
		syncTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "brindle_route_sync_duration_seconds",
			Help: "Time of one kernel route sync.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "brindle_route_syncs_total",
			Help: "Kernel route syncs run."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brindle_errors_total",
			Help: "Errors by where they happened (reconcile: peers, exports, policy or routes that could not be applied)."}, []string{"where"}),
		routeOps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brindle_route_changes_total",
			Help: "Kernel route changes made by sync, by operation (add, delete)."}, []string{"op"}),
		conflicts: prometheus.NewGauge(prometheus.GaugeOpts{Name: "brindle_route_conflicts",
			Help: "Wanted routes not installed because a route brindle did not make (a local pod's /32) holds the destination."}),
		sessState: []string{"Established", "Active", "Connect", "Idle", "OpenSent", "OpenConfirm"},
	}
	m.Registry.MustRegister(m.peers, m.routes, m.blocks, m.exported, m.syncTime, m.syncs, m.errors, m.routeOps, m.conflicts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, s := range m.sessState {
		m.peers.WithLabelValues(s).Set(0)
	}
	return m
}

func (m *Metrics) observeSync(r SyncResult, blocks, exported, errs int) {
	m.syncs.Inc()
	m.syncTime.Observe(r.Took.Seconds())
	m.routes.Set(float64(r.Installed))
	m.conflicts.Set(float64(r.Conflicts))
	m.blocks.Set(float64(blocks))
	m.exported.Set(float64(exported))
	m.routeOps.WithLabelValues("add").Add(float64(r.Added))
	m.routeOps.WithLabelValues("delete").Add(float64(r.Deleted))
	if errs > 0 {
		m.errors.WithLabelValues("reconcile").Add(float64(errs))
	}
}

func (m *Metrics) observePeers(peers []PeerStatus) {
	counts := map[string]int{}
	for _, p := range peers {
		counts[p.State]++
	}
	for _, s := range m.sessState {
		m.peers.WithLabelValues(s).Set(float64(counts[s]))
	}
}

// WatchCache exports what the etcd cache's watches have received:
// brindle_etcd_watch_events_total and brindle_etcd_watch_bytes_total (keys
// and values). A node's watch traffic should follow its own pods, not the
// cluster's (bench-bgp measures it per cluster-wide ADD).
func (m *Metrics) WatchCache(c *Cache) {
	m.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "brindle_etcd_watch_events_total",
			Help: "Events received on the etcd watches of brindled's cache."},
			func() float64 { e, _ := c.Received(); return float64(e) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "brindle_etcd_watch_bytes_total",
			Help: "Bytes of keys and values received on the etcd watches of brindled's cache."},
			func() float64 { _, b := c.Received(); return float64(b) }))
}
