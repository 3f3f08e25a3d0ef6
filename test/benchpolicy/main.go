// Command benchpolicy measures NetworkPolicy enforcement: how long from a
// policy created in the API to the rules for it in every node's kernel
// (p50/p99), with 1,000 pods and 500 policies in the cluster; the CPU one
// node's rule sync spends per change; and pod-to-pod throughput with the
// 500 policies in force against none, in the same run. Root, iperf3, and
// kube-apiserver + etcd from `make kubetest-bins`:
//
//	go run ./test/benchpolicy [-pods 1000] [-policies 500] [-nodes 3] [-changes 50]
//
// The apiserver and etcd are real (internal/kubetest); each node is a
// network namespace whose table inet brindle is written by the enforcer
// brindled runs (policy/enforcer), from informers on that apiserver. Every
// pod has a real host veth and host route on its node, as the CNI plugin
// makes them; two pods per node have real network namespaces (probe client
// and server, iperf3).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/kubetest"
	"github.com/brindle-net/brindle/internal/nftquery"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/policy"
	"github.com/brindle-net/brindle/policy/enforcer"
	"github.com/brindle-net/brindle/policy/nft"
)

type opts struct {
	pods, policies, nodes, changes, namespaces int
	iperf                                      time.Duration
	cpuprofile                                 string
}

