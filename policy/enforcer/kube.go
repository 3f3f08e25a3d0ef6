package enforcer

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/brindle-net/brindle/policy"
	"github.com/brindle-net/brindle/policy/nft"
)

// Kube is the Kubernetes side: informers on Pods, Namespaces and
// NetworkPolicies. Peers can be pods anywhere, so every node watches every
// pod, trimmed to what policy needs (labels, node, addresses, named ports)
// to keep memory small. During an apiserver outage the informers keep
// their last state, and so does the table.
type Kube struct {
	node    string
	pods    cache.SharedIndexInformer
	nss     cache.SharedIndexInformer
	pols    cache.SharedIndexInformer
	changed chan struct{}

	mu        sync.Mutex
	dirtyPods map[string]bool // keys of pods changed since the last Cluster
	// podCache holds what Cluster made of each pod; only the store's new
	// objects are converted again (pods.go).
	podCache podCache
}

// NewKube watches through REST clients of core/v1 and networking/v1 (a
// clientset's CoreV1().RESTClient() and NetworkingV1().RESTClient(), or
// brindled's kube.API, which spares brindled client-go's registration of
// every API group); node is this node's name.
func NewKube(core, networking cache.Getter, node string) *Kube {
	k := &Kube{node: node, changed: make(chan struct{}, 1), dirtyPods: map[string]bool{}}
	informer := func(c cache.Getter, resource string, obj runtime.Object) cache.SharedIndexInformer {
		lw := cache.NewListWatchFromClient(c, resource, metav1.NamespaceAll, fields.Everything())
		inf := cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		_ = inf.SetTransform(trim)
		return inf
	}
	k.pods = informer(core, "pods", &corev1.Pod{})
	k.nss = informer(core, "namespaces", &corev1.Namespace{})
	k.pols = informer(networking, "networkpolicies", &networkingv1.NetworkPolicy{})
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { k.signal() },
		UpdateFunc: func(any, any) { k.signal() },
		DeleteFunc: func(any) { k.signal() },
	}
	for _, inf := range []cache.SharedIndexInformer{k.nss, k.pols} {
		_, _ = inf.AddEventHandler(h)
	}
	_, _ = k.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.podChanged,
		UpdateFunc: func(_, o any) { k.podChanged(o) },
		DeleteFunc: k.podChanged,
	})
	return k
}

// podChanged marks a pod for Cluster to look at again.
func (k *Kube) podChanged(o any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o); err == nil {
		k.mu.Lock()
		k.dirtyPods[key] = true
		k.mu.Unlock()
	}
	k.signal()
}

func (k *Kube) signal() {
	select {
	case k.changed <- struct{}{}:
	default:
	}
}

// Start runs the informers until ctx ends.
func (k *Kube) Start(ctx context.Context) {
	for _, inf := range []cache.SharedIndexInformer{k.pods, k.nss, k.pols} {
		go inf.Run(ctx.Done())
	}
}

// WaitSynced waits up to d for the first lists.
func (k *Kube) WaitSynced(ctx context.Context, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return cache.WaitForCacheSync(ctx.Done(), k.pods.HasSynced, k.nss.HasSynced, k.pols.HasSynced)
}

// Synced reports whether all three have been listed once.
func (k *Kube) Synced() bool { return k.pods.HasSynced() && k.nss.HasSynced() && k.pols.HasSynced() }

// Changed is signalled (coalesced) after any change.
func (k *Kube) Changed() <-chan struct{} { return k.changed }

// Cluster is the compiler's input now. locals are the node's attachments
// from the kernel: each is matched to its pod by the host veth's name
// (conf.HostVethNameIf), and a local pod's addresses are taken from its
// host routes, which exist before the kubelet reports status.podIPs.
// Only the pods changed since the last call are read and converted again;
// the others are the same *policy.Pod values as last time, in the same
// order, which is what lets policy.Compiler keep what they did not touch.
// Cluster is called by one goroutine (the sync loop).
func (k *Kube) Cluster(locals []policy.Local) (*policy.Cluster, []policy.Local) {
	c := &policy.Cluster{}
	for _, o := range k.nss.GetStore().List() {
		n := o.(*corev1.Namespace)
		c.Namespaces = append(c.Namespaces, &policy.Namespace{Name: n.Name, Labels: n.Labels})
	}
	for _, o := range k.pols.GetStore().List() {
		c.Policies = append(c.Policies, o.(*networkingv1.NetworkPolicy))
	}
	k.mu.Lock()
	dirty := k.dirtyPods
	k.dirtyPods = map[string]bool{}
	k.mu.Unlock()
	c.Pods, locals = k.podCache.update(k.pods.GetStore(), dirty, k.node, locals)
	return c, locals
}

