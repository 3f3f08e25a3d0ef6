// Command benchcni measures CNI ADD and DEL latency of brindle against the
// reference ptp plugin, both driven through libcni as containerd drives
// them, in the same run on the same host namespace. Run it as root:
//
//	go run ./test/benchcni [-pods 50] [-rounds 2]
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/internal/kubetest"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/test/benchreport"
)

// scenario is one plugin pair under test.
type scenario struct {
	name string
	// conf returns the conflist, given a fresh scratch directory.
	conf func(dir string) map[string]any
}

func hostLocal(dir, subnet string) map[string]any {
	return map[string]any{"type": "host-local", "dataDir": filepath.Join(dir, "ipam"), "ranges": [][]map[string]string{{{"subnet": subnet}}}}
}

// etcdURL is the bench's etcd, for brindle-ipam; set in run.
var etcdURL string

var scenarios = []scenario{
	{name: "ptp + host-local", conf: func(dir string) map[string]any {
		return map[string]any{"type": "ptp", "ipMasq": false, "ipam": hostLocal(dir, "10.250.0.0/16")}
	}},
	{name: "brindle + host-local", conf: func(dir string) map[string]any {
		return map[string]any{"type": "brindle", "logFile": filepath.Join(dir, "cni.log"), "ipam": hostLocal(dir, "10.251.0.0/16")}
	}},
	{name: "brindle + brindle-ipam", conf: func(dir string) map[string]any {
		return map[string]any{"type": "brindle", "logFile": filepath.Join(dir, "cni.log"), "ipam": map[string]any{
			"type": "brindle-ipam", "etcd_endpoints": etcdURL, "nodename": "bench-node",
			// The block hint lives next to the nodename file.
			"nodename_file": filepath.Join(dir, "nodename")}}
	}},
}

var burstPods, burstRounds int

type sample struct {
	add, del []time.Duration
	addWall  time.Duration // first ADD started to last ADD done
}

func main() {
	pods := flag.Int("pods", 50, "pods per run")
	rounds := flag.Int("rounds", 4, "runs of each scenario, interleaved, samples pooled")
	binDir := flag.String("bin", "", "directory with built binaries (default: build them)")
	flag.IntVar(&burstPods, "burst", 110, "pods ADDed all at once in the burst runs (0: none)")
	flag.IntVar(&burstRounds, "burst-rounds", 3, "burst runs of each scenario")
	flag.Parse()
	benchreport.CleanUpOnInterrupt()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchcni: needs root (network namespaces and veths); run `sudo make bench-cni`")
		os.Exit(2)
	}
	if err := run(*pods, *rounds, *binDir); err != nil {
		fmt.Fprintln(os.Stderr, "benchcni:", err)
		os.Exit(1)
	}
}