func main() {
	var o opts
	flag.IntVar(&o.pods, "pods", 1000, "pods in the cluster")
	flag.IntVar(&o.policies, "policies", 500, "NetworkPolicies in the cluster")
	flag.IntVar(&o.nodes, "nodes", 3, "nodes (network namespaces, each with its enforcer)")
	flag.IntVar(&o.namespaces, "namespaces", 20, "namespaces the pods and policies spread over")
	flag.IntVar(&o.changes, "changes", 50, "policies created and deleted for the latency figures")
	flag.DurationVar(&o.iperf, "iperf", 4*time.Second, "length of each iperf3 run")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the latency and CPU phases here")
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("benchpolicy: needs root (network namespaces)")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		fail("benchpolicy: iperf3 is not installed (scripts/install-deps.sh)")
	}
	if err := run(o); err != nil {
		fail("benchpolicy: %v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

// node is one host namespace and its enforcer.
type node struct {
	name   string
	host   *testenv.Host
	nsh    netns.NsHandle
	e      *enforcer.Enforcer
	client *probe
	server *probe
	stop   context.CancelFunc
	// commits is signalled after every nftables transaction committed in
	// the node's namespace (a monitor of the nftables netlink group), so
	// that untilAll looks at the kernel when it changed, not on a timer.
	commits chan struct{}
}

// probe is a pod with a network namespace of its own.
type probe struct {
	ns, name string
	netns    ns.NetNS
	addr     netip.Addr
	cleanup  func()
}

func run(o opts) error {
	dir, err := os.MkdirTemp("", "benchpolicy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	api, err := kubetest.Run(dir)
	if err != nil {
		return err
	}
	defer api.Stop()
	cs, err := kubernetes.NewForConfig(api.Config)
	if err != nil {
		return err
	}
	ctx := context.Background()
	fmt.Printf("benchpolicy: %d pods, %d policies, %d namespaces, %d nodes (kube-apiserver v1.34.4 + etcd, table inet brindle per node)\n",
		o.pods, o.policies, o.namespaces, o.nodes)

	var nodes []*node
	defer func() {
		for _, n := range nodes {
			n.close()
		}
	}()
	for i := range o.nodes {
		n, err := newNode(fmt.Sprintf("bench-node-%d", i+1), i)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	start := time.Now()
	if err := populate(ctx, cs, nodes, o); err != nil {
		return err
	}
	fmt.Printf("cluster populated in %s\n", time.Since(start).Round(time.Millisecond))
	for _, n := range nodes {
		n.start(cs)
	}
	if err := waitPrograms(nodes, o); err != nil {
		return err
	}
	for _, n := range nodes {
		st := n.e.Status()
		fmt.Printf("%s: table written (%d endpoints, %d policies; last sync %s)\n", n.name, st.Endpoints, st.Policies, st.Took)
	}

	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer f.Close()
	}
	// Latency: a policy isolating each node's probe server, created, then
	// deleted; the clock stops when every node's kernel has it (has not).
	var stops []func()
	stopMonitors := func() {
		for _, stop := range stops {
			stop()
		}
		stops = nil
	}
	defer stopMonitors()
	for _, n := range nodes {
		stop, err := n.monitor()
		if err != nil {
			return err
		}
		stops = append(stops, stop)
	}
	var created, deleted []time.Duration
	for i := range o.changes {
		name := fmt.Sprintf("probe-deny-%d", i)
		id := policy.PolicyID("bench-probe", name)
		p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "bench-probe", Name: name},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
		t0 := time.Now()
		if _, err := cs.NetworkingV1().NetworkPolicies("bench-probe").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := untilAll(nodes, id, true); err != nil {
			return err
		}
		created = append(created, time.Since(t0)) // from before Create
		if i == 0 {
			// Once: the denial is real, not just an element.
			if reach(nodes[0].client, nodes[0].server) {
				return fmt.Errorf("the probe server is reachable though a policy isolates it")
			}
		}
		t0 = time.Now()
		if err := cs.NetworkingV1().NetworkPolicies("bench-probe").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		if _, err := untilAll(nodes, id, false); err != nil {
			return err
		}
		deleted = append(deleted, time.Since(t0))
	}
	stopMonitors()

	// CPU: the same changes, spaced out, with nothing polling: the
	// process's CPU (informers, compile, render, netlink, for every node)
	// per change and node.
	cpu0 := cpuTime()
	syncs0 := syncCount(nodes)
	for i := range o.changes {
		name := fmt.Sprintf("cpu-%d", i)
		p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "bench-probe", Name: name},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
		if _, err := cs.NetworkingV1().NetworkPolicies("bench-probe").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
		time.Sleep(150 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	cpuPerChange := (cpuTime() - cpu0) / time.Duration(o.changes*len(nodes))
	syncs := syncCount(nodes) - syncs0
	for i := range o.changes {
		_ = cs.NetworkingV1().NetworkPolicies("bench-probe").Delete(ctx, fmt.Sprintf("cpu-%d", i), metav1.DeleteOptions{})
	}

	pprof.StopCPUProfile()

	// Throughput with every policy in force, then with none.
	n0 := nodes[0]
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "bench-probe", Name: "iperf"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}}}}
	if _, err := cs.NetworkingV1().NetworkPolicies("bench-probe").Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := untilAll(nodes, policy.PolicyID("bench-probe", "iperf"), true); err != nil {
		return err
	}
	srv, err := iperfServer(n0.server)
	if err != nil {
		return err
	}
	defer srv()
	var with, without []float64
	for round := range 3 {
		waitIdle(nodes)
		g, err := iperf(n0.client, n0.server, o.iperf)
		if err != nil {
			return fmt.Errorf("iperf3 with policies: %w", err)
		}
		with = append(with, g)
		if round == 0 {
			fmt.Printf("deleting all %d policies for the comparison...\n", o.policies+1)
		}
		if err := setPolicies(ctx, cs, o, false); err != nil {
			return err
		}
		if err := cs.NetworkingV1().NetworkPolicies("bench-probe").Delete(ctx, "iperf", metav1.DeleteOptions{}); err != nil {
			return err
		}
		if _, err := untilAll(nodes, policy.PolicyID("bench-probe", "iperf"), false); err != nil {
			return err
		}
		waitPolicies(nodes, 0)
		waitIdle(nodes)
		g, err = iperf(n0.client, n0.server, o.iperf)
		if err != nil {
			return fmt.Errorf("iperf3 without policies: %w", err)
		}
		without = append(without, g)
		if err := setPolicies(ctx, cs, o, true); err != nil {
			return err
		}
		if _, err := cs.NetworkingV1().NetworkPolicies("bench-probe").Create(ctx, allow, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := untilAll(nodes, policy.PolicyID("bench-probe", "iperf"), true); err != nil {
			return err
		}
		waitPolicies(nodes, o.policies+1)
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nmeasure\tp50\tp99\tmax\n")
	fmt.Fprintf(tw, "policy created -> in every node's kernel (%d nodes, %d changes)\t%s\t%s\t%s\n", len(nodes), len(created),
		testenv.Millis(testenv.Percentile(created, 50)), testenv.Millis(testenv.Percentile(created, 99)), testenv.Millis(testenv.Percentile(created, 100)))
	fmt.Fprintf(tw, "policy deleted -> gone from every node's kernel\t%s\t%s\t%s\n",
		testenv.Millis(testenv.Percentile(deleted, 50)), testenv.Millis(testenv.Percentile(deleted, 99)), testenv.Millis(testenv.Percentile(deleted, 100)))
	tw.Flush()
	fmt.Printf("\nrule-sync CPU per change per node: %s (process CPU over %d changes x %d nodes, %d syncs; includes informers, compile of %d pods x %d policies, render, netlink)\n",
		cpuPerChange.Round(10*time.Microsecond), o.changes, len(nodes), syncs, o.pods, o.policies)
	mw, mo := testenv.Median(with), testenv.Median(without)
	fmt.Printf("pod-to-pod TCP throughput (iperf3, same node, %s x 3): %d policies %.2f Gbit/s, none %.2f Gbit/s: %.3fx\n",
		o.iperf, o.policies+1, mw, mo, mw/mo)
	return nil
}

func newNode(name string, i int) (*node, error) {
	h, cleanup, err := testenv.CreateHost()
	if err != nil {
		return nil, err
	}
	nsh, err := netns.GetFromPath(h.NS.Path())
	if err != nil {
		cleanup()
		return nil, err
	}
	n := &node{name: name, host: h, nsh: nsh, commits: make(chan struct{}, 1)}
	n.stop = func() { nsh.Close(); cleanup() }
	_ = i
	return n, nil
}

// monitor signals n.commits after every transaction committed in n's
// namespace, until the returned function is called. Should the monitor
// stop (a netlink error), untilAll still looks every 20 ms; that is
// reported.
func (n *node) monitor() (func(), error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(n.host.NS.Fd())))
	if err != nil {
		return nil, fmt.Errorf("%s: nftables: %w", n.name, err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(64))
	events, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		return nil, fmt.Errorf("%s: nftables monitor: %w", n.name, err)
	}
	closed := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		for ev := range events {
			if ev.GeneratedBy != nil && ev.GeneratedBy.Error != nil && !stopping.Load() {
				fmt.Fprintf(os.Stderr, "%s: nftables monitor: %v (looking every 20 ms from now)\n", n.name, ev.GeneratedBy.Error)
			}
			select {
			case n.commits <- struct{}{}:
			default:
			}
		}
		close(closed)
	}()
	return func() {
		stopping.Store(true)
		_ = mon.Close()
		<-closed
		_ = c.CloseLasting()
	}, nil
}

