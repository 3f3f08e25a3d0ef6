package kube

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

// syncServiceCIDRs publishes the API's ServiceCIDRs, which no pool may
// overlap.
func (c *Controller) syncServiceCIDRs(ctx context.Context) error {
	var cidrs []string
	for _, obj := range c.svc.GetStore().List() {
		if s, ok := obj.(*networkingv1.ServiceCIDR); ok {
			cidrs = append(cidrs, s.Spec.CIDRs...)
		}
	}
	if len(cidrs) == 0 {
		return nil
	}
	if err := c.cfg.Alloc.PublishServiceCIDRs(ctx, cidrs); err != nil {
		return fmt.Errorf("publish service cidrs: %w", err)
	}
	return nil
}

// gcNodes removes the brindle node of every Kubernetes Node that was
// deleted: its IPAM first (ipam.ReleaseNode: sticky addresses are kept),
// then its node record, upon which its peers drop their sessions with it
// and its routes. Only records brindled wrote for a Kubernetes Node
// (kubernetesNode) are judged, a Node missing from the cache is looked up
// before anything is released, and nothing is released while the node's
// brindled still runs (holds its name claim).
func (c *Controller) gcNodes(ctx context.Context) error {
	res, err := c.cfg.Etcd.Get(ctx, ipam.Prefix+"nodes/", clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read node records: %w", err)
	}
	var errs []error
	for _, kv := range res.Kvs {
		n, err := conf.UnmarshalNode(kv.Value)
		if err != nil || n.KubernetesNode == "" {
			continue
		}
		if _, ok, _ := c.nodes.GetStore().GetByKey(n.KubernetesNode); ok {
			continue
		}
		_, err = c.cfg.Clients.Meta.Resource(nodesGVR).Get(ctx, n.KubernetesNode, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			if err != nil {
				errs = append(errs, fmt.Errorf("look up node %s: %w", n.KubernetesNode, err))
			}
			continue
		}
		// A machine whose brindled still runs is alive, whatever became of
		// its Node: its pods still use their addresses, and a kubelet that
		// registers the Node again finds them. Its brindled holds the name
		// claim (bgpd.NameClaim, an etcd lease of 30 s kept alive while it
		// runs); once the claim lapses (the machine is dead, or brindled
		// was stopped with its pod) the node is released.
		claim, err := c.cfg.Etcd.Get(ctx, ipam.NodeClaimKey(n.Name), clientv3.WithCountOnly())
		if err != nil {
			errs = append(errs, fmt.Errorf("read the name claim of node %s: %w", n.Name, err))
			continue
		}
		if claim.Count > 0 {
			if !c.claimLogged[n.Name] {
				c.claimLogged[n.Name] = true
				c.cfg.Log.Info("node deleted from Kubernetes, but its brindled still runs; released once it stops", "deletedNode", n.Name)
			}
			continue
		}
		delete(c.claimLogged, n.Name)
		rel, err := c.cfg.Alloc.ReleaseNode(ctx, n.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("release node %s: %w", n.Name, err))
			continue
		}
		addrs := 0
		for _, h := range rel.Released {
			addrs += len(h.Addrs)
		}
		// (and a brindled starting meanwhile keeps its record)
		tr, err := c.cfg.Etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision),
			clientv3.Compare(clientv3.CreateRevision(ipam.NodeClaimKey(n.Name)), "=", 0)).
			Then(clientv3.OpDelete(string(kv.Key))).Commit()
		if err != nil {
			errs = append(errs, fmt.Errorf("delete node record %s: %w", n.Name, err))
			continue
		}
		if !tr.Succeeded {
			c.cfg.Log.Info("node record changed while its node was released; judged again next pass", "node", n.Name)
			continue
		}
		c.cfg.Metrics.Released.WithLabelValues("node").Inc()
		c.cfg.Metrics.Addresses.WithLabelValues("node").Add(float64(addrs + rel.FreedIPs))
		c.cfg.Log.Info("node deleted from Kubernetes: released it", "deletedNode", n.Name, "handles", len(rel.Released),
			"addresses", addrs+rel.FreedIPs, "stickyKept", rel.Detached, "blocks", rel.Blocks, "blocksKeptUnclaimed", rel.Unclaimed,
			"endpoints", rel.Endpoints)
	}
	return errors.Join(errs...)
}

