package enforcer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/brindle-net/brindle/internal/kubetest"
	"github.com/brindle-net/brindle/internal/testenv"
	brpolicy "github.com/brindle-net/brindle/policy"
	"github.com/brindle-net/brindle/policy/enforcer"
	"github.com/brindle-net/brindle/policy/nft"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// One apiserver for the package: each test works in namespaces of its own.
var (
	apiOnce sync.Once
	api     *kubetest.Server
	apiErr  error
)

func apiserver(t *testing.T) *kubetest.Server {
	t.Helper()
	apiOnce.Do(func() {
		dir, err := os.MkdirTemp("", "brindle-kubetest-")
		if err != nil {
			apiErr = err
			return
		}
		api, apiErr = kubetest.Run(dir)
	})
	if apiErr != nil {
		t.Skipf("SKIP: %v (build it with `make kubetest-bins`)", apiErr)
	}
	return api
}

// node is a host namespace with the real brindle plugin (host-local IPAM)
// behind libcni, and an enforcer writing its table inet brindle from the
// real apiserver.
type node struct {
	t    *testing.T
	name string
	host *testenv.Host
	cs   kubernetes.Interface
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
	w    *nft.Writer
	e    *enforcer.Enforcer
	stop context.CancelFunc
	done chan struct{}
	cfg  enforcer.Config
}

var nodeSeq int

func newNode(t *testing.T, cs kubernetes.Interface, subnet string) *node {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.BinDir(t, "brindle")
	dir := t.TempDir()
	nodeSeq++
	n := &node{t: t, name: fmt.Sprintf("node-%d", nodeSeq), host: testenv.NewHost(t), cs: cs,
		cni: testenv.NewCNIConfig(bin, filepath.Join(dir, "cache"))}
	conflist, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": []any{map[string]any{
		"type": "brindle", "logFile": filepath.Join(dir, "cni.log"), "logLevel": "debug",
		"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(dir, "ipam"), "ranges": [][]map[string]string{{{"subnet": subnet}}}},
	}}})
	var err error
	if n.list, err = libcni.NetworkConfFromBytes(conflist); err != nil {
		t.Fatal(err)
	}
	h, err := netns.GetFromPath(n.host.NS.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.Close)
	n.w = &nft.Writer{NetNS: int(n.host.NS.Fd())}
	n.cfg = enforcer.Config{
		Log:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Writer: n.w, Netlink: nl, NetNS: h, FlushConntrack: true, LogGroup: 44,
		Nodes: func() ([]netip.Addr, bool) { return nil, true },
	}
	n.start()
	t.Cleanup(n.halt)
	return n
}

// start runs an enforcer (a brindled's policy side) for the node.
func (n *node) start() {
	cfg := n.cfg
	cfg.Kube = enforcer.NewKube(n.cs.CoreV1().RESTClient(), n.cs.NetworkingV1().RESTClient(), n.name)
	n.e = enforcer.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	n.stop, n.done = cancel, make(chan struct{})
	go func() { defer close(n.done); _ = n.e.Run(ctx) }()
}