func (n *node) start(cs kubernetes.Interface) {
	nl, err := netlink.NewHandleAt(n.nsh)
	if err != nil {
		fail("netlink: %v", err)
	}
	e := enforcer.New(enforcer.Config{
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Writer: &nft.Writer{NetNS: int(n.host.NS.Fd())}, Netlink: nl, NetNS: n.nsh,
		Kube: enforcer.NewKube(cs.CoreV1().RESTClient(), cs.NetworkingV1().RESTClient(), n.name), FlushConntrack: true,
		Nodes: func() ([]netip.Addr, bool) { return nil, true },
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = e.Run(ctx) }()
	n.e = e
	prev := n.stop
	n.stop = func() { cancel(); time.Sleep(50 * time.Millisecond); nl.Close(); prev() }
}

func (n *node) close() {
	for _, p := range []*probe{n.client, n.server} {
		if p != nil && p.cleanup != nil {
			p.cleanup()
		}
	}
	n.stop()
}

// populate creates namespaces, pods (with a host veth and route each on
// its node) and policies.
func populate(ctx context.Context, cs kubernetes.Interface, nodes []*node, o opts) error {
	for i := range o.namespaces {
		nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i), Labels: map[string]string{"team": fmt.Sprintf("team-%d", i%4)}}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, nsObj, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench-probe"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for i := range o.pods {
		n := nodes[i%len(nodes)]
		ns := fmt.Sprintf("bench-%d", i%o.namespaces)
		name := fmt.Sprintf("pod-%d", i)
		addr := netip.AddrFrom4([4]byte{10, 90, byte(i >> 8), byte(i)})
		labels := map[string]string{"app": fmt.Sprintf("app-%d", (i/o.namespaces)%10), "tier": fmt.Sprintf("tier-%d", i%5)}
		if err := createPod(ctx, cs, ns, name, n.name, labels, addr); err != nil {
			return err
		}
		if err := n.hostVeth(conf.HostVethName(ns, name, ""), addr); err != nil {
			return err
		}
	}
	for i, n := range nodes {
		var err error
		if n.server, err = n.probePod("server", netip.AddrFrom4([4]byte{10, 91, byte(i), 2})); err != nil {
			return err
		}
		if n.client, err = n.probePod("client", netip.AddrFrom4([4]byte{10, 91, byte(i), 3})); err != nil {
			return err
		}
		for _, p := range []*probe{n.server, n.client} {
			if err := createPod(ctx, cs, "bench-probe", p.name, n.name, map[string]string{"app": p.name[:strings.IndexByte(p.name, '-')]}, p.addr); err != nil {
				return err
			}
		}
	}
	return setPolicies(ctx, cs, o, true)
}