func run(pods, rounds int, bin string) error {
	if bin == "" {
		fmt.Fprintln(os.Stderr, "building brindle and the reference plugins ...")
		d, err := testenv.Build([]string{"brindle", "brindle-ipam"})
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		bin = d
	}
	host, cleanup, err := testenv.CreateHost()
	if err != nil {
		return err
	}
	defer cleanup()
	stopEtcd, err := startEtcd(host, bin)
	if err != nil {
		return err
	}
	defer stopEtcd()
	// Reading pods' annotations in Kubernetes (kube.go), when the
	// apiserver's binaries are there.
	kb, err := startKube(host.NS, pods*rounds)
	noKube := ""
	switch {
	case errors.Is(err, kubetest.ErrMissing):
		noKube = fmt.Sprintf("no annotations table: %v (make kubetest-bins builds what it needs)", err)
		fmt.Fprintln(os.Stderr, "benchcni:", noKube)
	case err != nil:
		return fmt.Errorf("kubernetes: %w", err)
	default:
		defer kb.stop()
	}

	// One unrecorded run of each warms the page cache and the kernel's
	// slab caches, so the first scenario measured is not penalised.
	for _, sc := range scenarios {
		if _, err := runOnce(host, bin, sc, 10, 1); err != nil {
			return fmt.Errorf("warm-up %s: %w", sc.name, err)
		}
	}
	results := map[string]map[int]*sample{}
	modes := []int{1, 8}
	for round := range rounds {
		for _, conc := range modes {
			// Alternate the order so neither scenario always runs first.
			order := slices.Clone(scenarios)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, sc := range order {
				fmt.Fprintf(os.Stderr, "round %d/%d: %-22s %d pods, %d at a time\n", round+1, rounds, sc.name, pods, conc)
				s, err := runOnce(host, bin, sc, pods, conc)
				if err != nil {
					return fmt.Errorf("%s: %w", sc.name, err)
				}
				if results[sc.name] == nil {
					results[sc.name] = map[int]*sample{}
				}
				acc := results[sc.name][conc]
				if acc == nil {
					acc = &sample{}
					results[sc.name][conc] = acc
				}
				acc.add = append(acc.add, s.add...)
				acc.del = append(acc.del, s.del...)
			}
		}
	}

	sec := &benchreport.Section{Name: "bench-cni", Command: "make bench-cni",
		Intro: "CNI ADD and DEL through libcni, as containerd drives them, in one host namespace: brindle + brindle-ipam (against " +
			"etcd in a process of its own, fsync on, on the host's address) next to the reference ptp + host-local in the same run."}
	lat := sec.Table("ADD and DEL latency", fmt.Sprintf("%d pods per run, %d runs of each pooled, scenarios interleaved.", pods, rounds),
		"plugins", "concurrency", "ADD p50", "ADD p99", "DEL p50", "DEL p99", "ADD p50 vs ptp", "DEL p50 vs ptp")
	ref := scenarios[0].name
	for _, conc := range modes {
		for _, sc := range scenarios {
			s := results[sc.name][conc]
			r := results[ref][conc]
			addRatio := ratio(testenv.Percentile(s.add, 50), testenv.Percentile(r.add, 50))
			lat.Add(sc.name, fmt.Sprint(conc),
				testenv.Millis(testenv.Percentile(s.add, 50)), testenv.Millis(testenv.Percentile(s.add, 99)), testenv.Millis(testenv.Percentile(s.del, 50)), testenv.Millis(testenv.Percentile(s.del, 99)),
				fmt.Sprintf("%.2fx", addRatio), fmt.Sprintf("%.2fx", ratio(testenv.Percentile(s.del, 50), testenv.Percentile(r.del, 50))))
			if sc.name == scenarios[2].name {
				sec.Target(fmt.Sprintf("brindle + brindle-ipam ADD p50 vs ptp + host-local, concurrency %d", conc), "≤ 1.10x",
					fmt.Sprintf("%.2fx", addRatio), addRatio <= 1.10)
			}
		}
	}
	if kb != nil {
		if err := kb.paired(sec, host, bin, pods*rounds); err != nil {
			return fmt.Errorf("annotations: %w", err)
		}
	}
	if noKube != "" {
		sec.Note("%s", noKube)
	}
	if err := burst(sec, host, bin, burstPods, burstRounds); err != nil {
		return err
	}
	if err := execTable(sec, bin); err != nil {
		return err
	}
	return sec.Emit()
}

// execTable shows what a plugin costs before it does anything: its size
// and the time of a VERSION call, which is one process start.
func execTable(sec *benchreport.Section, bin string) error {
	t := sec.Table("Plugin binaries", "Size, and the time of a VERSION call (one process start), 200 runs.", "binary", "size MiB", "VERSION p50", "VERSION p99")
	for _, b := range []string{"brindle", "brindle-ipam", "ptp", "host-local"} {
		path := filepath.Join(bin, b)
		fi, err := os.Stat(path)
		if err != nil {
			continue
		}
		var d []time.Duration
		for range 200 {
			cmd := exec.Command(path)
			cmd.Env = []string{"CNI_COMMAND=VERSION"}
			start := time.Now()
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s VERSION: %w", b, err)
			}
			d = append(d, time.Since(start))
		}
		t.Add(b, fmt.Sprintf("%.1f", float64(fi.Size())/(1<<20)), testenv.Millis(testenv.Percentile(d, 50)), testenv.Millis(testenv.Percentile(d, 99)))
	}
	return nil
}

