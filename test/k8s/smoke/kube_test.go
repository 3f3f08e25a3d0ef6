package smoke

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

var kubeconfig = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "the test cluster's admin kubeconfig")

const agnhost = "registry.k8s.io/e2e-test-images/agnhost:2.56"

// cluster is a client for the test cluster and a namespace of the test's own.
type cluster struct {
	t   *testing.T
	cs  *kubernetes.Clientset
	cfg *rest.Config
	ns  string
	// extraNS are more namespaces of the test (kubehelpers_test.go).
	extraNS []string
}

func connect(t *testing.T) *cluster {
	t.Helper()
	if *kubeconfig == "" {
		t.Skip("no -kubeconfig: run through test/k8s/smoke.sh against a cluster from `make k8s-up`")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", *kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, cs: cs, cfg: cfg}
	name := "smoke-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.TrimRight(name, "-")
	ctx := context.Background()
	_ = cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Fatalf("namespace %s from an earlier run is still there", name)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.ns = name
	// Pods wait for the namespace's service account.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatal("no default service account")
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpPods()
		}
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return c
}

// workers are the schedulable nodes, in name order.
func (c *cluster) workers() []corev1.Node {
	c.t.Helper()
	nodes, err := c.cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	var out []corev1.Node
	for _, n := range nodes.Items {
		if !n.Spec.Unschedulable && len(n.Spec.Taints) == 0 {
			out = append(out, n)
		}
	}
	if len(out) < 2 {
		c.t.Fatalf("want at least two schedulable nodes, have %d", len(out))
	}
	return out
}

func nodeIP(n corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// pod makes a pod from the spec, on the node, and waits until it runs.
func (c *cluster) pod(name, node string, spec corev1.PodSpec, labels map[string]string) *corev1.Pod {
	c.t.Helper()
	p := c.create(name, node, spec, labels)
	return c.waitRunning(p.Name)
}

func (c *cluster) create(name, node string, spec corev1.PodSpec, labels map[string]string) *corev1.Pod {
	c.t.Helper()
	return c.createIn(c.ns, metav1.ObjectMeta{Name: name, Labels: labels}, node, spec)
}

// createIn makes the pod in namespace ns on node, with a 1 s grace period
// (not waiting for it to run).
func (c *cluster) createIn(ns string, meta metav1.ObjectMeta, node string, spec corev1.PodSpec) *corev1.Pod {
	c.t.Helper()
	spec.NodeName = node
	one := int64(1)
	spec.TerminationGracePeriodSeconds = &one
	p, err := c.cs.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{ObjectMeta: meta, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("create pod %s/%s: %v", ns, meta.Name, err)
	}
	return p
}

func (c *cluster) waitRunning(name string) *corev1.Pod {
	c.t.Helper()
	return c.runningWithin(c.ns, name, 3*time.Minute)
}

// runningWithin waits up to limit until pod ns/name runs and is ready; a
// pod that failed ends the wait at once.
func (c *cluster) runningWithin(ns, name string, limit time.Duration) *corev1.Pod {
	c.t.Helper()
	var p *corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, limit, true, func(ctx context.Context) (bool, error) {
		var err error
		p, err = c.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if p.Status.Phase == corev1.PodFailed {
			return false, fmt.Errorf("pod %s/%s failed: %s", ns, name, p.Status.Message)
		}
		return p.Status.Phase == corev1.PodRunning && isReady(p), nil
	})
	if err != nil {
		c.t.Fatalf("pod %s/%s not running within %s: %v; events: %s", ns, name, limit, err, c.eventsIn(ns, name))
	}
	return p
}

func isReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (c *cluster) events(pod string) string { return c.eventsIn(c.ns, pod) }

func (c *cluster) dumpPods() {
	pods, err := c.cs.CoreV1().Pods(c.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		c.t.Logf("pod %s on %s: %s %s ip=%s events: %s", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Message, p.Status.PodIP, c.events(p.Name))
	}
}

// exec runs a command in a pod's first container and returns its stdout.
func (c *cluster) exec(ns, pod, container string, cmd ...string) (string, error) {
	req := c.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.cfg, "POST", req.URL())
	if err != nil {
		return "", err
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	if err != nil {
		return out.String(), fmt.Errorf("exec %v in %s/%s: %w (stderr: %s)", cmd, ns, pod, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// sh runs a shell command in one of the test's pods and fails the test if it fails.
func (c *cluster) sh(pod, script string) string {
	c.t.Helper()
	out, err := c.exec(c.ns, pod, "", "sh", "-c", script)
	if err != nil {
		c.t.Fatalf("%s: %v\n%s", pod, err, out)
	}
	return strings.TrimSpace(out)
}

// brindlectl runs brindlectl in the brindle-node pod of a node (its
// environment names brindle's etcd).
func (c *cluster) brindlectl(node string, args ...string) (string, error) {
	pods, err := c.cs.CoreV1().Pods("brindle-system").List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=brindle-node", FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil || len(pods.Items) == 0 {
		return "", fmt.Errorf("no brindle-node pod on %s: %v", node, err)
	}
	return c.exec("brindle-system", pods.Items[0].Name, "brindled", append([]string{"/usr/local/bin/brindlectl"}, args...)...)
}

func netexec(args ...string) corev1.PodSpec {
	return corev1.PodSpec{Containers: []corev1.Container{{
		Name: "c", Image: agnhost, ImagePullPolicy: corev1.PullIfNotPresent,
		Args:  append([]string{"netexec", "--http-port=8080", "--udp-port=8081"}, args...),
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/hostname", Port: intOrString(8080)}},
			PeriodSeconds: 1},
	}}}
}