func createPod(ctx context.Context, cs kubernetes.Interface, ns, name, node string, labels map[string]string, addr netip.Addr) error {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "agnhost",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
	p, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	p.Status.Phase, p.Status.PodIPs = corev1.PodRunning, []corev1.PodIP{{IP: addr.String()}}
	_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

// setPolicies creates (or deletes) the synthetic policies: each namespace
// has its share, selecting pods by app and allowing peers by tier, by
// namespace, or a named port.
func setPolicies(ctx context.Context, cs kubernetes.Interface, o opts, create bool) error {
	r := rand.New(rand.NewPCG(1, 2))
	http := intstr.FromString("http")
	for i := range o.policies {
		ns := fmt.Sprintf("bench-%d", i%o.namespaces)
		name := fmt.Sprintf("pol-%d", i)
		if !create {
			if err := cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				return err
			}
			continue
		}
		peer := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("tier-%d", r.IntN(5))}}}
		if r.IntN(3) == 0 {
			peer.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("team-%d", r.IntN(4))}}
		}
		port := networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(int32(8000 + r.IntN(100))))}
		if r.IntN(2) == 0 {
			port.Port = &http
		}
		spec := networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", r.IntN(10))}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{peer}, Ports: []networkingv1.NetworkPolicyPort{port}}}}
		if r.IntN(4) == 0 {
			spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}
			spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		}
		if _, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// hostVeth makes a pod attachment's host side as the plugin does: a veth
// named for the pod (its peer left in the node, down to nothing) and the
// host route to the pod's address.
func (n *node) hostVeth(name string, addr netip.Addr) error {
	return n.host.NS.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "p" + name[3:]}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("veth %s: %w", name, err)
		}
		for _, l := range []string{name, "p" + name[3:]} {
			link, err := netlink.LinkByName(l)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(link); err != nil {
				return err
			}
		}
		link, _ := netlink.LinkByName(name)
		return netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
	})
}

// probePod is a pod with its own namespace: eth0 with its /32, the
// gateway by proxy ARP, as the plugin makes it.
func (n *node) probePod(role string, addr netip.Addr) (*probe, error) {
	pns, cleanup, err := testenv.CreateNS()
	if err != nil {
		return nil, err
	}
	p := &probe{ns: "bench-probe", name: role + "-" + strings.TrimPrefix(n.name, "bench-"), netns: pns, addr: addr, cleanup: cleanup}
	veth := conf.HostVethName(p.ns, p.name, "")
	err = n.host.NS.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: veth, HardwareAddr: net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}},
			PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pns.Fd()))}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		for _, kv := range [][2]string{{"proxy_arp", "1"}, {"forwarding", "1"}} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+veth+"/"+kv[0], []byte(kv[1]), 0o644); err != nil {
				return err
			}
		}
		_ = os.WriteFile("/proc/sys/net/ipv4/neigh/"+veth+"/proxy_delay", []byte("0"), 0o644)
		link, _ := netlink.LinkByName(veth)
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
	})
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("probe %s: %w", p.name, err)
	}
	err = pns.Do(func(ns.NetNS) error {
		for _, args := range [][]string{{"link", "set", "lo", "up"}, {"link", "set", "eth0", "up"}, {"addr", "add", addr.String() + "/32", "dev", "eth0"},
			{"route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"}, {"route", "add", "default", "via", "169.254.1.1", "dev", "eth0"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %v: %v %s", args, err, out)
			}
		}
		return nil
	})
	if err != nil {
		cleanup()
		return nil, err
	}
	return p, nil
}

