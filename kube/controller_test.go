package kube

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
)

type gcRig struct {
	api   *apiserver
	etcd  *etcdtest.Server
	alloc *ipam.Allocator
}

func newGCRig(t *testing.T) *gcRig {
	t.Helper()
	r := &gcRig{api: startAPI(t), etcd: etcdtest.Start(t)}
	r.alloc = ipam.New(etcdgrpc.New(r.etcd.Client))
	r.alloc.Log = quietLog()
	if _, err := r.alloc.ApplyPool(ctxT(t), conf.IPPool{Metadata: conf.ObjectMeta{Name: "p"}, Spec: conf.IPPoolSpec{CIDR: "10.70.0.0/16"}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// node registers a node in etcd (as brindled in Kubernetes does) and in
// the API.
func (r *gcRig) node(t *testing.T, name string) {
	t.Helper()
	n := conf.Node{V: conf.NodeSchema, Name: name, IPv4Address: "192.0.2.1/24", KubernetesNode: name, Registered: time.Now()}
	b, _ := json.Marshal(n)
	if _, err := r.etcd.Client.Put(ctxT(t), ipam.Prefix+"nodes/"+name, string(b)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.api.admin.CoreV1().Nodes().Create(ctxT(t), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// attach allocates for a pod attachment as brindle-ipam does.
func (r *gcRig) attach(t *testing.T, node, cid, ns, pod, uid string, sticky *[3]string) []ipam.HandleAddr {
	t.Helper()
	attrs := map[string]string{ipam.AttrNode: node, ipam.AttrContainerID: cid, ipam.AttrIfName: "eth0",
		ipam.AttrNamespace: ns, ipam.AttrPod: pod, ipam.AttrPodUID: uid}
	req := ipam.AssignRequest{Handle: ipam.HandleID(cid, "eth0"), Node: node, IPv4: true, Attrs: attrs,
		Endpoint: &ipam.Endpoint{Namespace: ns, Pod: pod, ContainerID: cid, IfName: "eth0", HostVeth: "bri" + cid}}
	if sticky != nil {
		req.Handle, req.Sticky = ipam.StickyHandleID(ns, pod, "eth0"), true
		ord := 0
		if strings.HasSuffix(pod, "-1") {
			ord = 1
		}
		req.Attrs = ipam.StickyAttrs(attrs, sticky[0], sticky[1], ord)
	}
	got, err := r.alloc.Assign(ctxT(t), req)
	if err != nil {
		t.Fatalf("assign %s: %v", req.Handle, err)
	}
	return got
}

func (r *gcRig) has(t *testing.T, handle string) bool {
	t.Helper()
	h, err := r.alloc.HandleOf(ctxT(t), handle)
	if err != nil {
		t.Fatal(err)
	}
	return h != nil
}

// The cluster-wide controller against a real apiserver and etcd, under
// the RBAC of conf/k8s: allocations of pods gone from the API are released
// after the grace period and not before (a pod created meanwhile keeps
// its); a deleted Node's record, pods, tunnel and blocks go, its sticky
// addresses stay; sticky addresses go with their StatefulSet's replica;
// `ipam check` is clean at the end; the API's Service CIDRs are published.
func TestControllerGarbageCollection(t *testing.T) {
	r := newGCRig(t)
	ctx := ctxT(t)
	r.node(t, "n1")
	r.node(t, "n2")
	r.api.makeNamespace(t, "apps", nil)
	replicas := int32(2)
	sts, err := r.api.admin.AppsV1().StatefulSets("apps").Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.StatefulSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stsRef := &[3]string{"web", string(sts.UID)}
	ctrl := true
	owner := &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "web", UID: sts.UID, Controller: &ctrl}

	live := r.api.makePod(t, "apps", "live", "n1", nil, nil)
	r.attach(t, "n1", "c-live", "apps", "live", string(live.UID), nil)
	r.attach(t, "n1", "c-gone", "apps", "gone", "uid-of-a-deleted-pod", nil)
	// A pod whose ADD runs before this test creates it in the API.
	r.attach(t, "n1", "c-new", "apps", "new", "", nil)
	// On n2: a pod, the tunnel address, and two sticky replicas.
	onN2 := r.api.makePod(t, "apps", "on-n2", "n2", nil, nil)
	r.attach(t, "n2", "c-on-n2", "apps", "on-n2", string(onN2.UID), nil)
	if _, err := r.alloc.Assign(ctx, ipam.AssignRequest{Handle: "tunnel-n2", Node: "n2", IPv4: true, Attrs: map[string]string{"type": "tunnel"}}); err != nil {
		t.Fatal(err)
	}
	web0 := r.api.makePod(t, "apps", "web-0", "n2", nil, owner)
	web0Addr := r.attach(t, "n2", "c-web-0", "apps", "web-0", string(web0.UID), stsRef)
	web1 := r.api.makePod(t, "apps", "web-1", "n2", nil, owner)
	r.attach(t, "n2", "c-web-1", "apps", "web-1", string(web1.UID), stsRef)

	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()
	var leaders atomic.Int32
	go RunElected(cctx, Election{Clients: r.api.node, Identity: "n1", Log: quietLog(), Metrics: metrics,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond},
		func(ctx context.Context) {
			leaders.Add(1)
			c := NewController(ControllerConfig{Clients: r.api.node, Etcd: r.etcd.Client, Alloc: r.alloc, Log: quietLog(),
				Metrics: metrics, PodGrace: 4 * time.Second, Resync: 500 * time.Millisecond})
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("controller: %v", err)
			}
		})
	time.Sleep(time.Second)
	r.api.makePod(t, "apps", "new", "n1", nil, nil)

	waitFor(t, 30*time.Second, "the gone pod's allocation released", func() bool { return !r.has(t, "c-gone.eth0") })
	if took := time.Since(started); took < 4*time.Second {
		t.Fatalf("released after %s, before the 4 s grace period", took)
	}
	for _, h := range []string{"c-live.eth0", "c-new.eth0", "c-on-n2.eth0", "tunnel-n2"} {
		if !r.has(t, h) {
			t.Errorf("%s released, but its pod (or node) is there", h)
		}
	}
	if got := testutil.ToFloat64(metrics.Released.WithLabelValues("pod")); got != 1 {
		t.Errorf("released pods metric %v, want 1", got)
	}
	if testutil.ToFloat64(metrics.Leader) != 1 {
		t.Error("leader gauge is not 1")
	}
	svc, err := r.etcd.Client.Get(ctx, ipam.Prefix+"kubernetes/servicecidrs")
	if err != nil || len(svc.Kvs) != 1 || !strings.Contains(string(svc.Kvs[0].Value), "10.96.0.0/16") {
		t.Errorf("service cidrs not published: %v %v", svc, err)
	}

	// The Node n2 is deleted while n2's brindled still runs (it holds
	// its name claim): nothing of n2 is released, pass after pass.
	claim := ipam.NodeClaimKey("n2")
	if _, err := r.etcd.Client.Put(ctx, claim, "192.0.2.2"); err != nil {
		t.Fatal(err)
	}
	if err := r.api.admin.CoreV1().Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	passes := func() float64 {
		return testutil.ToFloat64(metrics.Syncs.WithLabelValues("ok")) + testutil.ToFloat64(metrics.Syncs.WithLabelValues("error"))
	}
	before := passes()
	waitFor(t, 60*time.Second, "three controller passes after n2's deletion", func() bool { return passes() >= before+3 })
	if res, err := r.etcd.Client.Get(ctx, ipam.Prefix+"nodes/n2"); err != nil || len(res.Kvs) != 1 {
		t.Fatalf("n2's node record released while its brindled holds its name claim: %v %v", res, err)
	}
	for _, h := range []string{"c-on-n2.eth0", "tunnel-n2"} {
		if !r.has(t, h) {
			t.Errorf("%s released while n2's brindled still runs", h)
		}
	}
	// n2's brindled stops: its claim goes, and n2 with it.
	if _, err := r.etcd.Client.Delete(ctx, claim); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	waitFor(t, 60*time.Second, "n2's node record gone", func() bool {
		res, err := r.etcd.Client.Get(ctx, ipam.Prefix+"nodes/n2")
		return err == nil && len(res.Kvs) == 0
	})
	t.Logf("node record of a deleted Node gone %s after its brindled's name claim went", time.Since(deleted).Round(time.Millisecond))
	for h, want := range map[string]bool{"c-on-n2.eth0": false, "tunnel-n2": false,
		ipam.StickyHandleID("apps", "web-0", "eth0"): true, ipam.StickyHandleID("apps", "web-1", "eth0"): true, "c-live.eth0": true} {
		if r.has(t, h) != want {
			t.Errorf("after n2's deletion: handle %s present=%v, want %v", h, !want, want)
		}
	}
	rep, err := r.alloc.Check(ctx)
	if err != nil || !rep.Clean() {
		t.Fatalf("ipam check after n2's deletion: %+v %v", rep, err)
	}
	if info, _ := r.alloc.ShowIP(ctx, web0Addr[0].Addr); !info.Allocated || info.Affinity != "" {
		t.Fatalf("web-0's address after n2's deletion: %+v (want held, in a block no node claims)", info)
	}
	if k, _ := r.etcd.Client.Get(ctx, ipam.Prefix+"endpoints/n2/", clientOpts()...); len(k.Kvs) != 0 {
		t.Errorf("endpoints of n2 left: %d", len(k.Kvs))
	}

	// Scaled to 1: web-1's address goes once its pod is gone; web-0's stays.
	for _, p := range []string{"web-1"} {
		if err := r.api.admin.CoreV1().Pods("apps").Delete(ctx, p, forceDelete()); err != nil {
			t.Fatal(err)
		}
	}
	one := int32(1)
	sts.Spec.Replicas = &one
	if _, err := r.api.admin.AppsV1().StatefulSets("apps").Update(ctx, sts, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "web-1's sticky address released", func() bool { return !r.has(t, ipam.StickyHandleID("apps", "web-1", "eth0")) })
	time.Sleep(time.Second)
	if !r.has(t, ipam.StickyHandleID("apps", "web-0", "eth0")) {
		t.Fatal("web-0's sticky address released though the set still has replica 0")
	}
	// The StatefulSet deleted: web-0's goes too, and its block with it.
	if err := r.api.admin.CoreV1().Pods("apps").Delete(ctx, "web-0", forceDelete()); err != nil {
		t.Fatal(err)
	}
	if err := r.api.admin.AppsV1().StatefulSets("apps").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "web-0's sticky address released", func() bool { return !r.has(t, ipam.StickyHandleID("apps", "web-0", "eth0")) })
	if info, _ := r.alloc.ShowIP(ctx, web0Addr[0].Addr); info.Block != "" {
		t.Errorf("the unclaimed block of web-0's address stays after its last address: %+v", info)
	}
	if got := testutil.ToFloat64(metrics.Released.WithLabelValues("sticky")); got != 2 {
		t.Errorf("sticky releases metric %v, want 2", got)
	}
	if got := testutil.ToFloat64(metrics.Released.WithLabelValues("node")); got != 1 {
		t.Errorf("node releases metric %v, want 1", got)
	}
	rep, err = r.alloc.Check(ctx)
	if err != nil || !rep.Clean() {
		t.Fatalf("ipam check at the end: %+v %v", rep, err)
	}
	if leaders.Load() != 1 {
		t.Errorf("controller started %d times", leaders.Load())
	}
}

func clientOpts() []clientv3.OpOption { return []clientv3.OpOption{clientv3.WithPrefix()} }
