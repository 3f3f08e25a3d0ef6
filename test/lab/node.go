package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam"
)

// HealthAddr is where each node's brindled serves health, metrics and
// status, inside the node's namespace.
const HealthAddr = "127.0.0.1:9099"

// Node is one test host: a namespace on the underlay running brindled.
type Node struct {
	lab    *Lab
	Name   string
	NS     ns.NetNS
	Addr   netip.Prefix
	Addr6  netip.Prefix // valid in an IPv6 lab
	Subnet int
	index  int
	dir    string
	apiDir string
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList

	// ExtraArgs are brindled flags for this node only, after the lab's
	// (a later flag wins).
	ExtraArgs []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	pods map[string]*Pod
}

// Pod is a pod attached on a node.
type Pod struct {
	Node     *Node
	Name     string
	NS       ns.NetNS
	Addr     netip.Addr
	Addr6    netip.Addr // valid in an IPv6 lab
	HostVeth string
	rt       *libcni.RuntimeConf
	// cleanup detaches the pod (if still attached) and removes its netns.
	cleanup   func()
	nsCleanup func()
}

func (l *Lab) addNode(i int) (*Node, error) {
	subnet := 0
	if l.cfg.Subnets > 1 && i >= l.cfg.Nodes-l.cfg.SecondSubnetNodes {
		subnet = 1
	}
	addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(subnet + 1), byte(11 + i)}), 24)
	n := &Node{lab: l, Name: fmt.Sprintf("node-%d", i+1), Addr: addr, Subnet: subnet, pods: map[string]*Pod{}, index: i}
	if l.cfg.IPv6 {
		n.Addr6 = netip.MustParsePrefix(fmt.Sprintf("fd00:198:19:%d::%x/64", subnet+1, 11+i))
	}
	n.dir = filepath.Join(l.cfg.Dir, n.Name)
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, err
	}
	apiDir, err := os.MkdirTemp("", "brindle-api-")
	if err != nil {
		return nil, err
	}
	l.onClose(func() { os.RemoveAll(apiDir) })
	n.apiDir = apiDir
	nsh, cleanup, err := testenv.CreateNS()
	if err != nil {
		return nil, err
	}
	l.onClose(cleanup)
	n.NS = nsh
	if err := nsh.Do(func(ns.NetNS) error { return noDAD() }); err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	// The uplink: eth0 in the node, its peer on the subnet's bridge.
	peer := fmt.Sprintf("n%d", i+1)
	if err := l.plug(nsh, peer, subnet); err != nil {
		return nil, fmt.Errorf("%s uplink: %w", n.Name, err)
	}
	err = nsh.Do(func(ns.NetNS) error {
		for _, name := range []string{"lo", "eth0"} {
			if err := linkUp(name); err != nil {
				return err
			}
		}
		if err := addAddr("eth0", addr); err != nil {
			return err
		}
		eth0, _ := netlink.LinkByName("eth0")
		if n.Addr6.IsValid() {
			if err := addAddr("eth0", n.Addr6); err != nil {
				return err
			}
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gateway6(subnet).AsSlice()}); err != nil {
				return fmt.Errorf("IPv6 default route: %w", err)
			}
		}
		// A default route: proxy ARP answers for 169.254.1.1 only when
		// the node routes it elsewhere.
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gateway(subnet).AsSlice()})
	})
	if err != nil {
		return nil, fmt.Errorf("%s network: %w", n.Name, err)
	}
	n.cni = testenv.NewCNIConfig(l.cfg.BinDir, filepath.Join(n.dir, "cni-cache"))
	conflist, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "k8s-pod-network", "plugins": []any{map[string]any{
		"type": "brindle", "logFile": filepath.Join(n.dir, "cni.log"), "logLevel": "debug",
		"mtuFile": n.MTUFile(),
		"ipam":    map[string]any{"type": "brindle-ipam", "etcd_endpoints": l.EtcdURL, "nodename_file": n.nodenameFile(), "assign_ipv6": l.cfg.IPv6},
	}}})
	if n.list, err = libcni.NetworkConfFromBytes(conflist); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Node) nodenameFile() string { return filepath.Join(n.dir, "nodename") }

// MTUFile is where the node's brindled writes the pods' MTU.
func (n *Node) MTUFile() string { return filepath.Join(n.dir, "mtu") }

// NodeAPISocket is the node's brindled node API socket (capture, pod), in
// a short directory of its own: a unix socket path has at most 107 bytes.
func (n *Node) NodeAPISocket() string { return filepath.Join(n.apiDir, "api.sock") }

