package kube

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/ipam"
)

// AgentConfig is what brindled runs on every node in Kubernetes.
type AgentConfig struct {
	Clients *Clients
	Node    string
	// Socket is where the CNI plugins ask for pods ("" serves none).
	Socket string
	// CNIKubeconfig is the plugins' kubeconfig to keep fresh ("": none).
	CNIKubeconfig     string
	CNIServiceAccount string
	Namespace         string
	Etcd              *clientv3.Client
	Alloc             *ipam.Allocator
	// ExtraLabels (brindled's --labels) go on top of the Node's labels.
	ExtraLabels map[string]string
	// Controller makes this brindled contend for the controller's Lease.
	Controller bool
	PodGrace   time.Duration
	Registry   prometheus.Registerer
	Log        *slog.Logger
}

// RunAgent runs the Kubernetes side of one brindled until ctx ends: the
// pod cache and socket for the CNI plugins, the plugins' kubeconfig
// renewal, the node's labels, and (under the Lease) the controller.
func RunAgent(ctx context.Context, cfg AgentConfig) {
	log := cfg.Log.With("component", "kubernetes")
	metrics := NewMetrics(cfg.Registry)
	var wg sync.WaitGroup
	if cfg.Socket != "" {
		pods := NewPodCache(cfg.Clients, cfg.Node)
		wg.Go(func() { pods.Run(ctx) })
		wg.Go(func() {
			if err := ServeSocket(ctx, cfg.Socket, pods, log); err != nil {
				log.Error("pod socket for the CNI plugins stopped; they fall back to the apiserver", "err", err)
			}
		})
	}
	if cfg.CNIKubeconfig != "" {
		k := &CNIKubeconfig{Clients: cfg.Clients, Path: cfg.CNIKubeconfig, ServiceAccount: cfg.CNIServiceAccount,
			Namespace: cfg.Namespace, Log: log}
		wg.Go(func() { k.Run(ctx, time.Minute) })
	}
	labels := &LabelSync{Clients: cfg.Clients, Etcd: cfg.Etcd, Node: cfg.Node, Extra: cfg.ExtraLabels, Log: log}
	wg.Go(func() { labels.Run(ctx) })
	if cfg.Controller {
		wg.Go(func() {
			RunElected(ctx, Election{Clients: cfg.Clients, Namespace: cfg.Namespace, Identity: cfg.Node, Log: log, Metrics: metrics},
				func(ctx context.Context) {
					c := NewController(ControllerConfig{Clients: cfg.Clients, Etcd: cfg.Etcd, Alloc: cfg.Alloc, Log: log,
						Metrics: metrics, PodGrace: cfg.PodGrace})
					if err := c.Run(ctx); err != nil && ctx.Err() == nil {
						log.Error("kubernetes controller stopped", "err", err)
					}
				})
		})
	}
	wg.Wait()
}
