// Package smoke is what must work on the test cluster with brindle as its
// CNI: pods on both workers with /32s from brindle's blocks, reaching each
// other, their nodes and Services (ClusterIP, NodePort), a HostPort through
// the portmap chain, DNS, a rollout of brindle's DaemonSet under traffic,
// address release on pod deletion and 50 pods at once. It runs against a
// cluster from `make k8s-up`, through test/k8s/smoke.sh (`make k8s-e2e`).
package smoke

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
)

var pool = netip.MustParsePrefix("10.244.0.0/16")

func intOrString(i int) intstr.IntOrString { return intstr.FromInt32(int32(i)) }

// ipamInfo is what `brindlectl ipam show --ip X -o json` prints.
type ipamInfo struct {
	IP        string            `json:"ip"`
	Block     string            `json:"block"`
	Affinity  string            `json:"affinity"`
	Allocated bool              `json:"allocated"`
	Handle    string            `json:"handle"`
	Attrs     map[string]string `json:"attrs"`
}

func (c *cluster) ipam(node, ip string) ipamInfo {
	c.t.Helper()
	out, err := c.brindlectl(node, "ipam", "show", "--ip", ip, "-o", "json")
	if err != nil {
		c.t.Fatalf("brindlectl ipam show --ip %s: %v", ip, err)
	}
	var info ipamInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		c.t.Fatalf("brindlectl ipam show: %v: %s", err, out)
	}
	return info
}

// TestPodAddresses: a pod on each worker has a /32 from a block of
// brindle's pool with that node's affinity, eth0 with the address alone,
// and the default route via the link-local gateway.
func TestPodAddresses(t *testing.T) {
	c := connect(t)
	for i, n := range c.workers()[:2] {
		p := c.pod(fmt.Sprintf("p%d", i), n.Name, netexec(), nil)
		ip := netip.MustParseAddr(p.Status.PodIP)
		if !pool.Contains(ip) {
			t.Errorf("pod on %s: address %s outside the pool %s", n.Name, ip, pool)
		}
		addr := c.sh(p.Name, "ip -4 -o addr show dev eth0 | awk '{print $4}'")
		if addr != ip.String()+"/32" {
			t.Errorf("pod on %s: eth0 has %q, want %s/32", n.Name, addr, ip)
		}
		if r := c.sh(p.Name, "ip -4 route show default"); !strings.HasPrefix(r, "default via 169.254.1.1 dev eth0") {
			t.Errorf("pod on %s: default route %q, want via 169.254.1.1", n.Name, r)
		}
		info := c.ipam(n.Name, ip.String())
		if !info.Allocated || info.Affinity != n.Name {
			t.Errorf("pod on %s: IPAM says %+v; want allocated in a block of %s", n.Name, info, n.Name)
		}
		t.Logf("%s on %s: %s (block %s, handle %s)", p.Name, n.Name, ip, info.Block, info.Handle)
	}
}

// TestPodToPod: pods reach each other on one node and across nodes.
func TestPodToPod(t *testing.T) {
	c := connect(t)
	w := c.workers()
	a := c.pod("a", w[0].Name, netexec(), nil)
	b := c.pod("b", w[0].Name, netexec(), nil)
	x := c.pod("x", w[1].Name, netexec(), nil)
	for _, tc := range []struct{ from, to, ip string }{
		{"a", "b", b.Status.PodIP}, {"b", "a", a.Status.PodIP},
		{"a", "x", x.Status.PodIP}, {"x", "a", a.Status.PodIP}, {"x", "b", b.Status.PodIP},
	} {
		got := c.sh(tc.from, "curl -sS -m 5 http://"+tc.ip+":8080/hostname")
		if got != tc.to {
			t.Errorf("%s -> %s (%s): got %q", tc.from, tc.to, tc.ip, got)
		}
	}
	// The client's address is seen unchanged: no NAT between pods.
	if got := c.sh("x", "curl -sS -m 5 http://"+a.Status.PodIP+":8080/clientip"); !strings.HasPrefix(got, x.Status.PodIP+":") {
		t.Errorf("a saw x as %q, want %s", got, x.Status.PodIP)
	}
}

// TestNodeAndPod: a node reaches pods on itself and on another node (the
// path kubelet probes and the apiserver take), and a pod reaches a
// host-network server on another node.
func TestNodeAndPod(t *testing.T) {
	c := connect(t)
	w := c.workers()
	p0 := c.pod("p0", w[0].Name, netexec(), nil)
	p1 := c.pod("p1", w[1].Name, netexec(), nil)
	host := netexec("--http-port=18080")
	host.Containers[0].Args = []string{"netexec", "--http-port=18080", "--udp-port=-1"}
	host.Containers[0].Ports = nil
	host.Containers[0].ReadinessProbe.HTTPGet.Port = intOrString(18080)
	host.HostNetwork = true
	h := c.pod("host", w[0].Name, host, nil)
	for _, ip := range []string{p0.Status.PodIP, p1.Status.PodIP} {
		if got := c.sh(h.Name, "curl -sS -m 5 http://"+ip+":8080/hostname"); got != "p0" && got != "p1" {
			t.Errorf("node %s -> pod %s: %q", w[0].Name, ip, got)
		}
	}
	if got := c.sh("p1", "curl -sS -m 5 http://"+nodeIP(w[0])+":18080/hostname"); got != w[0].Name {
		t.Errorf("pod on %s -> node %s: got %q, want the node's hostname", w[1].Name, w[0].Name, got)
	}
}