// LogFile is the node's brindled log.
func (n *Node) LogFile() string { return filepath.Join(n.dir, "brindled.log") }

// Start runs brindled in the node's namespace.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(n.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{"--nodename", n.Name, "--nodename-file", n.nodenameFile(), "--mtu-file", n.MTUFile(), "--ip", "autodetect",
		"--etcd-endpoints", n.lab.EtcdURL, "--health-listen", HealthAddr, "--log-level", "debug",
		"--nodeapi-socket", n.NodeAPISocket(),
		"--state-file", filepath.Join(n.dir, "state.json")}, n.lab.cfg.DaemonArgs...)
	if n.lab.cfg.NodeArgs != nil {
		args = append(args, n.lab.cfg.NodeArgs(n.index)...)
	}
	args = append(args, n.ExtraArgs...)
	cmd := exec.Command(filepath.Join(n.lab.cfg.BinDir, "brindled"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The daemon dies with the lab, even if the test process is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited, err := testenv.StartIn(n.NS, cmd)
	if err != nil {
		logf.Close()
		return fmt.Errorf("%s: start brindled: %w", n.Name, err)
	}
	done := make(chan struct{})
	go func() { <-exited; logf.Close(); close(done) }()
	n.cmd, n.done = cmd, done
	return nil
}

// Stop ends brindled with SIGTERM (graceful restart keeps its routes on
// its peers) and waits for it.
func (n *Node) Stop() error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s: brindled ignored SIGTERM for 10s", n.Name)
	}
}

// Restart stops and starts brindled.
func (n *Node) Restart() error {
	if err := n.Stop(); err != nil {
		return err
	}
	return n.Start()
}

// Running reports whether brindled runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

func (n *Node) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-done
	}
	for _, p := range n.Pods() {
		p.cleanup()
	}
}

// HTTP is a client that connects from inside the node's namespace.
func (n *Node) HTTP() *http.Client {
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return etcdtest.DialIn(n.NS)(ctx, addr)
	}}}
}

// Status fetches brindled's /status.
func (n *Node) Status(ctx context.Context) (*bgpd.Status, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+HealthAddr+"/status", nil)
	res, err := n.HTTP().Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var st bgpd.Status
	return &st, json.NewDecoder(res.Body).Decode(&st)
}

// Ready asks brindled's /readyz; the error carries its reasons.
func (n *Node) Ready(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+HealthAddr+"/readyz", nil)
	res, err := n.HTTP().Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s not ready: %s", n.Name, strings.TrimSpace(string(b)))
	}
	return nil
}

