package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// killPlan tells killerExec to SIGKILL the next plugin it runs, with its
// whole process group, after delay. brindle runs brindle-ipam's code in its
// own process (plugins/routed/ipam.go), so that is the plugin killed in the
// middle of its IPAM work as well as of its veth work.
type killPlan struct {
	delay time.Duration
}

// killerExec runs CNI plugins the way libcni does, in a process group of
// their own, and SIGKILLs them at a chosen moment when a plan is armed: a
// node rebooted or a runtime timing out mid-ADD.
type killerExec struct {
	version.PluginDecoder
	mu     sync.Mutex
	plan   *killPlan
	killed atomic.Int64
}

func (k *killerExec) arm(p killPlan) { k.mu.Lock(); k.plan = &p; k.mu.Unlock() }

func (k *killerExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (k *killerExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	k.mu.Lock()
	plan := k.plan
	k.plan = nil
	k.mu.Unlock()
	cmd := exec.CommandContext(ctx, pluginPath)
	cmd.Env, cmd.Stdin = environ, bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if plan != nil {
		pid := cmd.Process.Pid
		t := time.AfterFunc(plan.delay, func() {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			k.killed.Add(1)
		})
		defer t.Stop()
	}
	if err := cmd.Wait(); err != nil {
		// A plugin's error is JSON on stdout; a killed one printed nothing.
		if out.Len() > 0 {
			var e types.Error
			if json.Unmarshal(out.Bytes(), &e) == nil && e.Msg != "" {
				return nil, &e
			}
		}
		return nil, fmt.Errorf("%s: %w (stderr %q)", filepath.Base(pluginPath), err, errb.String())
	}
	return out.Bytes(), nil
}

// cniNode runs brindle with brindle-ipam on a lab node through libcni.
type cniNode struct {
	n    *lab.Node
	cni  *libcni.CNIConfig
	exec *killerExec
	list *libcni.NetworkConfigList
	log  string
}

func newCNINode(t *testing.T, l *lab.Lab, n *lab.Node, bin string, etcd []string, timeout int) *cniNode {
	t.Helper()
	c := &cniNode{n: n, exec: &killerExec{}, log: filepath.Join(n.Dir(), "cni.log")}
	c.cni = libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(n.Dir(), "cni-cache-faults"), c.exec)
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "k8s-pod-network", "plugins": []any{map[string]any{
		"type": "brindle", "logFile": c.log, "mtu": 1500,
		"ipam": map[string]any{"type": "brindle-ipam", "etcd_endpoints": strings.Join(etcd, ","), "nodename_file": n.NodenameFile(),
			"timeout_seconds": timeout},
	}}})
	var err error
	if c.list, err = libcni.NetworkConfFromBytes(b); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cniNode) rt(podNS ns.NetNS, id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: podNS.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "faults"}, {"K8S_POD_NAME", id}}}
}

// add runs ADD in the node's namespace and returns the pod's IPv4 address.
func (c *cniNode) add(ctx context.Context, rt *libcni.RuntimeConf) (string, error) {
	var addr string
	err := c.n.NS.Do(func(ns.NetNS) error {
		r, err := c.cni.AddNetworkList(ctx, c.list, rt)
		if err != nil {
			return err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		var res struct {
			IPs []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		if err := json.Unmarshal(b, &res); err != nil || len(res.IPs) == 0 {
			return fmt.Errorf("ADD result %s: %v", b, err)
		}
		addr = strings.TrimSuffix(res.IPs[0].Address, "/32")
		return nil
	})
	return addr, err
}

func (c *cniNode) del(ctx context.Context, rt *libcni.RuntimeConf) error {
	return c.n.NS.Do(func(ns.NetNS) error { return c.cni.DelNetworkList(ctx, c.list, rt) })
}

// delUntilDone is the runtime retrying a DEL until it succeeds.
func (c *cniNode) delUntilDone(ctx context.Context, rt *libcni.RuntimeConf) error {
	var err error
	for range 5 {
		if err = c.del(ctx, rt); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (c *cniNode) gc(ctx context.Context) error {
	return c.n.NS.Do(func(ns.NetNS) error { return c.cni.GCNetworkList(ctx, c.list, &libcni.GCArgs{}) })
}

// hostVeths lists the bri* links left in the node's namespace.
func (c *cniNode) hostVeths() []string {
	var out []string
	_ = c.n.NS.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "bri") {
				out = append(out, l.Attrs().Name)
			}
		}
		return err
	})
	return out
}

// podIfaces lists the interfaces other than lo in a pod namespace.
func podIfaces(p ns.NetNS) []string {
	var out []string
	_ = p.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				out = append(out, l.Attrs().Name)
			}
		}
		return err
	})
	return out
}

// live records which pod holds each address, cluster-wide, to catch an
// address handed out twice.
type live struct {
	mu   sync.Mutex
	by   map[string]string
	dups []string
}

func (l *live) add(addr, who string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if other, ok := l.by[addr]; ok {
		l.dups = append(l.dups, fmt.Sprintf("%s given to %s while %s holds it", addr, who, other))
	}
	l.by[addr] = who
}

func (l *live) remove(addr string) {
	l.mu.Lock()
	delete(l.by, addr)
	l.mu.Unlock()
}

// podPool is a few reusable pod namespaces per node (creating one per
// cycle would be most of the cost).
func podPool(t *testing.T, n int) []ns.NetNS {
	t.Helper()
	out := make([]ns.NetNS, n)
	for i := range out {
		out[i] = testenv.NewNS(t)
	}
	return out
}

func randDelay(max time.Duration) time.Duration { return time.Duration(rand.Int64N(int64(max))) }

func clientv3WithPrefixCount() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}