// gcPods releases the allocations whose pod is gone from the API (by UID)
// for longer than PodGrace, as this controller saw it. A pod is created in
// the API before kubelet asks for its address, so an allocation being made
// right now has a pod; the grace period and a lookup past the cache before
// each release cover a cache that has not caught up. Tunnel addresses
// (no container) and sticky addresses are never touched here.
func (c *Controller) gcPods(ctx context.Context, handles []*ipam.Handle) error {
	now := c.cfg.Now()
	seen := map[string]bool{}
	var errs []error
	for _, h := range handles {
		ns, pod, uid := h.Attrs[ipam.AttrNamespace], h.Attrs[ipam.AttrPod], h.Attrs[ipam.AttrPodUID]
		if h.Attrs[ipam.AttrContainerID] == "" || ipam.IsSticky(h) || ns == "" || pod == "" {
			continue
		}
		seen[h.ID] = true
		if c.podAlive(ns, pod, uid) {
			c.forget(h.ID)
			continue
		}
		since := c.missingSince(h.ID, now)
		if now.Sub(since) < c.cfg.PodGrace {
			continue
		}
		if alive, err := c.podAliveLive(ctx, ns, pod, uid); err != nil || alive {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		cid := h.Attrs[ipam.AttrContainerID]
		rel, err := c.cfg.Alloc.ReleaseHandleIf(ctx, h.ID, func(cur *ipam.Handle) bool {
			return cur.Attrs[ipam.AttrContainerID] == cid && cur.Attrs[ipam.AttrPodUID] == uid
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("release %s: %w", h.ID, err))
			continue
		}
		c.forget(h.ID)
		c.cfg.Metrics.Released.WithLabelValues("pod").Inc()
		c.cfg.Metrics.Addresses.WithLabelValues("pod").Add(float64(len(rel)))
		c.cfg.Log.Info("released the addresses of a pod gone from the API", "namespace", ns, "pod", pod, "podUID", uid,
			"podNode", h.Node, "handle", h.ID, "ips", addrStrings(rel), "goneFor", now.Sub(since).Round(time.Second).String())
	}
	c.mu.Lock()
	for id := range c.missing {
		if !seen[id] {
			delete(c.missing, id)
		}
	}
	c.mu.Unlock()
	return errors.Join(errs...)
}

// gcSticky releases a sticky address once its StatefulSet is deleted (or
// is a new set of the same name) or scaled below its ordinal, and no pod
// holds it any more (detached, or its pod is gone from the API).
func (c *Controller) gcSticky(ctx context.Context, handles []*ipam.Handle) error {
	var errs []error
	for _, h := range handles {
		if !ipam.IsSticky(h) {
			continue
		}
		ns, name, uid := h.Attrs[ipam.AttrNamespace], h.Attrs[ipam.AttrStatefulSet], h.Attrs[ipam.AttrStatefulSetUID]
		ord, err := strconv.Atoi(h.Attrs[ipam.AttrOrdinal])
		if err != nil {
			continue
		}
		obj, ok, _ := c.sts.GetStore().GetByKey(ns + "/" + name)
		if s, _ := obj.(*appsv1.StatefulSet); ok && s != nil && replicaWanted(s, uid, ord) {
			continue
		}
		cid := h.Attrs[ipam.AttrContainerID]
		if cid != "" && c.podAlive(ns, h.Attrs[ipam.AttrPod], h.Attrs[ipam.AttrPodUID]) {
			continue // the pod is still there (terminating): after its DEL
		}
		s, err := c.cfg.Clients.Typed.StatefulSet(ctx, ns, name)
		switch {
		case err == nil && replicaWanted(s, uid, ord):
			continue
		case err != nil && !apierrors.IsNotFound(err):
			errs = append(errs, fmt.Errorf("look up statefulset %s/%s: %w", ns, name, err))
			continue
		}
		rel, err := c.cfg.Alloc.ReleaseHandleIf(ctx, h.ID, func(cur *ipam.Handle) bool {
			return cur.Attrs[ipam.AttrContainerID] == cid && cur.Attrs[ipam.AttrStatefulSetUID] == uid
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("release %s: %w", h.ID, err))
			continue
		}
		c.cfg.Metrics.Released.WithLabelValues("sticky").Inc()
		c.cfg.Metrics.Addresses.WithLabelValues("sticky").Add(float64(len(rel)))
		c.cfg.Log.Info("released the sticky addresses of a StatefulSet replica that is gone", "namespace", ns,
			"statefulSet", name, "ordinal", ord, "pod", h.Attrs[ipam.AttrPod], "handle", h.ID, "ips", addrStrings(rel))
	}
	return errors.Join(errs...)
}

// replicaWanted reports whether StatefulSet s (the one of UID uid) still
// has replica ord: ordinals run from spec.ordinals.start for spec.replicas.
func replicaWanted(s *appsv1.StatefulSet, uid string, ord int) bool {
	if string(s.UID) != uid || s.DeletionTimestamp != nil {
		return false
	}
	replicas, start := int32(1), int32(0)
	if s.Spec.Replicas != nil {
		replicas = *s.Spec.Replicas
	}
	if s.Spec.Ordinals != nil {
		start = s.Spec.Ordinals.Start
	}
	return int32(ord) >= start && int32(ord) < start+replicas
}

func (c *Controller) podAliveLive(ctx context.Context, ns, name, uid string) (bool, error) {
	m, err := c.cfg.Clients.Meta.Resource(podsGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up pod %s/%s: %w", ns, name, err)
	}
	return uid == "" || string(m.UID) == uid || m.Annotations["kubernetes.io/config.mirror"] == uid, nil
}

func (c *Controller) missingSince(id string, now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.missing[id]
	if !ok {
		c.missing[id] = now
		return now
	}
	return t
}

func (c *Controller) forget(id string) {
	c.mu.Lock()
	delete(c.missing, id)
	c.mu.Unlock()
}

func addrStrings(has []ipam.HandleAddr) []string {
	var out []string
	for _, h := range has {
		out = append(out, h.Addr.String())
	}
	return out
}