// WaitReady polls /readyz until it answers 200 or ctx ends.
func (n *Node) WaitReady(ctx context.Context) error {
	var last error
	for {
		if last = n.Ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", n.Name, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (n *Node) waitRegistered(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		res, err := n.lab.Etcd.Get(ctx, ipam.Prefix+"nodes/"+n.Name)
		if err == nil && len(res.Kvs) == 1 {
			if _, err := os.Stat(n.nodenameFile()); err == nil {
				return nil
			}
		}
		if !n.Running() {
			return fmt.Errorf("%s: %w", n.Name, errStopped)
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile(n.LogFile())
			return fmt.Errorf("%s did not register: %w\n%s\n%s", n.Name, ctx.Err(), b, n.diagnose())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Routes lists the node's kernel routes with brindle's protocol, as text.
func (n *Node) Routes() ([]string, error) {
	var out []string
	err := n.NS.Do(func(ns.NetNS) error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		rs, err := bgpd.Netlink{H: h}.List()
		for _, r := range rs {
			s := r.Dst.String()
			if r.Type == 6 { // RTN_BLACKHOLE
				s = "blackhole " + s
			} else if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			out = append(out, s)
		}
		return err
	})
	return out, err
}

// AddPod creates a pod namespace and attaches it through the real plugins.
func (n *Node) AddPod(ctx context.Context, name string) (*Pod, error) {
	pns, cleanup, err := testenv.CreateNS()
	if err != nil {
		return nil, err
	}
	p := &Pod{Node: n, Name: name, NS: pns, nsCleanup: cleanup, HostVeth: conf.HostVethName("default", name, ""),
		rt: &libcni.RuntimeConf{ContainerID: "ctr-" + name, NetNS: pns.Path(), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}}}}
	var res *current.Result
	err = n.NS.Do(func(ns.NetNS) error {
		r, err := n.cni.AddNetworkList(ctx, n.list, p.rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		cleanup()
		b, _ := os.ReadFile(filepath.Join(n.dir, "cni.log"))
		return nil, fmt.Errorf("%s: ADD %s: %w\n%s", n.Name, name, err, tail(string(b), 2000))
	}
	for _, ipc := range res.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		if a = a.Unmap(); a.Is4() {
			p.Addr = a
		} else {
			p.Addr6 = a
		}
	}
	p.cleanup = func() {
		_ = n.NS.Do(func(ns.NetNS) error { return n.cni.DelNetworkList(context.Background(), n.list, p.rt) })
		cleanup()
	}
	n.mu.Lock()
	n.pods[name] = p
	n.mu.Unlock()
	return p, nil
}

// AddInterface attaches another interface (e.g. net1) to a pod through the
// same plugins, as a runtime does for a pod on a second network, and returns
// its IPv4 address and host veth. DelPod and Close detach it too.
func (n *Node) AddInterface(ctx context.Context, p *Pod, ifname string) (netip.Addr, string, error) {
	rt := *p.rt
	rt.IfName = ifname
	var res *current.Result
	err := n.NS.Do(func(ns.NetNS) error {
		r, err := n.cni.AddNetworkList(ctx, n.list, &rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("%s: ADD %s %s: %w", n.Name, p.Name, ifname, err)
	}
	var addr netip.Addr
	for _, ipc := range res.IPs {
		if a, _ := netip.AddrFromSlice(ipc.Address.IP); a.Unmap().Is4() {
			addr = a.Unmap()
		}
	}
	prev := p.cleanup
	p.cleanup = func() {
		_ = n.NS.Do(func(ns.NetNS) error { return n.cni.DelNetworkList(context.Background(), n.list, &rt) })
		prev()
	}
	return addr, conf.HostVethNameIf("default", p.Name, "", ifname), nil
}

// DelPod detaches and removes a pod.
func (n *Node) DelPod(ctx context.Context, p *Pod) error {
	err := n.NS.Do(func(ns.NetNS) error { return n.cni.DelNetworkList(ctx, n.list, p.rt) })
	n.mu.Lock()
	delete(n.pods, p.Name)
	n.mu.Unlock()
	p.cleanup = func() {}
	p.nsCleanup()
	return err
}

// Pods lists the node's pods.
func (n *Node) Pods() []*Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Pod, 0, len(n.pods))
	for _, p := range n.pods {
		out = append(out, p)
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// diagnose describes the node's network, for errors.
func (n *Node) diagnose() string {
	var out strings.Builder
	for _, c := range []struct {
		where string
		ns    ns.NetNS
		args  []string
	}{
		{"", n.NS, []string{"ip", "-br", "addr"}}, {"", n.NS, []string{"ip", "neigh"}},
		{"", n.NS, []string{"ip", "route"}}, {"", n.NS, []string{"ss", "-tn"}},
		{"underlay ", n.lab.Underlay, []string{"ip", "-br", "link"}}, {"underlay ", n.lab.Underlay, []string{"ip", "neigh"}},
		{"underlay ", n.lab.Underlay, []string{"ss", "-ltn"}},
	} {
		o, _ := Run(c.ns, c.args...)
		fmt.Fprintf(&out, "%s$ %s\n%s", c.where, strings.Join(c.args, " "), o)
	}
	b, _ := os.ReadFile(filepath.Join(n.lab.cfg.Dir, "etcd", "etcd.log"))
	return out.String() + "etcd log:\n" + string(b)
}

// Ctl runs brindlectl on the node (in its namespace, against the lab's
// etcd and the node's brindled) and returns its output.
func (n *Node) Ctl(args ...string) (string, error) {
	return Run(n.NS, append([]string{filepath.Join(n.lab.cfg.BinDir, "brindlectl"), "--etcd-endpoints", n.lab.EtcdURL}, args...)...)
}

// PID is brindled's process ID (0 when it is not running).
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// RSS is brindled's resident memory in bytes.
func (n *Node) RSS() (int64, error) { return n.status("VmRSS") }

// RSSAnon is the part of RSS that is brindled's own (heap, stacks): RSS
// also counts the pages of its executable it has mapped, which every
// brindled on the machine shares.
func (n *Node) RSSAnon() (int64, error) { return n.status("RssAnon") }

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// ProcCPU is the user and system time a process has used so far (all its
// threads, those that ended included).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

func (n *Node) status(field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.PID()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s for pid %d", field, n.PID())
}
