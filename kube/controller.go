package kube

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/brindle-net/brindle/ipam"
)

// Defaults of the cluster-wide controller.
const (
	DefaultPodGrace = 2 * time.Minute
	DefaultResync   = 15 * time.Second
)

// ControllerConfig wires the cluster-wide controller.
type ControllerConfig struct {
	Clients *Clients
	Etcd    *clientv3.Client
	Alloc   *ipam.Allocator
	Log     *slog.Logger
	Metrics *Metrics
	// PodGrace is how long an allocation's pod must be missing from the
	// API (as this controller saw it) before the allocation is released.
	PodGrace time.Duration
	// Resync is the longest time between two passes.
	Resync time.Duration
	// Now is the clock; tests move it.
	Now func() time.Time
}

// Controller is the part of brindle that acts for the whole cluster; one
// brindled runs it at a time (RunElected). Informers only signal; one
// level-triggered pass reads the listers and etcd and does what is due:
// Service CIDRs published, deleted Nodes' records and IPAM released, pods'
// allocations released once the pod is gone for PodGrace, sticky addresses
// released once their replica is gone.
type Controller struct {
	cfg     ControllerConfig
	nodes   cache.SharedIndexInformer // metadata
	pods    cache.SharedIndexInformer // metadata, every pod
	sts     cache.SharedIndexInformer
	svc     cache.SharedIndexInformer
	trigger chan struct{}

	mu      sync.Mutex
	missing map[string]time.Time // handle -> when its pod was first seen gone
	// claimLogged are deleted Nodes whose brindled was seen running (logged once).
	claimLogged map[string]bool
}

// NewController builds the controller; Run drives it.
func NewController(cfg ControllerConfig) *Controller {
	if cfg.PodGrace == 0 {
		cfg.PodGrace = DefaultPodGrace
	}
	if cfg.Resync == 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	meta, api := cfg.Clients.Meta, cfg.Clients.Typed
	c := &Controller{cfg: cfg,
		nodes:   MetadataInformer(meta, nodesGVR, metav1.NamespaceAll, nil),
		pods:    MetadataInformer(meta, podsGVR, metav1.NamespaceAll, nil),
		sts:     Informer(api.Apps, "statefulsets", &appsv1.StatefulSet{}),
		svc:     Informer(api.Networking, "servicecidrs", &networkingv1.ServiceCIDR{}),
		trigger: make(chan struct{}, 1),
		missing: map[string]time.Time{}, claimLogged: map[string]bool{},
	}
	// Only what must be acted on at once pokes a pass: a deleted Node (its
	// routes and blocks), a changed ServiceCIDR. Pods and StatefulSets
	// churn; their garbage waits for the next resync (15 s, far inside the
	// pods' grace period), so a burst of pod events costs no extra pass.
	_, _ = c.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(any) { c.poke() }})
	_, _ = c.svc.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(any) { c.poke() },
		UpdateFunc: func(any, any) { c.poke() }, DeleteFunc: func(any) { c.poke() }})
	return c
}

func (c *Controller) poke() {
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

// Run runs the informers and the passes until ctx ends. A burst of events
// costs one pass; passes are at least a second apart.
func (c *Controller) Run(ctx context.Context) error {
	for _, inf := range []cache.SharedIndexInformer{c.nodes, c.pods, c.sts, c.svc} {
		go inf.Run(ctx.Done())
	}
	// ServiceCIDRs may not be served (an older apiserver): the others
	// must have listed before anything is judged gone.
	if !cache.WaitForCacheSync(ctx.Done(), c.nodes.HasSynced, c.pods.HasSynced, c.sts.HasSynced) {
		return ctx.Err()
	}
	c.cfg.Log.Info("kubernetes controller started", "podGrace", c.cfg.PodGrace, "resync", c.cfg.Resync)
	tick := time.NewTicker(c.cfg.Resync)
	defer tick.Stop()
	for {
		err := c.Sync(ctx)
		result := "ok"
		if err != nil && ctx.Err() == nil {
			result = "error"
			c.cfg.Log.Warn("kubernetes controller pass incomplete", "err", err)
		}
		c.cfg.Metrics.Syncs.WithLabelValues(result).Inc()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-c.trigger:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// Sync is one pass.
func (c *Controller) Sync(ctx context.Context) error {
	var errs []error
	if c.svc.HasSynced() {
		errs = append(errs, c.syncServiceCIDRs(ctx))
	}
	errs = append(errs, c.gcNodes(ctx))
	handles, err := c.cfg.Alloc.ListHandles(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	errs = append(errs, c.gcPods(ctx, handles), c.gcSticky(ctx, handles))
	return errors.Join(errs...)
}

// podAlive reports whether the API has the pod (by UID when uid is set; a
// static pod is alive while its mirror pod, which names its UID, is).
func (c *Controller) podAlive(namespace, name, uid string) bool {
	obj, ok, _ := c.pods.GetStore().GetByKey(namespace + "/" + name)
	if !ok {
		return false
	}
	m, _ := obj.(*metav1.PartialObjectMetadata)
	return m != nil && (uid == "" || string(m.UID) == uid || m.Annotations["kubernetes.io/config.mirror"] == uid)
}
