package ipam

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
)

// TestBrindleWithBrindleIPAM runs the real `brindle` plugin with
// brindle-ipam as its IPAM through libcni, as containerd would: two pods on
// one node get /32s from the node's block and reach each other. CNI_PATH
// holds the brindle binary alone, so brindle-ipam's code runs in the
// plugin's process (plugins/routed/ipam.go).
func TestBrindleWithBrindleIPAM(t *testing.T) {
	testenv.RequireRoot(t)
	built := testenv.BinDir(t, "brindle", "brindle-ipam")
	bin := t.TempDir()
	if b, err := os.ReadFile(filepath.Join(built, "brindle")); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(filepath.Join(bin, "brindle"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	host := testenv.NewHost(t)
	inHost := func(f func() error) error { return testenv.Do(t, host.NS, f) }
	// etcd runs as a process in the host namespace, where the plugins run
	// and reach it on 127.0.0.1; the test's own client dials into that
	// namespace too.
	s := etcdtest.StartProcessIn(t, host.NS, built, "127.0.0.1")
	a := New(etcdgrpc.New(s.Client))
	a.Log = quietLog()
	addPool(t, a, "default", "10.244.0.0/16", nil)

	dir := t.TempDir()
	cni := testenv.NewCNIConfig(bin, filepath.Join(dir, "cache"))
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "k8s-pod-network", "plugins": []any{
		map[string]any{"type": "brindle", "logFile": filepath.Join(dir, "cni.log"), "logLevel": "debug",
			"ipam": map[string]any{"type": "brindle-ipam", "etcd_endpoints": s.Endpoint, "nodename": "node-1"}}}})
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}

	type pod struct {
		ns   ns.NetNS
		rt   *libcni.RuntimeConf
		addr netip.Addr
	}
	var pods []*pod
	for _, name := range []string{"web", "db"} {
		n := testenv.NewNS(t)
		p := &pod{ns: n, rt: &libcni.RuntimeConf{ContainerID: "ctr-" + name, NetNS: n.Path(), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}}}}
		var res *current.Result
		if err := inHost(func() error {
			r, err := cni.AddNetworkList(context.Background(), list, p.rt)
			if err != nil {
				return err
			}
			res, err = current.NewResultFromResult(r)
			return err
		}); err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		if len(res.IPs) != 1 {
			t.Fatalf("ADD %s: ips %v", name, res.IPs)
		}
		p.addr, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
		pods = append(pods, p)
	}
	var block netip.Prefix
	for _, p := range pods {
		h, err := a.HandleOf(ctxT(t), HandleID(p.rt.ContainerID, "eth0"))
		if err != nil || h == nil || h.Addrs[0].Addr != p.addr {
			t.Fatalf("handle of %s: %+v %v", p.rt.ContainerID, h, err)
		}
		bl, _ := readBlock(t, a, h.Addrs[0].Block)
		if bl.Affinity != "node-1" {
			t.Fatalf("%s from block %s of %q", p.addr, bl.CIDR, bl.Affinity)
		}
		if block.IsValid() && block != bl.CIDR {
			t.Fatalf("pods got addresses from blocks %s and %s", block, bl.CIDR)
		}
		block = bl.CIDR
	}
	if pods[0].addr == pods[1].addr {
		t.Fatalf("both pods got %s", pods[0].addr)
	}
	if err := testenv.Ping(pods[0].ns, pods[1].addr, 3); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if err := inHost(func() error { return cni.CheckNetworkList(context.Background(), list, p.rt) }); err != nil {
			t.Errorf("CHECK %s: %v", p.rt.ContainerID, err)
		}
		if err := inHost(func() error { return cni.DelNetworkList(context.Background(), list, p.rt) }); err != nil {
			t.Errorf("DEL %s: %v", p.rt.ContainerID, err)
		}
	}
	if k := keys(t, s.Client, handlesPrefix); len(k) != 0 {
		t.Fatalf("handles left after DEL: %v", k)
	}
	// Both plugins log to the network config's logFile at its level.
	logb, _ := os.ReadFile(filepath.Join(dir, "cni.log"))
	if !strings.Contains(string(logb), `"plugin":"brindle-ipam"`) || !strings.Contains(string(logb), `"level":"DEBUG","msg":"ipam add"`) {
		t.Errorf("no debug line of brindle-ipam in the network's log:\n%s", logb)
	}
}
