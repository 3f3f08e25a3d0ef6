package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
)

// TestADDLatency compares ADD latency through libcni: brindle +
// brindle-ipam against ptp + host-local, interleaved in one run, with the
// IPAM plugins alone alongside. It measures rather than checks, so it runs
// only when asked:
//
//	sudo BRINDLE_LATENCY=1 go test -run TestADDLatency -v ./ipam
func TestADDLatency(t *testing.T) {
	if os.Getenv("BRINDLE_LATENCY") == "" {
		t.Skip("SKIP: a measurement; set BRINDLE_LATENCY=1 to run it")
	}
	testenv.RequireRoot(t)
	bin := testenv.BinDir(t, "brindle", "brindle-ipam")
	host := testenv.NewHost(t)
	inHost := func(f func() error) error { return testenv.Do(t, host.NS, f) }
	s := etcdtest.StartProcessIn(t, host.NS, bin, "127.0.0.1")
	a := New(etcdgrpc.New(s.Client))
	addPool(t, a, "default", "10.244.0.0/16", nil)
	dir := t.TempDir()
	cni := testenv.NewCNIConfig(bin, filepath.Join(dir, "cache"))
	list := func(p map[string]any) *libcni.NetworkConfigList {
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "lat", "plugins": []any{p}})
		l, err := libcni.NetworkConfFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	hostLocal := func(octet string) map[string]any {
		return map[string]any{"type": "host-local", "dataDir": filepath.Join(dir, octet),
			"ranges": [][]map[string]string{{{"subnet": "10." + octet + ".0.0/16"}}}}
	}
	brindleIPAM := func(node string) map[string]any {
		// nodename_file names the directory brindled owns on a node, where
		// brindle-ipam keeps its block hints.
		return map[string]any{"type": "brindle-ipam", "etcd_endpoints": s.Endpoint, "nodename": node,
			"nodename_file": filepath.Join(dir, "nodename")}
	}
	scenarios := []struct {
		name string
		l    *libcni.NetworkConfigList
	}{
		{"ptp + host-local", list(map[string]any{"type": "ptp", "ipam": hostLocal("250")})},
		{"brindle + brindle-ipam", list(map[string]any{"type": "brindle", "logFile": filepath.Join(dir, "cni.log"), "ipam": brindleIPAM("node-1")})},
		{"host-local alone", list(map[string]any{"type": "host-local", "ipam": hostLocal("251")})},
		{"brindle-ipam alone", list(map[string]any{"type": "brindle-ipam", "ipam": brindleIPAM("node-2")})},
	}
	lat := make([][]time.Duration, len(scenarios))
	for round := range 4 {
		for i, sc := range scenarios {
			for j := range 10 {
				n := testenv.NewNS(t)
				rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("lat-%d-%d-%d", i, round, j), NetNS: n.Path(), IfName: "eth0"}
				if err := inHost(func() error {
					t0 := time.Now()
					_, err := cni.AddNetworkList(context.Background(), sc.l, rt)
					lat[i] = append(lat[i], time.Since(t0))
					return err
				}); err != nil {
					t.Fatalf("%s: %v", sc.name, err)
				}
			}
		}
	}
	p50 := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2].Round(10 * time.Microsecond)
	}
	for i, sc := range scenarios {
		t.Logf("%-24s ADD p50 %v p90 %v (n=%d)", sc.name, p50(lat[i]), lat[i][len(lat[i])*9/10].Round(10*time.Microsecond), len(lat[i]))
	}
	t.Logf("brindle + brindle-ipam / ptp + host-local = %.2f", float64(p50(lat[1]))/float64(p50(lat[0])))
}