// waitPrograms waits until every node's table holds all its pods and every
// policy.
func waitPrograms(nodes []*node, o opts) error {
	deadline := time.Now().Add(5 * time.Minute)
	for _, n := range nodes {
		want := o.pods / len(nodes)
		for {
			st := n.e.Status()
			if st.Synced && st.Endpoints >= want && st.Policies >= o.policies {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: table not complete: %+v", n.name, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// waitIdle waits until no node has synced for a second: a throughput run
// must not compete with rule syncs for the CPU.
func waitIdle(nodes []*node) {
	deadline := time.Now().Add(time.Minute)
	last := syncCount(nodes)
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		n := syncCount(nodes)
		if n == last {
			return
		}
		last = n
	}
}

func waitPolicies(nodes []*node, want int) {
	deadline := time.Now().Add(2 * time.Minute)
	for _, n := range nodes {
		for n.e.Status().Policies != want && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// untilAll looks at every node's kernel (its ingress dispatch map), at
// once and then after each transaction committed there, until the probe
// server's element jumps to policy id's chain (present) or is gone, and
// returns how long that took.
func untilAll(nodes []*node, id string, present bool) (time.Duration, error) {
	start := time.Now()
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			orig, _ := netns.Get()
			defer orig.Close()
			if err := netns.Set(n.nsh); err != nil {
				errs <- err
				return
			}
			defer netns.Set(orig)
			_ = id
			for time.Since(start) < 30*time.Second {
				ok, err := nftquery.HasElement("ing4_0", n.server.addr.AsSlice())
				if err == nil && ok == present {
					errs <- nil
					return
				}
				// Look again after the next commit in the namespace (or
				// 20 ms, should a notification be lost).
				select {
				case <-n.commits:
				case <-time.After(20 * time.Millisecond):
				}
			}
			errs <- fmt.Errorf("%s: policy %s present=%v not reached in 30s", n.name, id, present)
		}()
	}
	for range nodes {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func reach(from, to *probe) bool {
	var c net.Conn
	err := from.netns.Do(func(ns.NetNS) (err error) {
		c, err = (&net.Dialer{Timeout: 500 * time.Millisecond}).Dial("tcp", net.JoinHostPort(to.addr.String(), "5201"))
		return err
	})
	if err == nil {
		c.Close()
	}
	return err == nil
}

func iperfServer(p *probe) (func(), error) {
	cmd := exec.Command("iperf3", "-s", "-B", p.addr.String(), "-p", "5201")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if _, err := testenv.StartIn(p.netns, cmd); err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond)
	return func() { _ = cmd.Process.Kill() }, nil
}

// iperf runs one iperf3 TCP test and returns its Gbit/s.
func iperf(from, to *probe, d time.Duration) (float64, error) {
	var out []byte
	var err error
	for try := 0; try < 20; try++ {
		err = from.netns.Do(func(ns.NetNS) error {
			out, err = exec.Command("iperf3", "-c", to.addr.String(), "-p", "5201", "-t", strconv.Itoa(int(d.Seconds())), "-J").CombinedOutput()
			return nil
		})
		if !strings.Contains(string(out), "unable to connect") && !strings.Contains(string(out), "busy") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil || res.Error != "" || res.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3: %v %s %s", err, res.Error, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func syncCount(nodes []*node) int {
	n := 0
	for _, x := range nodes {
		n += x.e.SyncCount()
	}
	return n
}