// TestServices: a ClusterIP Service and a NodePort Service (kube-proxy)
// over pods on both workers, from a pod and from another node.
func TestServices(t *testing.T) {
	c := connect(t)
	w := c.workers()
	lbl := map[string]string{"app": "web"}
	c.pod("web0", w[0].Name, netexec(), lbl)
	c.pod("web1", w[1].Name, netexec(), lbl)
	c.pod("client", w[1].Name, netexec(), nil)
	svc, err := c.cs.CoreV1().Services(c.ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: lbl,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intOrString(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	np := strconv.Itoa(int(svc.Spec.Ports[0].NodePort))
	for _, target := range []string{svc.Spec.ClusterIP + ":80", nodeIP(w[0]) + ":" + np, nodeIP(w[1]) + ":" + np} {
		seen := map[string]bool{}
		// Both endpoints answer, sooner or later (kube-proxy picks at random).
		for i := 0; i < 40 && len(seen) < 2; i++ {
			seen[c.sh("client", "curl -sS -m 5 --retry 3 --retry-all-errors http://"+target+"/hostname")] = true
		}
		if !seen["web0"] || !seen["web1"] {
			t.Errorf("service at %s: answered by %v, want web0 and web1", target, seen)
		}
	}
}

// TestHostPort: a hostPort reaches the pod through the portmap plugin in
// brindle's chain, from a pod on the other node.
func TestHostPort(t *testing.T) {
	c := connect(t)
	w := c.workers()
	spec := netexec()
	spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 30888, Protocol: corev1.ProtocolTCP}}
	c.pod("hp", w[0].Name, spec, nil)
	c.pod("client", w[1].Name, netexec(), nil)
	if got := c.sh("client", "curl -sS -m 5 http://"+nodeIP(w[0])+":30888/hostname"); got != "hp" {
		t.Errorf("hostPort %s:30888: got %q, want hp", nodeIP(w[0]), got)
	}
}

// TestDNS: names resolve through CoreDNS at the kube-dns Service.
func TestDNS(t *testing.T) {
	c := connect(t)
	w := c.workers()
	c.pod("dns", w[0].Name, netexec(), nil)
	out := c.sh("dns", "dig +short +search kubernetes.default A")
	if out != "10.96.0.1" {
		t.Errorf("kubernetes.default: %q, want 10.96.0.1", out)
	}
	out = c.sh("dns", "dig +short kube-dns.kube-system.svc.cluster.local A")
	if out != "10.96.0.10" {
		t.Errorf("kube-dns.kube-system.svc.cluster.local: %q, want 10.96.0.10", out)
	}
	// A name outside the cluster gets an answer at once, never a forward.
	if out := c.sh("dns", "dig +time=2 +tries=1 example.com A | grep -c 'status: NXDOMAIN\\|status: REFUSED\\|status: SERVFAIL' || true"); out != "1" {
		t.Errorf("example.com: want a local negative answer, got %q", out)
	}
}

