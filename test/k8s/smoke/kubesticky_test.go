package smoke

// Sticky StatefulSet addresses (issue 10) on the real cluster.

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestKubeStickyStatefulSet: with brindle.net/sticky on its pod template,
// web-0 deleted and recreated on the other worker (its node cordoned)
// keeps its address and is reachable there from pods on both workers;
// scaling down to one releases web-1's address; deleting the StatefulSet
// releases web-0's.
func TestKubeStickyStatefulSet(t *testing.T) {
	c := connect(t)
	w := c.workers()
	ctx := context.Background()
	clients := map[string]string{}
	for i, n := range w[:2] {
		name := fmt.Sprintf("client%d", i)
		c.pod(name, n.Name, netexec(), nil)
		clients[n.Name] = name
	}

	two := int32(2)
	lbl := map[string]string{"app": "web"}
	tmpl := netexec()
	one := int64(1)
	tmpl.TerminationGracePeriodSeconds = &one
	if _, err := c.cs.AppsV1().StatefulSets(c.ns).Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &two, ServiceName: "web", PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbl, Annotations: map[string]string{"brindle.net/sticky": "true"}},
				Spec:       tmpl,
			},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web0 := c.running(c.ns, "web-0")
	web1 := c.running(c.ns, "web-1")
	ip0, ip1, from := web0.Status.PodIP, web1.Status.PodIP, web0.Spec.NodeName
	info := c.lookup(from, ip0)
	if !info.Allocated || info.Attrs["pod"] != "web-0" {
		t.Fatalf("IPAM for web-0's %s: %+v", ip0, info)
	}
	t.Logf("web-0 on %s: %s (handle %s, block %s of %s); web-1 on %s: %s", from, ip0, info.Handle, info.Block, info.Affinity, web1.Spec.NodeName, ip1)

	// web-0 again, on the other worker.
	cordon := func(on bool) {
		if _, err := c.cs.CoreV1().Nodes().Patch(ctx, from, types.MergePatchType, fmt.Appendf(nil, `{"spec":{"unschedulable":%v}}`, on), metav1.PatchOptions{}); err != nil {
			t.Errorf("cordon %s (%v): %v", from, on, err)
		}
	}
	cordon(true)
	t.Cleanup(func() { cordon(false) })
	zero := int64(0)
	if err := c.cs.CoreV1().Pods(c.ns).Delete(ctx, "web-0", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	var again *corev1.Pod
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 4*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, "web-0", metav1.GetOptions{})
		if err != nil || p.UID == web0.UID {
			return false, nil
		}
		again = p
		return p.Status.Phase == corev1.PodRunning && isReady(p), nil
	}); err != nil {
		t.Fatalf("web-0 not recreated and running within 4 minutes: %v; events: %s", err, c.eventsIn(c.ns, "web-0"))
	}
	cordon(false)
	if again.Spec.NodeName == from {
		t.Fatalf("web-0 came back on the cordoned %s", from)
	}
	if again.Status.PodIP != ip0 {
		t.Errorf("web-0 recreated on %s has %s, want its sticky address %s", again.Spec.NodeName, again.Status.PodIP, ip0)
	}
	for node, cli := range clients {
		if got := c.curl(c.ns, cli, ip0, "/hostname"); got != "web-0" {
			t.Errorf("%s (on %s) -> web-0 at %s: %q", cli, node, ip0, got)
		}
	}
	t.Logf("web-0 recreated on %s with %s (block of %s)", again.Spec.NodeName, again.Status.PodIP, c.lookup(from, ip0).Affinity)

	// Scale below web-1: its address goes.
	if _, err := c.cs.AppsV1().StatefulSets(c.ns).Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	scaled := time.Now()
	if !c.waitFree(from, ip1, 3*time.Minute) {
		t.Errorf("web-1's sticky address %s still allocated 3 minutes after scaling to 1: %+v", ip1, c.lookup(from, ip1))
	} else {
		t.Logf("web-1's %s released %s after scaling to 1", ip1, time.Since(scaled).Round(100*time.Millisecond))
	}
	if info := c.lookup(from, ip0); !info.Allocated {
		t.Errorf("web-0's %s released by scaling to 1", ip0)
	}
	c.ipamClean(from, "after scaling to 1")

	// The StatefulSet deleted: web-0's address goes too.
	if err := c.cs.AppsV1().StatefulSets(c.ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if !c.waitFree(from, ip0, 3*time.Minute) {
		t.Errorf("web-0's sticky address %s still allocated 3 minutes after the StatefulSet was deleted: %+v", ip0, c.lookup(from, ip0))
	} else {
		t.Logf("web-0's %s released %s after the StatefulSet was deleted", ip0, time.Since(deleted).Round(100*time.Millisecond))
	}
	c.ipamClean(from, "after the StatefulSet was deleted")
}
