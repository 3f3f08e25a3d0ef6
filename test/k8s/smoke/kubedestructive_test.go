package smoke

// Garbage collection from the Kubernetes API (issue 10) on the real
// cluster: a pod gone from the API while its node's kubelet is frozen (no
// DEL), and a Node deleted while its kubelet and brindled are frozen (a dead
// machine). Both take minutes (the 2-minute grace period) and stop a node,
// so they run only with BRINDLE_SMOKE_DESTRUCTIVE=1: `make k8s-kube`.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// destructive returns test/k8s/kubenode.sh, or skips the test.
func destructive(t *testing.T) string {
	t.Helper()
	if os.Getenv("BRINDLE_SMOKE_DESTRUCTIVE") != "1" {
		t.Skip("stops a node and waits minutes: run with BRINDLE_SMOKE_DESTRUCTIVE=1 (make k8s-kube)")
	}
	script := os.Getenv("BRINDLE_SMOKE_NODECTL")
	if script == "" {
		t.Fatal("BRINDLE_SMOKE_NODECTL (test/k8s/kubenode.sh) is not set: run through make k8s-kube")
	}
	return script
}

func nodectl(t *testing.T, script string, args ...string) {
	t.Helper()
	out, err := exec.Command(script, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
}

// TestKubeDestructivePodGC: a pod force-deleted from the API while its
// node's kubelet is frozen (no DEL ever reaches brindle; the conflist is
// cniVersion 1.0.0, no CNI GC) has its address released by the controller
// after the grace period (2 minutes), logged with the pod's name; `ipam
// check` is clean, and the kubelet's late DEL, once it runs again, changes
// nothing.
func TestKubeDestructivePodGC(t *testing.T) {
	script := destructive(t)
	c := connect(t)
	w := c.workers()
	node, other := w[0].Name, w[1].Name
	p := c.pod("gone", node, netexec(), nil)
	ip := p.Status.PodIP
	if info := c.lookup(other, ip); !info.Allocated || info.Attrs["pod"] != "gone" {
		t.Fatalf("IPAM for %s: %+v", ip, info)
	}

	nodectl(t, script, "freeze", node)
	thawed := false
	thaw := func() {
		if !thawed {
			nodectl(t, script, "thaw", node)
			thawed = true
		}
	}
	t.Cleanup(thaw)
	zero := int64(0)
	if err := c.cs.CoreV1().Pods(c.ns).Delete(context.Background(), "gone", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if !c.waitFree(other, ip, 5*time.Minute) {
		t.Fatalf("%s of pod gone (force-deleted, kubelet frozen) still allocated 5 minutes later: %+v", ip, c.lookup(other, ip))
	}
	t.Logf("%s released %s after the pod left the API (grace 2 min)", ip, time.Since(deleted).Round(time.Second))
	c.ipamClean(other, "after the release, kubelet still frozen")
	thaw()
	// kubelet tears the sandbox down now: its DEL finds nothing to release.
	c.waitSchedulable(node)
	// (logs come through the kubelets: read them now)
	if line := c.brindleLog("released the addresses of a pod gone from the API", `"pod":"gone"`, `"podUID":"`+string(p.UID)+`"`); line == "" {
		t.Errorf("no brindled logged the release of pod gone")
	} else {
		t.Logf("log: %s", line)
	}
	after := c.pod("after", node, netexec(), nil)
	t.Logf("a new pod on %s after the thaw: %s", node, after.Status.PodIP)
	c.ipamClean(other, "after the kubelet ran again")
}

// TestKubeDestructiveNodeGC: a Node deleted from Kubernetes while its
// kubelet is frozen but its brindled runs keeps everything (the machine is
// alive); once its brindled is frozen too (a dead machine) its brindle node
// record goes within a minute, the other nodes drop their BGP session with it and
// its routes, its pods' and tunnel's addresses are released while a sticky
// pod's address is kept, and `ipam check` is clean. Then the node comes
// back: kubelet registers the Node again, brindled registers the node,
// and a pod there runs.
func TestKubeDestructiveNodeGC(t *testing.T) {
	script := destructive(t)
	c := connect(t)
	w := c.workers()
	ctx := context.Background()
	dead, other := w[0], w[1].Name
	p := c.pod("victim", dead.Name, netexec(), nil)
	ip := p.Status.PodIP
	rec := c.nodeRecords(other)[dead.Name]
	deadIP := strings.Split(rec.IPv4, "/")[0]
	if rec.Name == "" || deadIP == "" {
		t.Fatalf("no brindle node record of %s", dead.Name)
	}
	t.Logf("%s: %s, tunnel %s; pod victim %s", dead.Name, rec.IPv4, rec.TunnelIPv4, ip)

	// First the kubelet alone: the Node is deleted while the machine's
	// brindled still runs.
	nodectl(t, script, "freeze", dead.Name)
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		nodectl(t, script, "thaw", dead.Name)
		if _, err := c.cs.CoreV1().Nodes().Get(ctx, dead.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			nodectl(t, script, "restart-kubelet", dead.Name)
		}
		// The labels the harness gave the Node (its zone).
		labels, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": dead.Labels}})
		if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := c.cs.CoreV1().Nodes().Patch(ctx, dead.Name, types.MergePatchType, labels, metav1.PatchOptions{})
			return err == nil, nil
		}); err != nil {
			t.Errorf("%s not registered again within 3 minutes of its kubelet's restart", dead.Name)
			return
		}
		c.waitSchedulable(dead.Name)
	}
	t.Cleanup(restore)

	if err := c.cs.CoreV1().Nodes().Delete(ctx, dead.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// A deleted Node starts a controller pass at once, and passes follow
	// every 15 s: three of them leave a live node alone.
	time.Sleep(45 * time.Second)
	if _, ok := c.nodeRecords(other)[dead.Name]; !ok {
		t.Errorf("node record of %s released while its brindled still runs", dead.Name)
	}
	if info := c.lookup(other, ip); !info.Allocated {
		t.Errorf("pod victim's %s released while %s's brindled still runs", ip, dead.Name)
	}
	// Now the machine is dead: brindled stops too.
	nodectl(t, script, "freeze", dead.Name, "brindled")
	deleted := time.Now()
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(context.Context) (bool, error) {
		_, ok := c.nodeRecords(other)[dead.Name]
		return !ok, nil
	}); err != nil {
		t.Fatalf("brindle's node record of %s still there 2 minutes after the Node was deleted", dead.Name)
	}
	t.Logf("node record of %s gone %s after its brindled stopped (the Node deleted before)", dead.Name, time.Since(deleted).Round(100*time.Millisecond))
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 2*time.Minute, true, func(context.Context) (bool, error) {
		st := c.status(other)
		for _, p := range st.Peers {
			if p.Address == deadIP {
				return false, nil
			}
		}
		for _, r := range append(st.Routes, st.Learned...) {
			if strings.Contains(r, deadIP) {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Errorf("%s still has a session or routes with %s (%s): %+v", other, dead.Name, deadIP, c.status(other))
	}
	for what, a := range map[string]string{"pod victim's": ip, "tunnel": rec.TunnelIPv4} {
		if a == "" {
			continue
		}
		if info := c.lookup(other, a); info.Allocated {
			t.Errorf("%s address %s still allocated: %+v", what, a, info)
		}
	}
	c.ipamClean(other, "after the Node was deleted")

	// The machine comes back once Kubernetes has given up its pods (the
	// pod GC deletes the pods of a deleted Node), as a repaired machine.
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, "victim", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Errorf("pod victim of the deleted Node %s still in the API after 3 minutes", dead.Name)
	}
	restore()
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(context.Context) (bool, error) {
		_, ok := c.nodeRecords(other)[dead.Name]
		return ok, nil
	}); err != nil {
		t.Errorf("brindle's node record of %s not back 3 minutes after the node returned", dead.Name)
	}
	back := c.pod("back", dead.Name, netexec(), nil)
	cli := c.pod("client", other, netexec(), nil)
	if got := c.curl(c.ns, cli.Name, back.Status.PodIP, "/hostname"); got != "back" {
		t.Errorf("client on %s -> pod back on the returned %s: %q", other, dead.Name, got)
	}
	c.ipamClean(other, "after the node came back")
}

