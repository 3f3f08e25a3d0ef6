package enforcer

import (
	"net/netip"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/brindle-net/brindle/policy/nft"
)

// metrics are the enforcer's Prometheus metrics. Drop counts come from the
// kernel at scrape time (per-element counters of the isolation sets, named
// counters) and are kept monotonic across full rewrites of the table,
// which restart the kernel's counters.
type metrics struct {
	e *Enforcer

	syncs     *prometheus.CounterVec
	duration  prometheus.Histogram
	flushed   prometheus.Counter
	restored  prometheus.Counter
	endpoints prometheus.Gauge
	policies  prometheus.Gauge

	podDrops, polDrops, named *prometheus.Desc
	loose                     *prometheus.Desc

	mu   sync.Mutex
	base map[string]uint64 // counts carried over from before rewrites
	last map[string]uint64 // last kernel reading per key
}

func newMetrics(e *Enforcer) *metrics {
	return &metrics{e: e,
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brindle_policy_syncs_total",
			Help: "Syncs of table inet brindle, by result (ok, error, skipped: caches not synced yet)."}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "brindle_policy_sync_seconds",
			Help: "Time of one sync: read the kernel and the caches, compile, render, write.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		flushed: prometheus.NewCounter(prometheus.CounterOpts{Name: "brindle_policy_conntrack_flushed_total",
			Help: "Conntrack entries deleted because policy no longer allows their connection."}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{Name: "brindle_policy_table_restored_total",
			Help: "Times table inet brindle was found changed behind brindled's back and rewritten."}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{Name: "brindle_policy_endpoints", Help: "Pod attachments in the table."}),
		policies:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "brindle_policy_policies", Help: "NetworkPolicies compiled."}),
		podDrops: prometheus.NewDesc("brindle_policy_pod_drops_total",
			"Packets dropped because no policy allowed them, per pod and direction.", []string{"namespace", "pod", "direction"}, nil),
		polDrops: prometheus.NewDesc("brindle_policy_drops_total",
			"Packets dropped at pods a policy isolates (each such drop counts for every policy isolating the pod in that direction).", []string{"namespace", "policy", "direction"}, nil),
		named: prometheus.NewDesc("brindle_filter_drops_total",
			"Packets dropped by the filter table outside policy: spoofed (source not the pod's own), not_ready (to a pod whose endpoint is not programmed yet), foreign_tunnel (VXLAN/IPIP from a non-node).", []string{"reason"}, nil),
		loose: prometheus.NewDesc("brindle_antispoof_rp_filter_loose",
			"1 when the kernel's reverse-path filter alone would not stop spoofed pod sources (rp_filter 0 or 2 in force, or IPv6); anti-spoofing then rests on table inet brindle.", nil, nil),
		base: map[string]uint64{}, last: map[string]uint64{},
	}
}

func (m *metrics) register(r prometheus.Registerer) {
	r.MustRegister(m.syncs, m.duration, m.flushed, m.restored, m.endpoints, m.policies, m)
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.podDrops
	ch <- m.polDrops
	ch <- m.named
	ch <- m.loose
}

// monotonic turns a kernel reading into a count that never goes back.
func (m *metrics) monotonic(key string, v uint64) uint64 {
	if last, ok := m.last[key]; ok && v < last {
		m.base[key] += last
	}
	m.last[key] = v
	return m.base[key] + v
}

// Collect implements prometheus.Collector: it reads the kernel's counters.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	loose := 0.0
	if m.e.looseHost() != "" {
		loose = 1
	}
	ch <- prometheus.MustNewConstMetric(m.loose, prometheus.GaugeValue, loose)
	c, err := m.e.cfg.Writer.ReadCounters()
	if err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, reason := range []string{nft.CounterSpoofed, nft.CounterNotReady, nft.CounterTunnel} {
		ch <- prometheus.MustNewConstMetric(m.named, prometheus.CounterValue, float64(m.monotonic("named/"+reason, c.Named[reason])), reason)
	}
	owners, isolating := m.e.owners()
	perPolicy := map[[3]string]uint64{}
	seen := map[string]bool{}
	for dir, counts := range map[string]map[netip.Addr]uint64{"ingress": c.Ingress, "egress": c.Egress} {
		perPod := map[string]uint64{}
		for a, v := range counts {
			pod, ok := owners[a]
			if !ok {
				continue
			}
			// Keyed by pod too: a new pod given a freed address starts at 0.
			key := dir + "/" + pod + "/" + a.String()
			seen[key] = true
			perPod[pod] += m.monotonic(key, v)
		}
		for pod, v := range perPod {
			ns, name, _ := strings.Cut(pod, "/")
			ch <- prometheus.MustNewConstMetric(m.podDrops, prometheus.CounterValue, float64(v), ns, name, dir)
			for _, pol := range isolating[dir+"/"+pod] {
				perPolicy[[3]string{ns, pol, dir}] += v
			}
		}
	}
	for k, v := range perPolicy {
		ch <- prometheus.MustNewConstMetric(m.polDrops, prometheus.CounterValue, float64(v), k[0], k[1], k[2])
	}
	for k := range m.last {
		if !seen[k] && !strings.HasPrefix(k, "named/") {
			delete(m.last, k)
			delete(m.base, k)
		}
	}
}

// fold carries the kernel's current counts into the base before the table
// is replaced (which restarts them from zero).
func (m *metrics) fold(c nft.Counters, owners map[netip.Addr]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for reason, v := range c.Named {
		m.monotonic("named/"+reason, v)
		m.base["named/"+reason] += v
		m.last["named/"+reason] = 0
	}
	for dir, counts := range map[string]map[netip.Addr]uint64{"ingress": c.Ingress, "egress": c.Egress} {
		for a, v := range counts {
			if pod, ok := owners[a]; ok {
				key := dir + "/" + pod + "/" + a.String()
				m.monotonic(key, v)
				m.base[key] += v
				m.last[key] = 0
			}
		}
	}
}
