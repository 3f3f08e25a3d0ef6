package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

// InternalIPSpec is brindled's --ip/--ip6 value that takes the node's
// address from its Kubernetes Node (Calico's kubernetes-internal-ip).
const InternalIPSpec = "kubernetes-internal-ip"

func metaFor(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}

// InternalIP returns the node's InternalIP of the family (from its Node's
// status.addresses) with the prefix length of the local interface address
// that carries it: the subnet decides whether peers are directly reachable.
func InternalIP(ctx context.Context, c *Clients, node string, v6 bool) (netip.Prefix, error) {
	n, err := c.Typed.Node(ctx, node)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: node %s: %w", InternalIPSpec, node, err)
	}
	fam := "IPv4"
	if v6 {
		fam = "IPv6"
	}
	for _, a := range n.Status.Addresses {
		ip, err := netip.ParseAddr(a.Address)
		if a.Type != corev1.NodeInternalIP || err != nil || ip.Is4() == v6 {
			continue
		}
		return localPrefix(ip.Unmap())
	}
	return netip.Prefix{}, fmt.Errorf("%s: node %s has no %s InternalIP (status.addresses %v)", InternalIPSpec, node, fam, n.Status.Addresses)
}

// localPrefix finds ip on a local interface and returns it with that
// address's prefix length.
func localPrefix(ip netip.Addr) (netip.Prefix, error) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(nil, family)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: list addresses: %w", InternalIPSpec, err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			ones, _ := a.Mask.Size()
			return netip.PrefixFrom(ip, ones), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("%s: InternalIP %s is on no interface of this host", InternalIPSpec, ip)
}

// NodeLabels returns the labels of the Kubernetes Node.
func NodeLabels(ctx context.Context, c *Clients, node string) (map[string]string, error) {
	n, err := c.Meta.Resource(nodesGVR).Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	return n.Labels, nil
}

// LabelSync keeps the labels of this node's record in etcd equal to its
// Kubernetes Node's (with Extra, brindled's --labels, on top), so that
// IPPool and BGPPeer nodeSelectors pick nodes by their Kubernetes labels;
// IPAM reads them at every ADD, so a change takes effect for the next pod.
type LabelSync struct {
	Clients *Clients
	Etcd    *clientv3.Client
	Node    string
	Extra   map[string]string
	Log     *slog.Logger
}

// Run watches the Node until ctx ends.
func (s *LabelSync) Run(ctx context.Context) {
	lw := cache.NewFilteredListWatchFromClient(s.Clients.Typed.Core, "nodes", metav1.NamespaceAll,
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.Node).String()
		})
	inf := cache.NewSharedIndexInformer(lw, &corev1.Node{}, 0, cache.Indexers{})
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, n any) { poke(n) }})
	go inf.Run(ctx.Done())
	retry := time.NewTicker(30 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-retry.C:
		}
		obj, ok, _ := inf.GetStore().GetByKey(s.Node)
		n, _ := obj.(*corev1.Node)
		if !ok || n == nil {
			continue
		}
		want := maps.Clone(n.Labels)
		if want == nil {
			want = map[string]string{}
		}
		maps.Copy(want, s.Extra)
		if wrote, err := s.write(ctx, want); err != nil {
			s.Log.Warn("cannot copy the Node's labels into the node record", "err", err)
		} else if wrote {
			s.Log.Info("node labels updated from Kubernetes", "labels", want)
		}
	}
}

// write sets the record's labels, guarded by its revision; no write when
// they are already so.
func (s *LabelSync) write(ctx context.Context, labels map[string]string) (bool, error) {
	key := ipam.Prefix + "nodes/" + s.Node
	for range 20 {
		res, err := s.Etcd.Get(ctx, key)
		if err != nil {
			return false, err
		}
		if len(res.Kvs) != 1 {
			return false, fmt.Errorf("node %s is not registered", s.Node)
		}
		n, err := conf.UnmarshalNode(res.Kvs[0].Value)
		if err != nil {
			return false, err
		}
		if maps.Equal(n.Labels, labels) {
			return false, nil
		}
		n.Labels = labels
		b, _ := json.Marshal(n)
		tr, err := s.Etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", res.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return false, err
		}
		if tr.Succeeded {
			return true, nil
		}
	}
	return false, fmt.Errorf("write node %s: too many conflicting writers", s.Node)
}
