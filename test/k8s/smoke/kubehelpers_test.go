package smoke

// Helpers of the TestKube* tests (issue 10: brindle and the Kubernetes
// API): brindlectl with a document on stdin, pools and reservations that
// are removed again, pods with annotations in namespaces of their own,
// events awaited by their text, and `brindlectl ipam check`.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
)

// ctl runs brindlectl in the brindle-node pod of node with stdin (may be
// empty) and returns stdout and stderr together.
func (c *cluster) ctl(node, stdin string, args ...string) (string, error) {
	pods, err := c.cs.CoreV1().Pods("brindle-system").List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=brindle-node", FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil || len(pods.Items) == 0 {
		return "", fmt.Errorf("no brindle-node pod on %s: %v", node, err)
	}
	cmd := append([]string{"/usr/local/bin/brindlectl"}, args...)
	req := c.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("brindle-system").Name(pods.Items[0].Name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "brindled", Command: cmd, Stdin: stdin != "", Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.cfg, "POST", req.URL())
	if err != nil {
		return "", err
	}
	var out, errb bytes.Buffer
	opts := remotecommand.StreamOptions{Stdout: &out, Stderr: &errb}
	if stdin != "" {
		opts.Stdin = strings.NewReader(stdin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err = ex.StreamWithContext(ctx, opts)
	all := out.String() + errb.String()
	if err != nil {
		return all, fmt.Errorf("brindlectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(all))
	}
	return all, nil
}

// mustCtl is ctl that fails the test on an error.
func (c *cluster) mustCtl(node, stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.ctl(node, stdin, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// removeAtEnd removes the pools and reservations when the test ends: after
// the test's namespaces are gone, retrying `pool delete` until the pool's
// addresses have been released. Register it before making them.
func (c *cluster) removeAtEnd(node string, pools, reservations []string) {
	c.t.Cleanup(func() { c.deletePools(node, pools, reservations) })
}

// apply is `brindlectl pool|reservation apply -f -` of docs.
func (c *cluster) apply(node, what, docs string) string {
	c.t.Helper()
	return c.mustCtl(node, docs, what, "apply", "-f", "-")
}

func (c *cluster) deletePools(node string, pools, reservations []string) {
	for _, ns := range c.extraNS {
		c.deleteNamespace(ns)
	}
	c.deleteNamespace(c.ns)
	for _, p := range pools {
		var last string
		err := wait.PollUntilContextTimeout(context.Background(), 2*time.Second, 3*time.Minute, true, func(context.Context) (bool, error) {
			out, err := c.ctl(node, "", "pool", "delete", p)
			last = out
			return err == nil || strings.Contains(out, "not found"), nil
		})
		if err != nil {
			c.t.Errorf("cleanup: pool %s not deleted: %s", p, last)
		}
	}
	for _, r := range reservations {
		if out, err := c.ctl(node, "", "reservation", "delete", r); err != nil && !strings.Contains(out, "not found") {
			c.t.Errorf("cleanup: reservation %s: %v", r, err)
		}
	}
}

// namespace makes a namespace of the test's own with annotations (set at
// creation: brindled reads a Namespace it has not cached from the API),
// deleted when the test ends.
func (c *cluster) namespace(suffix string, annotations map[string]string) string {
	c.t.Helper()
	name := c.ns + "-" + suffix
	if len(name) > 63 {
		name = name[len(name)-63:]
	}
	c.deleteNamespace(name)
	if _, err := c.cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}, metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	c.extraNS = append(c.extraNS, name)
	c.t.Cleanup(func() { c.deleteNamespace(name) })
	if err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		c.t.Fatalf("namespace %s: no default service account", name)
	}
	return name
}

// deleteNamespace deletes a namespace and waits until it is gone (its pods
// deleted, their addresses released by kubelet's DEL).
func (c *cluster) deleteNamespace(name string) {
	ctx := context.Background()
	zero := int64(0)
	_ = c.cs.CoreV1().Pods(name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	_ = c.cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		c.t.Errorf("namespace %s still there 3 minutes after its deletion", name)
	}
}

// annotated makes a pod with annotations in namespace ns on node (not
// waiting for it).
func (c *cluster) annotated(ns, name, node string, annotations map[string]string) *corev1.Pod {
	c.t.Helper()
	return c.createIn(ns, metav1.ObjectMeta{Name: name, Annotations: annotations}, node, netexec())
}

// running waits until pod ns/name runs and is ready.
func (c *cluster) running(ns, name string) *corev1.Pod {
	c.t.Helper()
	return c.runningWithin(ns, name, 4*time.Minute)
}

func (c *cluster) eventsIn(ns, pod string) string {
	ev, err := c.cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range ev.Items {
		fmt.Fprintf(&b, "%s: %s; ", e.Reason, e.Message)
	}
	return b.String()
}

// refused waits for an event of pod ns/name that holds every one of want
// (kubelet's FailedCreatePodSandBox carries the CNI plugin's error) and
// returns its message.
func (c *cluster) refused(ns, name string, want ...string) string {
	c.t.Helper()
	var msg string
	_ = wait.PollUntilContextTimeout(context.Background(), time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		ev, err := c.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, nil
		}
		for _, e := range ev.Items {
			if containsAll(e.Message, want) {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if msg == "" {
		c.t.Errorf("pod %s/%s: no event naming %q within 3 minutes; events: %s", ns, name, want, c.eventsIn(ns, name))
		return ""
	}
	if p, err := c.cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{}); err == nil && p.Status.PodIP != "" {
		c.t.Errorf("pod %s/%s was refused but has the address %s", ns, name, p.Status.PodIP)
	}
	return msg
}

func containsAll(s string, want []string) bool {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// lookup is `brindlectl ipam show --ip`; an address outside every pool is
// unallocated.
func (c *cluster) lookup(node, ip string) ipamInfo {
	c.t.Helper()
	out, err := c.ctl(node, "", "ipam", "show", "--ip", ip, "-o", "json")
	if err != nil {
		if strings.Contains(out, "not inside any pool") {
			return ipamInfo{IP: ip}
		}
		c.t.Fatal(err)
	}
	var info ipamInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		c.t.Fatalf("brindlectl ipam show --ip %s: %v: %s", ip, err, out)
	}
	return info
}

// waitFree waits until IPAM holds ip for nobody.
func (c *cluster) waitFree(node, ip string, limit time.Duration) bool {
	c.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, limit, true, func(context.Context) (bool, error) {
		return !c.lookup(node, ip).Allocated, nil
	})
	return err == nil
}

// ipamClean fails the test unless `brindlectl ipam check` finds nothing.
func (c *cluster) ipamClean(node, when string) {
	c.t.Helper()
	out, err := c.ctl(node, "", "ipam", "check", "-o", "json")
	if err != nil {
		c.t.Errorf("%s: brindlectl ipam check: %v", when, err)
		return
	}
	var r struct {
		Leaks       []json.RawMessage `json:"leaks"`
		Orphans     []json.RawMessage `json:"orphanEndpoints"`
		StaleBlocks []json.RawMessage `json:"staleBlocks"`
		Unreadable  []string          `json:"unreadable"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &r); err != nil {
		c.t.Errorf("%s: brindlectl ipam check -o json: %v: %s", when, err, out)
		return
	}
	if len(r.Leaks)+len(r.Orphans)+len(r.StaleBlocks)+len(r.Unreadable) != 0 {
		c.t.Errorf("%s: brindlectl ipam check is not clean:\n%s", when, out)
	}
}

// nodeRecord is a node as `brindlectl node list -o json` prints it.
type nodeRecord struct {
	Name       string            `json:"name"`
	IPv4       string            `json:"ipv4Address"`
	Labels     map[string]string `json:"labels"`
	TunnelIPv4 string            `json:"tunnelIPv4"`
	Kubernetes string            `json:"kubernetesNode"`
}

func (c *cluster) nodeRecords(node string) map[string]nodeRecord {
	c.t.Helper()
	out := c.mustCtl(node, "", "node", "list", "-o", "json")
	var rs []nodeRecord
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &rs); err != nil {
		c.t.Fatalf("brindlectl node list -o json: %v: %s", err, out)
	}
	m := map[string]nodeRecord{}
	for _, r := range rs {
		m[r.Name] = r
	}
	return m
}

// curl fetches path from ip:8080 in pod ns/pod (a netexec pod), retrying a
// few times: routes to a new block reach the other nodes through BGP.
func (c *cluster) curl(ns, pod, ip, path string) string {
	c.t.Helper()
	out, err := c.exec(ns, pod, "", "sh", "-c", "curl -sS -m 5 --retry 5 --retry-all-errors --retry-delay 1 http://"+ip+":8080"+path)
	if err != nil {
		c.t.Errorf("%s/%s -> %s: %v", ns, pod, ip, err)
	}
	return strings.TrimSpace(out)
}
