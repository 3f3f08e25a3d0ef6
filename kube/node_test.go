package kube

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
)

// A Node's labels reach the node record, and a pool's nodeSelector picks
// the node by them for the next ADD, without restarts; brindled's --labels
// stay on top. The InternalIP is found with its prefix length.
func TestNodeLabelsAndInternalIP(t *testing.T) {
	a := startAPI(t)
	e := etcdtest.Start(t)
	ctx := ctxT(t)
	alloc := ipam.New(etcdgrpc.New(e.Client))
	alloc.Log = quietLog()
	for _, p := range []conf.IPPool{
		{Metadata: conf.ObjectMeta{Name: "zone-a"}, Spec: conf.IPPoolSpec{CIDR: "10.80.0.0/16", NodeSelector: "zone == 'a'"}},
		{Metadata: conf.ObjectMeta{Name: "zone-b"}, Spec: conf.IPPoolSpec{CIDR: "10.81.0.0/16", NodeSelector: "zone == 'b' && rack == 'r1'"}},
	} {
		if _, err := alloc.ApplyPool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	rec := conf.Node{V: conf.NodeSchema, Name: "n1", IPv4Address: "192.0.2.1/24", KubernetesNode: "n1"}
	b, _ := json.Marshal(rec)
	if _, err := e.Client.Put(ctx, ipam.Prefix+"nodes/n1", string(b)); err != nil {
		t.Fatal(err)
	}
	node, err := a.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"zone": "a"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labels := func() map[string]string {
		res, err := e.Client.Get(ctx, ipam.Prefix+"nodes/n1")
		if err != nil || len(res.Kvs) != 1 {
			t.Fatalf("node record: %v", err)
		}
		n, _ := conf.UnmarshalNode(res.Kvs[0].Value)
		return n.Labels
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&LabelSync{Clients: a.node, Etcd: e.Client, Node: "n1", Extra: map[string]string{"rack": "r1"}, Log: quietLog()}).Run(sctx)
	waitFor(t, 20*time.Second, "labels copied", func() bool { l := labels(); return l["zone"] == "a" && l["rack"] == "r1" })
	pick := func(handle string) netip.Addr {
		t.Helper()
		got, err := alloc.Assign(ctx, ipam.AssignRequest{Handle: handle, Node: "n1", IPv4: true})
		if err != nil {
			t.Fatal(err)
		}
		return got[0].Addr
	}
	if ip := pick("h1.eth0"); !netip.MustParsePrefix("10.80.0.0/16").Contains(ip) {
		t.Fatalf("zone a node got %s", ip)
	}
	// Relabelled: the next ADD takes the other pool.
	node.Labels["zone"] = "b"
	if _, err = a.admin.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 20*time.Second, "relabel copied", func() bool { return labels()["zone"] == "b" })
	t.Logf("label change in the node record after %s", time.Since(start).Round(time.Millisecond))
	if ip := pick("h2.eth0"); !netip.MustParsePrefix("10.81.0.0/16").Contains(ip) {
		t.Fatalf("zone b node got %s", ip)
	}

	// InternalIP: 127.0.0.1 is on lo here, as a node's address is on its NIC.
	if node, err = a.admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "n1"}, {Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	if _, err = a.admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := InternalIP(ctx, a.node, "n1", false)
	if err != nil || p != netip.MustParsePrefix("127.0.0.1/8") {
		t.Fatalf("internal ip: %v %v, want 127.0.0.1/8", p, err)
	}
	if _, err := InternalIP(ctx, a.node, "n1", true); err == nil || !strings.Contains(err.Error(), "has no IPv6 InternalIP") {
		t.Fatalf("no v6: %v", err)
	}
	if node, err = a.admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.77"}}
	if _, err := a.admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := InternalIP(ctx, a.node, "n1", false); err == nil || !strings.Contains(err.Error(), "InternalIP 198.51.100.77 is on no interface of this host") {
		t.Fatalf("address not local: %v", err)
	}
}
