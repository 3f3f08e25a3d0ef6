package kube

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the Kubernetes side's counters, on brindled's registry.
type Metrics struct {
	// Released counts what the controller released: "pod" (an allocation
	// whose pod is gone), "sticky" (a sticky address whose replica is
	// gone), "node" (a node deleted from Kubernetes).
	Released *prometheus.CounterVec
	// Addresses counts the addresses those releases freed.
	Addresses *prometheus.CounterVec
	// Leader is 1 while this brindled runs the cluster-wide controller.
	Leader prometheus.Gauge
	// Syncs counts controller passes, by outcome ("ok", "error").
	Syncs *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg (nil: a registry of their own).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Released: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brindle_kube_gc_released_total",
			Help: "What the Kubernetes controller released: pod (allocation of a pod gone from the API), sticky (address of a StatefulSet replica that is gone), node (a node deleted from Kubernetes)."}, []string{"kind"}),
		Addresses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brindle_kube_gc_addresses_released_total",
			Help: "Addresses freed by the Kubernetes controller's releases."}, []string{"kind"}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "brindle_kube_controller_leader",
			Help: "1 while this brindled holds the Lease and runs the cluster-wide controller."}),
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brindle_kube_controller_syncs_total",
			Help: "Passes of the cluster-wide controller, by outcome."}, []string{"result"}),
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(m.Released, m.Addresses, m.Leader, m.Syncs)
	for _, k := range []string{"pod", "sticky", "node"} {
		m.Released.WithLabelValues(k)
		m.Addresses.WithLabelValues(k)
	}
	return m
}
