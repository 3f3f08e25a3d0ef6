package kube

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// Scheme knows only the API groups brindled reads or writes: core/v1
// (Nodes, Pods, Namespaces, ServiceAccount tokens), authentication/v1
// (the TokenRequest body), apps/v1 (StatefulSets), networking/v1
// (NetworkPolicies, ServiceCIDRs) and coordination/v1 (the controller's
// Lease). client-go's kubernetes.Clientset, its typed clients, informers
// and leaderelection all import client-go/kubernetes/scheme, which
// registers all 57 groups of k8s.io/api at start-up, in every brindled,
// Kubernetes or not: about 10 MiB of touched executable pages and heap
// per process (docs/bgp.md, Memory). brindled therefore talks to the API
// through REST clients on this scheme.
var Scheme = runtime.NewScheme()

var codecs = serializer.NewCodecFactory(Scheme)

func init() {
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, authv1.AddToScheme, appsv1.AddToScheme,
		networkingv1.AddToScheme, coordinationv1.AddToScheme} {
		utilruntime.Must(add(Scheme))
	}
}

// API is brindled's typed access to the apiserver: one REST client per
// group version, sharing one HTTP client and one rate limiter.
type API struct {
	Core, Apps, Networking, Coordination rest.Interface
}

// NewAPI builds the REST clients on cfg (whose rate limiter, when unset,
// is made here from its QPS and Burst and shared).
func NewAPI(cfg *rest.Config) (*API, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes http client: %w", err)
	}
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	client := func(gv schema.GroupVersion) (rest.Interface, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion = &gv
		c.APIPath = "/apis"
		if gv.Group == "" {
			c.APIPath = "/api"
		}
		c.NegotiatedSerializer = codecs.WithoutConversion()
		rc, err := rest.RESTClientForConfigAndClient(c, hc)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client for %s: %w", gv, err)
		}
		return rc, nil
	}
	a := &API{}
	for _, x := range []struct {
		to *rest.Interface
		gv schema.GroupVersion
	}{{&a.Core, corev1.SchemeGroupVersion}, {&a.Apps, appsv1.SchemeGroupVersion},
		{&a.Networking, networkingv1.SchemeGroupVersion}, {&a.Coordination, coordinationv1.SchemeGroupVersion}} {
		if *x.to, err = client(x.gv); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Node reads a Node.
func (a *API) Node(ctx context.Context, name string) (*corev1.Node, error) {
	n := &corev1.Node{}
	return n, a.Core.Get().Resource("nodes").Name(name).Do(ctx).Into(n)
}

// StatefulSet reads a StatefulSet.
func (a *API) StatefulSet(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error) {
	s := &appsv1.StatefulSet{}
	return s, a.Apps.Get().Namespace(namespace).Resource("statefulsets").Name(name).Do(ctx).Into(s)
}

// CreateToken asks for a token of a ServiceAccount (its token subresource).
func (a *API) CreateToken(ctx context.Context, namespace, sa string, req *authv1.TokenRequest) (*authv1.TokenRequest, error) {
	out := &authv1.TokenRequest{}
	err := a.Core.Post().Namespace(namespace).Resource("serviceaccounts").Name(sa).SubResource("token").
		Body(req).Do(ctx).Into(out)
	return out, err
}

// Lease reads a Lease.
func (a *API) Lease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	l := &coordinationv1.Lease{}
	return l, a.Coordination.Get().Namespace(namespace).Resource("leases").Name(name).Do(ctx).Into(l)
}

// CreateLease creates a Lease.
func (a *API) CreateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	return out, a.Coordination.Post().Namespace(l.Namespace).Resource("leases").Body(l).Do(ctx).Into(out)
}

// UpdateLease replaces a Lease; its resourceVersion makes the write fail
// with a conflict when someone else wrote it since it was read.
func (a *API) UpdateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	return out, a.Coordination.Put().Namespace(l.Namespace).Resource("leases").Name(l.Name).Body(l).Do(ctx).Into(out)
}