// TestRolloutUnderTraffic: `kubectl rollout restart daemonset/brindle-node`
// while a pod on one worker opens a new connection to a pod on the other
// every 100 ms and a long-lived connection streams between them: no
// request fails, the stream has no gap, and a pod created during the
// rollout works.
func TestRolloutUnderTraffic(t *testing.T) {
	c := connect(t)
	w := c.workers()
	srvSpec := netexec()
	srvSpec.Containers = append(srvSpec.Containers, corev1.Container{Name: "listen", Image: agnhost,
		Command: []string{"sh", "-c", "nc -lk -p 9000 > /tmp/stream"}})
	srv := c.pod("srv", w[0].Name, srvSpec, nil)
	ip := srv.Status.PodIP
	// The stream: a numbered line every tenth of a second over one TCP
	// connection that must last the whole rollout.
	cli := netexec()
	cli.Containers = append(cli.Containers,
		corev1.Container{Name: "requests", Image: agnhost, Command: []string{"sh", "-c",
			"while true; do if curl -sS -m 2 -o /dev/null http://" + ip + ":8080/hostname; then echo ok; else echo FAIL $(date +%T.%N); fi; sleep 0.1; done"}},
		corev1.Container{Name: "stream", Image: agnhost, Command: []string{"sh", "-c",
			"i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done | nc " + ip + " 9000; echo STREAM-ENDED"}},
	)
	c.pod("cli", w[1].Name, cli, nil)
	time.Sleep(3 * time.Second)

	restartAt := time.Now()
	if _, err := c.cs.AppsV1().DaemonSets("brindle-system").Patch(context.Background(), "brindle-node", "application/strategic-merge-patch+json",
		[]byte(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"`+restartAt.Format(time.RFC3339)+`"}}}}}`),
		metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var during *corev1.Pod
	if err := wait.PollUntilContextTimeout(context.Background(), time.Second, 5*time.Minute, false, func(ctx context.Context) (bool, error) {
		ds, err := c.cs.AppsV1().DaemonSets("brindle-system").Get(ctx, "brindle-node", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if during == nil && ds.Status.UpdatedNumberScheduled >= 1 {
			// The rollout is under way: a pod made now must work too.
			during = c.create("during", w[1].Name, netexec(), nil)
		}
		return ds.Status.ObservedGeneration >= ds.Generation && ds.Status.UpdatedNumberScheduled == ds.Status.DesiredNumberScheduled &&
			ds.Status.NumberAvailable == ds.Status.DesiredNumberScheduled, nil
	}); err != nil {
		t.Fatalf("rollout did not finish: %v", err)
	}
	rollout := time.Since(restartAt)
	time.Sleep(3 * time.Second)
	if during == nil {
		t.Fatal("the rollout finished before a pod could be created during it")
	}
	c.waitRunning("during")
	if got := c.sh("during", "curl -sS -m 5 http://"+ip+":8080/hostname"); got != "srv" {
		t.Errorf("pod created during the rollout -> srv: %q", got)
	}

	logs, err := c.cs.CoreV1().Pods(c.ns).GetLogs("cli", &corev1.PodLogOptions{Container: "requests"}).DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ok, failed := strings.Count(string(logs), "ok\n"), strings.Count(string(logs), "FAIL")
	if failed != 0 || ok == 0 {
		t.Errorf("requests during the rollout: %d ok, %d failed:\n%s", ok, failed, grep(string(logs), "FAIL"))
	}
	stream, err := c.exec(c.ns, "srv", "listen", "cat", "/tmp/stream")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(stream)
	gaps := 0
	for i, l := range lines {
		if n, err := strconv.Atoi(l); err != nil || n != i+1 {
			gaps++
		}
	}
	streamLogs, _ := c.cs.CoreV1().Pods(c.ns).GetLogs("cli", &corev1.PodLogOptions{Container: "stream"}).DoRaw(context.Background())
	if len(lines) == 0 || gaps != 0 || strings.Contains(string(streamLogs), "STREAM-ENDED") {
		t.Errorf("the long-lived connection: %d lines, %d out of order, ended=%v", len(lines), gaps, strings.Contains(string(streamLogs), "STREAM-ENDED"))
	}
	t.Logf("rollout of brindle-node took %s: %d new connections ok, %d failed; stream of %d lines unbroken", rollout.Round(time.Second), ok, failed, len(lines))
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestDeleteReleases: deleting a pod releases its address (kubelet's DEL
// through containerd).
func TestDeleteReleases(t *testing.T) {
	c := connect(t)
	w := c.workers()
	p := c.pod("gone", w[0].Name, netexec(), nil)
	ip := p.Status.PodIP
	if info := c.ipam(w[0].Name, ip); !info.Allocated {
		t.Fatalf("%s not allocated while its pod runs: %+v", ip, info)
	}
	if err := c.cs.CoreV1().Pods(c.ns).Delete(context.Background(), p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		return !c.ipam(w[0].Name, ip).Allocated, nil
	})
	if err != nil {
		t.Fatalf("%s still allocated after its pod was deleted: %+v", ip, c.ipam(w[0].Name, ip))
	}
}

// TestFiftyPods: 50 pods created at once across the workers all run, each
// with its own address; the time to all Running is logged.
func TestFiftyPods(t *testing.T) {
	c := connect(t)
	replicas := int32(50)
	lbl := map[string]string{"app": "fifty"}
	zero := int64(1)
	start := time.Now()
	_, err := c.cs.AppsV1().Deployments(c.ns).Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "fifty"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbl},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{
					Name: "c", Image: agnhost, Args: []string{"pause"},
					Resources: corev1.ResourceRequirements{},
				}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var running int
	var pods *corev1.PodList
	err = wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err = c.cs.CoreV1().Pods(c.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=fifty"})
		if err != nil {
			return false, nil
		}
		running = 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				running++
			}
		}
		return running == int(replicas), nil
	})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%d of %d pods running after %s", running, replicas, took.Round(time.Second))
	}
	ips, nodes := map[string]string{}, map[string]int{}
	for _, p := range pods.Items {
		if other, dup := ips[p.Status.PodIP]; dup {
			t.Errorf("pods %s and %s both have %s", other, p.Name, p.Status.PodIP)
		}
		ips[p.Status.PodIP] = p.Name
		nodes[p.Spec.NodeName]++
	}
	if len(nodes) < 2 {
		t.Errorf("50 pods on %v: want them across both workers", nodes)
	}
	t.Logf("50 pods Running in %s (per node %v)", took.Round(100*time.Millisecond), nodes)
}