// attachmentIfnames are the pod interfaces whose host veths are matched to
// their pod; an attachment on any other interface name stays in default
// deny.
var attachmentIfnames = []string{"eth0", "net1", "net2", "net3", "net4", "net5", "net6", "net7", "net8"}

// ClusterOf is the compiler's input from listed API objects, as every node
// builds it (less the node's own kernel view): `brindlectl policy` uses
// it, so that its answers come from the same model the nodes enforce.
func ClusterOf(pods []corev1.Pod, namespaces []corev1.Namespace, policies []networkingv1.NetworkPolicy) *policy.Cluster {
	c := &policy.Cluster{}
	for i := range namespaces {
		c.Namespaces = append(c.Namespaces, &policy.Namespace{Name: namespaces[i].Name, Labels: namespaces[i].Labels})
	}
	for i := range policies {
		c.Policies = append(c.Policies, &policies[i])
	}
	for i := range pods {
		if p, ok := PodOf(&pods[i]); ok {
			c.Pods = append(c.Pods, p)
		}
	}
	return c
}

// PodOf is what policy knows of a pod; false for a pod that has ended,
// whose addresses may already be another pod's.
func PodOf(p *corev1.Pod) (*policy.Pod, bool) {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil, false
	}
	return podOf(p), true
}

func podOf(p *corev1.Pod) *policy.Pod {
	pod := &policy.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Node: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			pod.Addrs = append(pod.Addrs, a.Unmap())
		}
	}
	for _, ct := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		for _, cp := range ct.Ports {
			if cp.Name == "" {
				continue
			}
			proto := uint8(nft.ProtoTCP)
			switch cp.Protocol {
			case corev1.ProtocolUDP:
				proto = nft.ProtoUDP
			case corev1.ProtocolSCTP:
				proto = nft.ProtoSCTP
			}
			pod.Ports = append(pod.Ports, policy.ContainerPort{Name: cp.Name, Proto: proto, Port: uint16(cp.ContainerPort)})
		}
	}
	return pod
}

// trim keeps only what policy reads of each object.
func trim(o any) (any, error) {
	switch v := o.(type) {
	case *corev1.Pod:
		t := &corev1.Pod{}
		t.Name, t.Namespace, t.UID, t.ResourceVersion, t.Labels = v.Name, v.Namespace, v.UID, v.ResourceVersion, v.Labels
		t.Spec.NodeName, t.Spec.HostNetwork = v.Spec.NodeName, v.Spec.HostNetwork
		for _, c := range append(slices.Clone(v.Spec.InitContainers), v.Spec.Containers...) {
			var ports []corev1.ContainerPort
			for _, p := range c.Ports {
				if p.Name != "" {
					ports = append(ports, corev1.ContainerPort{Name: p.Name, Protocol: p.Protocol, ContainerPort: p.ContainerPort})
				}
			}
			if len(ports) > 0 {
				t.Spec.Containers = append(t.Spec.Containers, corev1.Container{Name: c.Name, Ports: ports})
			}
		}
		t.Status.Phase, t.Status.PodIPs = v.Status.Phase, v.Status.PodIPs
		return t, nil
	case *corev1.Namespace:
		t := &corev1.Namespace{}
		t.Name, t.UID, t.ResourceVersion, t.Labels = v.Name, v.UID, v.ResourceVersion, v.Labels
		return t, nil
	case *networkingv1.NetworkPolicy:
		v.ManagedFields, v.Annotations = nil, nil
		return v, nil
	}
	return o, nil
}