// burst ADDs pods pods all at once (a kubelet after a reboot or a drain
// starts up to 110), rounds times per scenario, and compares the wall
// time until the last ADD is done with the reference's.
func burst(sec *benchreport.Section, host *testenv.Host, bin string, pods, rounds int) error {
	walls := map[string][]time.Duration{}
	base := scenarios[:3] // the reference, brindle + host-local, brindle + brindle-ipam
	for round := range rounds {
		order := slices.Clone(base)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, sc := range order {
			fmt.Fprintf(os.Stderr, "burst %d/%d: %-22s %d pods at once\n", round+1, rounds, sc.name, pods)
			s, err := runOnce(host, bin, sc, pods, pods)
			if err != nil {
				return fmt.Errorf("burst, %s: %w", sc.name, err)
			}
			walls[sc.name] = append(walls[sc.name], s.addWall)
		}
	}
	t := sec.Table(fmt.Sprintf("%d pods ADDed at once on one node", pods),
		fmt.Sprintf("Every ADD started together; wall time until the last is done (every one succeeded, or the run fails); %d runs each, median.", rounds),
		"plugins", "wall time (median)", "runs", "vs ptp + host-local")
	ref := testenv.Percentile(walls[base[0].name], 50)
	for _, sc := range base {
		med := testenv.Percentile(walls[sc.name], 50)
		var runs []string
		for _, w := range walls[sc.name] {
			runs = append(runs, testenv.Millis(w))
		}
		r := ratio(med, ref)
		t.Add(sc.name, testenv.Millis(med), strings.Join(runs, ", "), fmt.Sprintf("%.2fx", r))
		if sc.name == scenarios[2].name {
			sec.Target(fmt.Sprintf("%d pods at once: all done, wall time vs ptp + host-local", pods), "all done, ≤ 1.5x", fmt.Sprintf("all done, %.2fx", r), r <= 1.5)
		}
	}
	return nil
}

// runOnce attaches pods with conc workers, then detaches them the same way,
// timing each call. Namespaces are made before the clock starts.
func runOnce(host *testenv.Host, bin string, sc scenario, pods, conc int) (*sample, error) {
	dir, err := os.MkdirTemp("", "benchcni-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "bench", "plugins": []any{sc.conf(dir)}})
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		return nil, err
	}
	cni := testenv.NewCNIConfig(bin, filepath.Join(dir, "cache"))
	nss := make([]ns.NetNS, pods)
	for i := range nss {
		n, c, err := testenv.CreateNS()
		if err != nil {
			return nil, err
		}
		defer c()
		nss[i] = n
	}
	rt := func(i int) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench-%04d", i), NetNS: nss[i].Path(), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", fmt.Sprintf("pod-%04d", i)}}}
	}
	s := &sample{}
	op := func(add bool) error {
		var mu sync.Mutex
		var firstErr error
		work := make(chan int)
		var wg sync.WaitGroup
		for range conc {
			wg.Go(func() {
				_ = host.NS.Do(func(ns.NetNS) error {
					for i := range work {
						start := time.Now()
						var err error
						if add {
							_, err = cni.AddNetworkList(context.Background(), list, rt(i))
						} else {
							err = cni.DelNetworkList(context.Background(), list, rt(i))
						}
						d := time.Since(start)
						mu.Lock()
						if err != nil && firstErr == nil {
							firstErr = err
						}
						if add {
							s.add = append(s.add, d)
						} else {
							s.del = append(s.del, d)
						}
						mu.Unlock()
					}
					return nil
				})
			})
		}
		for i := range pods {
			work <- i
		}
		close(work)
		wg.Wait()
		return firstErr
	}
	start := time.Now()
	if err := op(true); err != nil {
		return nil, fmt.Errorf("ADD: %w", err)
	}
	s.addWall = time.Since(start)
	if err := op(false); err != nil {
		return nil, fmt.Errorf("DEL: %w", err)
	}
	return s, nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// startEtcd runs etcd (labetcd) inside the host namespace on the host's
// address, so brindle-ipam reaches it the way it reaches a cluster's etcd,
// and stores one pool.
func startEtcd(host *testenv.Host, bin string) (func(), error) {
	dir, err := os.MkdirTemp("", "benchcni-etcd-")
	if err != nil {
		return nil, err
	}
	m, err := etcdtest.StartProcess(host.NS, bin, dir, host.Addr.String())
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	url, stop := m.Endpoint, m.Stop
	etcdURL = url
	pool := conf.IPPool{Metadata: conf.ObjectMeta{Name: "bench"}, Spec: conf.IPPoolSpec{CIDR: "10.252.0.0/16"}}
	pool.Default()
	b, _ := conf.MarshalPool(pool)
	// The JSON gateway, as brindle-ipam speaks it: a plain HTTP put, dialled
	// from inside the host namespace (net/http dials on another goroutine).
	dial := etcdtest.DialIn(host.NS)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return dial(ctx, addr)
	}}}
	body, _ := json.Marshal(map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(ipam.Prefix + "ippools/bench")),
		"value": base64.StdEncoding.EncodeToString(b),
	})
	res, err := client.Post(url+"/v3/kv/put", "application/json", bytes.NewReader(body))
	if err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			err = fmt.Errorf("put pool: %s", res.Status)
		}
	}
	if err != nil {
		stop()
		os.RemoveAll(dir)
		return nil, err
	}
	return func() { stop(); os.RemoveAll(dir) }, nil
}
