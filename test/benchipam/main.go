// Command benchipam measures brindle's IPAM allocation rate against a real
// embedded etcd (fsync on, as in production): allocations per second at
// concurrency 1, 8 and 32, all on one node and spread over 10 nodes. Each
// worker is one simulated CNI ADD after another, with an allocator of its
// own as each brindle-ipam process has; worker i allocates for node
// i mod nodes, so 32 workers on 10 nodes contend 3 or 4 to a block. Each
// scenario runs twice: with the node-local queue (as brindle-ipam runs on a
// node with brindle's directory) and without it (every ADD its own
// transaction, conflicts retried against etcd).
//
//	go run ./test/benchipam [-duration 3s] [-backend http|grpc]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
	"github.com/brindle-net/brindle/ipam/store/etcdhttp"
	"github.com/brindle-net/brindle/test/benchreport"
)

type result struct {
	queue       bool
	nodes, conc int
	allocs      int
	elapsed     time.Duration // includes untimed releases when -live is set
	lat         []time.Duration
	errs        int
}

func main() {
	duration := flag.Duration("duration", 3*time.Second, "how long each scenario allocates")
	backend := flag.String("backend", "http", "etcd API: http (the JSON gateway, as brindle-ipam uses it) or grpc (clientv3)")
	only := flag.String("only", "", "run only the scenarios matching this: \"1x32\" is one node, 32 workers")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	live := flag.Int("live", 0, "if > 0, keep about this many addresses per node: each worker releases its oldest as it allocates, as pods come and go; 0 only allocates")
	flag.Parse()
	benchreport.CleanUpOnInterrupt()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchipam:", err)
			os.Exit(1)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	onlyScenario = *only
	if err := run(*duration, *backend, *live); err != nil {
		fmt.Fprintln(os.Stderr, "benchipam:", err)
		os.Exit(1)
	}
}

func run(d time.Duration, backend string, live int) error {
	dir, err := os.MkdirTemp("", "benchipam-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	m, err := etcdtest.StartMember(dir, "")
	if err != nil {
		return err
	}
	defer m.Stop()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.Endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	var st ipam.Store
	switch backend {
	case "grpc":
		st = etcdgrpc.New(cli)
	case "http":
		hs, err := etcdhttp.New(etcdhttp.Config{Endpoints: []string{m.Endpoint}})
		if err != nil {
			return err
		}
		defer hs.Close()
		st = hs
	default:
		return fmt.Errorf("-backend %q: want http or grpc", backend)
	}
	a := ipam.New(st)
	a.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	if _, err := a.ApplyPool(ctx, conf.IPPool{Metadata: conf.ObjectMeta{Name: "bench"}, Spec: conf.IPPoolSpec{CIDR: "10.0.0.0/8"}}); err != nil {
		return err
	}
	sec := &benchreport.Section{Name: "bench-ipam", Command: "make bench-ipam",
		Intro: fmt.Sprintf("brindle's allocator against an embedded etcd (fsync on), %s API, %v per scenario, pool 10.0.0.0/8, blockSize 26%s. "+
			"Each worker is one ADD after another with an allocator of its own, as each brindle-ipam process has; worker i allocates for node i mod nodes. "+
			"Each scenario runs with the node-local queue (as brindle-ipam runs where brindle's directory exists) and without it.", backend, d, liveNote(live))}
	t := sec.Table("Allocations per second", "", "node-local queue", "nodes", "concurrency", "allocations", "alloc/s", "p50", "p99", "errors")
	for _, nodes := range []int{1, 10} {
		for _, conc := range []int{1, 8, 32} {
			for _, queue := range []bool{true, false} {
				if onlyScenario != "" && onlyScenario != fmt.Sprintf("%dx%d", nodes, conc) {
					continue
				}
				// Each scenario starts from an empty IPAM state, pools kept,
				// and with a fresh node directory (hints, queue, state).
				if _, err := cli.Delete(ctx, ipam.Prefix+"ipam/", clientv3.WithPrefix()); err != nil {
					return err
				}
				nodeDir, err := os.MkdirTemp(dir, "nodes-")
				if err != nil {
					return err
				}
				r := scenario(st, nodeDir, queue, nodes, conc, d, live)
				onOff := map[bool]string{true: "on", false: "off"}[queue]
				rate := float64(r.allocs) / r.elapsed.Seconds()
				p99 := pct(r.lat, 99)
				t.Add(onOff, fmt.Sprint(r.nodes), fmt.Sprint(r.conc), fmt.Sprint(r.allocs), fmt.Sprintf("%.0f", rate),
					fmt.Sprintf("%.2f ms", ms(pct(r.lat, 50))), fmt.Sprintf("%.2f ms", ms(p99)), fmt.Sprint(r.errs))
				fmt.Fprintf(os.Stderr, "done: queue %s, %d nodes, concurrency %d\n", onOff, nodes, conc)
				if queue && nodes == 1 && conc == 32 {
					sec.Target("one node, 32 at a time: allocations per second", "≥ 500", fmt.Sprintf("%.0f", rate), rate >= 500 && r.errs == 0)
					sec.Target("one node, 32 at a time: allocation p99", "< 200 ms", fmt.Sprintf("%.1f ms", ms(p99)), p99 < 200*time.Millisecond && r.errs == 0)
				}
			}
		}
	}
	return sec.Emit()
}

var onlyScenario string

func liveNote(live int) string {
	if live == 0 {
		return ", allocations only"
	}
	return fmt.Sprintf(",\nabout %d live addresses per node: each allocation is followed by a release (alloc/s is per wall second, releases included; latencies are of allocations)", live)
}

// newAllocator is one worker's allocator, set up as brindle-ipam sets it up
// on a node whose directory (nodeDir/<node>) exists: block hints, and the
// node-local queue when queue is set.
func newAllocator(st ipam.Store, nodeDir, node string, queue bool) *ipam.Allocator {
	a := ipam.New(st)
	a.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := filepath.Join(nodeDir, node)
	_ = os.MkdirAll(dir, 0o755)
	a.Hints = ipam.FileHints{Dir: dir}
	if queue {
		a.Local = &ipam.NodeLocal{Dir: ipam.NodeLocalDir(dir, node, []string{"bench"}), Node: node}
	}
	return a
}

// scenario runs conc workers for d; worker i allocates for node i mod nodes.
func scenario(st ipam.Store, nodeDir string, queue bool, nodes, conc int, d time.Duration, live int) result {
	var n, errs atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("node-%02d", w%nodes)
			a := newAllocator(st, nodeDir, node, queue)
			workersOnNode := (conc + nodes - 1 - w%nodes) / nodes
			keep := 0
			if live > 0 {
				keep = max(1, live/workersOnNode)
			}
			var held []string
			var mine []time.Duration
			for i := 0; time.Now().Before(deadline); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				h := fmt.Sprintf("w%d-%d.eth0", w, i)
				_, err := a.Assign(ctx, ipam.AssignRequest{Handle: h, Node: node, IPv4: true})
				took := time.Since(t0)
				if err != nil {
					cancel()
					errs.Add(1)
					fmt.Fprintln(os.Stderr, "assign:", err)
					continue
				}
				mine = append(mine, took)
				n.Add(1)
				if held = append(held, h); keep > 0 && len(held) > keep {
					if _, err := a.ReleaseHandle(ctx, held[0]); err != nil {
						fmt.Fprintln(os.Stderr, "release:", err)
					}
					held = held[1:]
				}
				cancel()
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return result{queue: queue, nodes: nodes, conc: conc, allocs: int(n.Load()), elapsed: time.Since(start), lat: lat, errs: int(errs.Load())}
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