// halt stops the enforcer; the table stays in the kernel.
func (n *node) halt() {
	if n.stop != nil {
		n.stop()
		<-n.done
		n.stop = nil
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// pod is a pod object in the API and, once attached, its network
// namespace with a TCP echo server on port 80.
type pod struct {
	ns, name string
	host     string // the node's netns path
	netns    ns.NetNS
	addr     netip.Addr
	rt       *libcni.RuntimeConf
}

// createPod writes the Pod (scheduled to n, with a named port http=80)
// as the scheduler would; attach then runs the CNI ADD as the kubelet
// would.
func (n *node) createPod(namespace, name string, labels map[string]string) *pod {
	n.t.Helper()
	_, err := n.cs.CoreV1().Pods(namespace).Create(n.t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "c", Image: "agnhost",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		n.t.Fatalf("create pod %s/%s: %v", namespace, name, err)
	}
	return &pod{ns: namespace, name: name}
}

func (n *node) attach(p *pod) { n.add(p, true) }

// attachNoPod runs the ADD of a pod that the API does not know.
func (n *node) attachNoPod(p *pod) { n.add(p, false) }

func (n *node) add(p *pod, known bool) {
	n.t.Helper()
	pns := testenv.NewNS(n.t)
	p.netns, p.host = pns, n.host.NS.Path()
	p.rt = &libcni.RuntimeConf{ContainerID: "ctr-" + p.ns + "-" + p.name, NetNS: pns.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.ns}, {"K8S_POD_NAME", p.name}}}
	var res *current.Result
	err := testenv.Do(n.t, n.host.NS, func() error {
		r, err := n.cni.AddNetworkList(context.Background(), n.list, p.rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		n.t.Fatalf("ADD %s/%s: %v", p.ns, p.name, err)
	}
	p.addr, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	n.t.Cleanup(func() {
		_ = testenv.Do(n.t, n.host.NS, func() error { return n.cni.DelNetworkList(context.Background(), n.list, p.rt) })
	})
	if !known {
		echo(n.t, p)
		return
	}
	// The kubelet reports the address.
	po, err := n.cs.CoreV1().Pods(p.ns).Get(n.t.Context(), p.name, metav1.GetOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
	po.Status.Phase, po.Status.PodIP, po.Status.PodIPs = corev1.PodRunning, p.addr.String(), []corev1.PodIP{{IP: p.addr.String()}}
	if _, err := n.cs.CoreV1().Pods(p.ns).UpdateStatus(n.t.Context(), po, metav1.UpdateOptions{}); err != nil {
		n.t.Fatal(err)
	}
	echo(n.t, p)
}

// echo serves TCP port 80 in the pod: each connection gets back what it
// sends.
func echo(t *testing.T, p *pod) {
	var l net.Listener
	err := p.netns.Do(func(ns.NetNS) (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(p.addr.String(), "80"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

// dial connects from one pod to another's port 80, within 300ms.
func dial(from, to *pod) (net.Conn, error) {
	var c net.Conn
	err := from.netns.Do(func(ns.NetNS) (err error) {
		c, err = (&net.Dialer{Timeout: 300 * time.Millisecond}).Dial("tcp", net.JoinHostPort(to.addr.String(), "80"))
		return err
	})
	return c, err
}

func reach(from, to *pod) bool {
	c, err := dial(from, to)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// settle bounds how long a change may take to show in the kernel on a
// loaded machine (CI: 2 cores, the whole suite): a bound against hanging,
// not a target. Times are measured by make bench-policy.
const settle = 30 * time.Second

// reachable is reach, given a few tries: for checks that something stays
// allowed, so that one connect slowed past its timeout by the machine's
// load is not taken for a drop.
func reachable(from, to *pod) bool {
	for range 3 {
		if reach(from, to) {
			return true
		}
	}
	return false
}

// waitPolicy waits until the node's table has the ingress chain of policy
// namespace/name: the enforcer has seen it.
func (n *node) waitPolicy(namespace, name string) {
	n.t.Helper()
	chain := "pi_" + brpolicy.PolicyID(namespace, name)
	start := time.Now()
	for {
		out, err := exec.Command("nsenter", "--net="+n.host.NS.Path(), "nft", "list", "chain", "inet", "brindle", chain).CombinedOutput()
		if err == nil {
			return
		}
		if time.Since(start) > settle {
			n.t.Fatalf("chain %s of %s/%s not in the table after %s: %v %s", chain, namespace, name, settle, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expect waits up to d for from -> to to be as want, and returns how long
// it took.
func expect(t *testing.T, from, to *pod, want bool, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if reach(from, to) == want {
			return time.Since(start)
		}
		if time.Since(start) > d {
			out, _ := exec.Command("nsenter", "--net="+from.host, "nft", "list", "ruleset").CombinedOutput()
			t.Fatalf("%s/%s -> %s/%s: reachable=%v for %s, want %v\n%s", from.ns, from.name, to.ns, to.name, !want, d, want, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// namespace creates a namespace with labels, deleted (as far as an
// apiserver without controllers deletes) at the end.
func namespace(t *testing.T, cs kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	_, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}