// waitSchedulable waits until node is Ready without taints (the node
// controller takes the unreachable taints off a while after it is back).
func (c *cluster) waitSchedulable(node string) {
	c.t.Helper()
	var n *corev1.Node
	if err := wait.PollUntilContextTimeout(context.Background(), 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		n, err = c.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		return err == nil && nodeReady(n) && len(n.Spec.Taints) == 0 && !n.Spec.Unschedulable, nil
	}); err != nil {
		c.t.Errorf("%s not Ready and untainted 3 minutes after it came back: %v", node, n)
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeStatus is what `brindlectl node status -o json` prints of a node.
type nodeStatus struct {
	Peers []struct {
		Address string `json:"address"`
		Name    string `json:"name"`
		State   string `json:"state"`
	} `json:"peers"`
	Routes  []string `json:"routes"`
	Learned []string `json:"learned"`
}

func (c *cluster) status(node string) nodeStatus {
	c.t.Helper()
	out := c.mustCtl(node, "", "node", "status", "-o", "json")
	var st nodeStatus
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &st); err != nil {
		c.t.Fatalf("node status -o json on %s: %v: %s", node, err, out)
	}
	return st
}

// brindleLog returns the first line of any brindled's log holding every
// one of want.
func (c *cluster) brindleLog(want ...string) string {
	pods, err := c.cs.CoreV1().Pods("brindle-system").List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=brindle-node"})
	if err != nil {
		return ""
	}
	for _, p := range pods.Items {
		logs, err := c.cs.CoreV1().Pods("brindle-system").GetLogs(p.Name, &corev1.PodLogOptions{Container: "brindled"}).DoRaw(context.Background())
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(logs), "\n") {
			if containsAll(l, want) {
				return l
			}
		}
	}
	return ""
}
