package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/brindle-net/brindle/kube/podinfo"
)

var (
	podsGVR       = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	nodesGVR      = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// PodCache answers the CNI plugins' questions about pods on this node from
// metadata-only informers (this node's pods, every namespace), reading the
// apiserver directly when the cache does not have the pod yet or has an
// older pod of the same name.
type PodCache struct {
	c    *Clients
	pods cache.SharedIndexInformer
	nss  cache.SharedIndexInformer
}

// NewPodCache watches the pods of node and all namespaces; Run starts it.
func NewPodCache(c *Clients, node string) *PodCache {
	pods := MetadataInformer(c.Meta, podsGVR, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	})
	nss := MetadataInformer(c.Meta, namespacesGVR, metav1.NamespaceAll, nil)
	return &PodCache{c: c, pods: pods, nss: nss}
}

// Run runs the informers until ctx ends.
func (p *PodCache) Run(ctx context.Context) {
	go p.nss.Run(ctx.Done())
	p.pods.Run(ctx.Done())
}

// Synced reports whether both informers have listed.
func (p *PodCache) Synced() bool { return p.pods.HasSynced() && p.nss.HasSynced() }

// Lookup returns the pod's info; podinfo.ErrNotFound when the API has no
// such pod. uid, when set, is the pod the runtime is setting up: a cached
// pod with another UID is an older one, so the apiserver is asked.
func (p *PodCache) Lookup(ctx context.Context, namespace, name, uid string) (*podinfo.Info, error) {
	pod, err := p.pod(ctx, namespace, name, uid)
	if err != nil {
		return nil, err
	}
	info := &podinfo.Info{Namespace: namespace, Name: name, UID: string(pod.UID),
		Annotations: podinfo.Relevant(pod.Annotations), Source: "brindled"}
	if o := metav1.GetControllerOf(pod); o != nil {
		info.Owner = &podinfo.Owner{Kind: o.Kind, Name: o.Name, UID: string(o.UID)}
	}
	ns, err := p.namespace(ctx, namespace)
	switch {
	case err == nil:
		info.NamespaceAnnotations = podinfo.Relevant(ns.Annotations)
	case !errors.Is(err, podinfo.ErrNotFound):
		return nil, err
	}
	return info, nil
}

func (p *PodCache) pod(ctx context.Context, namespace, name, uid string) (*metav1.PartialObjectMetadata, error) {
	if obj, ok, _ := p.pods.GetStore().GetByKey(namespace + "/" + name); ok {
		if m, _ := obj.(*metav1.PartialObjectMetadata); m != nil && (uid == "" || string(m.UID) == uid) {
			return m, nil
		}
	}
	return p.get(ctx, p.c.Meta.Resource(podsGVR).Namespace(namespace), name, "pod "+namespace+"/"+name)
}

func (p *PodCache) namespace(ctx context.Context, name string) (*metav1.PartialObjectMetadata, error) {
	if obj, ok, _ := p.nss.GetStore().GetByKey(name); ok {
		if m, _ := obj.(*metav1.PartialObjectMetadata); m != nil {
			return m, nil
		}
	}
	return p.get(ctx, p.c.Meta.Resource(namespacesGVR), name, "namespace "+name)
}

func (p *PodCache) get(ctx context.Context, r interface {
	Get(context.Context, string, metav1.GetOptions, ...string) (*metav1.PartialObjectMetadata, error)
}, name, what string) (*metav1.PartialObjectMetadata, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := r.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %s", podinfo.ErrNotFound, what)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", what, err)
	}
	return m, nil
}
