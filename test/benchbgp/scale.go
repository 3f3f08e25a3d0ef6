package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
	"github.com/brindle-net/brindle/test/lab"
)

// scaleResult is what one lab of a given size measured.
type scaleResult struct {
	nodes int
	rr    bool // mesh off, nodes 1 and 2 reflect
	// cold is from starting every daemon (each node's block already
	// claimed) to the last block route in the last kernel.
	cold time.Duration
	// lat is block claimed in etcd -> route in each other node's kernel;
	// own is the claim -> the owner's blackhole for it (etcd watch and
	// the owner's sync, before BGP).
	lat, own []time.Duration
	// Watch traffic per cluster-wide ADD: what brindled's cache received,
	// per node; and what a watch of the whole /brindle/v1/ received (what
	// every node would get with one).
	adds                  int
	nodeEvents, nodeBytes float64
	rootEvents, rootBytes float64
	rssRR, rssClient      int64
	anonRR, anonClient    int64
	pingSent, pingLost    int
	pingPairs, routesLost int
	routesChecked         int
	reflectorStopped      string
	// cpu is the CPU time per claim of the reflectors, the clients (all
	// together) and this process, over the claims.
	cpu cpuSample
	// idle is the CPU per second of the same processes after the
	// claims, with nothing happening; claimsTook is how long the claims
	// took.
	idle       cpuSample
	claimsTook time.Duration
}

// scaleLab measures a cluster of n nodes: with rr, the mesh off and the
// first two nodes reflecting (one cluster ID); else the full mesh.
func scaleLab(bin string, n, claims int, rr bool) (*scaleResult, error) {
	ctx := context.Background()
	res := &scaleResult{nodes: n, rr: rr}
	dir, _ := os.MkdirTemp("", "benchbgp-")
	defer os.RemoveAll(dir)
	pool := conf.IPPool{Metadata: conf.ObjectMeta{Name: "bench-wide"}, Spec: conf.IPPoolSpec{CIDR: "10.240.0.0/12"}}
	pool.Default()
	cfg := lab.Config{Nodes: n, BinDir: bin, Dir: dir, Pools: []conf.IPPool{pool}, NoDaemons: true,
		// Lighter nodes: info logging (the lab's default is debug).
		DaemonArgs: []string{"--log-level", "info"}}
	if rr {
		mesh := false
		cfg.BGP = &conf.BGPConfiguration{Spec: conf.BGPSpec{NodeToNodeMesh: &mesh}}
		cfg.NodeArgs = func(i int) []string {
			if i < 2 {
				return []string{"--route-reflector-cluster-id", "224.0.0.1"}
			}
			return nil
		}
	}
	progress("  building %d node namespaces ...", n)
	l, err := lab.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	watches := make([]*routeWatch, n)
	for i, node := range l.Nodes {
		if watches[i], err = watchRoutes(node.NS, false); err != nil {
			return nil, err
		}
		defer watches[i].close()
	}
	// One block per node before any daemon runs: cold start is every
	// node announcing its block and learning all the others.
	block := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 240 + byte(i/1024), byte(i / 4 % 256), byte(i % 4 * 64)}), 26)
	}
	for i, node := range l.Nodes {
		if err := claimBlock(ctx, l, node.Name, block(i)); err != nil {
			return nil, err
		}
	}
	progress("  starting %d brindled ...", n)
	start := time.Now()
	if err := l.StartDaemons(ctx); err != nil {
		return nil, err
	}
	var last time.Time
	for i, w := range watches {
		_, l, err := w.waitFor(n, 5*time.Minute) // n-1 block routes and its own blackhole
		if err != nil {
			return nil, fmt.Errorf("cold start, %s: %w", nodeName(i), err)
		}
		if l.After(last) {
			last = l
		}
	}
	res.cold = last.Sub(start)
	progress("  cold start: %s; waiting for every node to be ready ...", testenv.Millis(res.cold))
	if err := l.WaitReady(ctx, 3*time.Minute); err != nil {
		return nil, err
	}

	progress("  %d block claims ...", claims)
	reflectors := 0
	if rr {
		reflectors = 2
	}
	cpu0, err := sampleCPU(l, reflectors)
	if err != nil {
		return nil, err
	}
	claimsStart := time.Now()
	stopPerf := func() error { return nil }
	if perfFile != "" {
		if stopPerf, err = perfRecord(fmt.Sprintf("%s.%d", perfFile, n), l.Nodes[reflectors:]); err != nil {
			return nil, err
		}
		cpu0, _ = sampleCPU(l, reflectors)
	}
	// The slowest claim, to say what held it up: a claim's samples are 1%
	// of all at 100 nodes, so one slow claim sets the p99.
	var slow struct {
		block            netip.Prefix
		owner            string
		write, own, last time.Duration
	}
	for c := range claims {
		owner := c % n
		b := block(n + c)
		t0 := time.Now()
		if err := claimBlock(ctx, l, l.Nodes[owner].Name, b); err != nil {
			return nil, err
		}
		write := time.Since(t0)
		var own, last time.Duration
		deadline := time.Now().Add(10 * time.Second)
		for i, w := range watches {
			for w.arrived(b.String()).IsZero() {
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("block %s of %s: not routed on %s after 10s", b, l.Nodes[owner].Name, l.Nodes[i].Name)
				}
				time.Sleep(500 * time.Microsecond)
			}
			d := w.arrived(b.String()).Sub(t0)
			if i == owner {
				res.own = append(res.own, d)
				own = d
			} else {
				res.lat = append(res.lat, d)
				last = max(last, d)
			}
		}
		if last > slow.last {
			slow.block, slow.owner, slow.write, slow.own, slow.last = b, l.Nodes[owner].Name, write, own, last
		}
	}
	progress("  slowest claim: %s of %s: etcd write %v, owner's blackhole %v, last other kernel %v",
		slow.block, slow.owner, slow.write.Round(10*time.Microsecond), slow.own.Round(10*time.Microsecond), slow.last.Round(10*time.Microsecond))
	cpu1, err := sampleCPU(l, reflectors)
	if err != nil {
		return nil, err
	}
	res.claimsTook = time.Since(claimsStart)
	res.cpu = cpu1.perClaim(cpu0, claims)
	if err := stopPerf(); err != nil {
		progress("  perf: %v", err)
	}
	if res.idle, err = idleCPU(l, reflectors, n); err != nil {
		return nil, err
	}

	if rr {
		if err := watchTraffic(ctx, l, res); err != nil {
			return nil, err
		}
	}
	for _, m := range []struct {
		v    *int64
		node *lab.Node
		f    func(*lab.Node) (int64, error)
	}{{&res.rssRR, l.Nodes[0], (*lab.Node).RSS}, {&res.anonRR, l.Nodes[0], (*lab.Node).RSSAnon},
		{&res.rssClient, l.Nodes[n-1], (*lab.Node).RSS}, {&res.anonClient, l.Nodes[n-1], (*lab.Node).RSSAnon}} {
		if *m.v, err = m.f(m.node); err != nil {
			return nil, err
		}
	}
	if rr {
		if err := stopReflector(ctx, l, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func nodeName(i int) string { return fmt.Sprintf("node-%d", i+1) }

func progress(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// claimBlock writes a node's claim on an empty block of the bench pool
// (the block and its affinity in one transaction), as IPAM's claim does.
func claimBlock(ctx context.Context, l *lab.Lab, node string, b netip.Prefix) error {
	k := strings.ReplaceAll(b.String(), "/", "-")
	af, _ := json.Marshal(ipam.Affinity{V: 1, State: ipam.AffinityConfirmed, Since: time.Now()})
	size := 1 << (32 - b.Bits())
	blk := ipam.Block{V: 1, CIDR: b, Pool: "bench-wide", Affinity: node,
		Allocations: make([]*ipam.Allocation, size), Seqs: make([]uint64, size), Free: make([]int, size)}
	for i := range blk.Free {
		blk.Free[i] = i
	}
	bv, _ := json.Marshal(blk)
	_, err := l.Etcd.Txn(ctx).Then(
		clientv3.OpPut(ipam.Prefix+"ipam/blocks/"+k, string(bv)),
		clientv3.OpPut(ipam.Prefix+"ipam/affinity/"+node+"/"+k, string(af))).Commit()
	return err
}

// watchTraffic makes 2 ADDs per node, spread over the cluster, through
// the allocator as brindle-ipam makes them (blocks, handles, endpoints),
// and counts what the watches received meanwhile: every brindled's (from
// its /metrics) and a watch of the whole /brindle/v1/ (in this process).
func watchTraffic(ctx context.Context, l *lab.Lab, res *scaleResult) error {
	n := len(l.Nodes)
	res.adds = 2 * n
	progress("  %d ADDs for the watch traffic ...", res.adds)
	before, err := watchCounters(ctx, l)
	if err != nil {
		return err
	}
	var rootEvents, rootBytes int64
	var mu sync.Mutex
	wctx, cancel := context.WithCancel(ctx)
	wch := l.Etcd.Watch(wctx, ipam.Prefix, clientv3.WithPrefix())
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for wr := range wch {
			mu.Lock()
			for _, ev := range wr.Events {
				rootEvents++
				rootBytes += int64(len(ev.Kv.Key) + len(ev.Kv.Value))
			}
			mu.Unlock()
		}
	}()
	time.Sleep(200 * time.Millisecond) // the watch is established
	a := ipam.New(etcdgrpc.New(l.Etcd))
	a.Log = quietLog()
	for i := range res.adds {
		node := l.Nodes[i%n].Name
		id := fmt.Sprintf("bench%04d", i)
		if _, err := a.Assign(ctx, ipam.AssignRequest{Handle: id + ".eth0", Node: node, IPv4: true,
			Attrs:    map[string]string{ipam.AttrNode: node, ipam.AttrContainerID: id, ipam.AttrIfName: "eth0"},
			Endpoint: &ipam.Endpoint{ContainerID: id, IfName: "eth0", HostVeth: conf.HostVethName("bench", id, "")}}); err != nil {
			cancel()
			return err
		}
	}
	time.Sleep(2 * time.Second) // every watch has delivered
	cancel()
	<-watching
	after, err := watchCounters(ctx, l)
	if err != nil {
		return err
	}
	var events, bytes float64
	for name, b := range before {
		events += after[name][0] - b[0]
		bytes += after[name][1] - b[1]
	}
	adds := float64(res.adds)
	res.nodeEvents, res.nodeBytes = events/float64(n)/adds, bytes/float64(n)/adds
	res.rootEvents, res.rootBytes = float64(rootEvents)/adds, float64(rootBytes)/adds
	return nil
}

// watchCounters reads brindle_etcd_watch_{events,bytes}_total of every node.
func watchCounters(ctx context.Context, l *lab.Lab) (map[string][2]float64, error) {
	out := map[string][2]float64{}
	for _, node := range l.Nodes {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+lab.HealthAddr+"/metrics", nil)
		resp, err := node.HTTP().Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s /metrics: %w", node.Name, err)
		}
		var v [2]float64
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 {
				continue
			}
			switch f[0] {
			case "brindle_etcd_watch_events_total":
				v[0], _ = strconv.ParseFloat(f[1], 64)
			case "brindle_etcd_watch_bytes_total":
				v[1], _ = strconv.ParseFloat(f[1], 64)
			}
		}
		resp.Body.Close()
		out[node.Name] = v
	}
	return out, nil
}

// stopReflector: pods on up to 10 client nodes ping each other in a ring
// every 20 ms while the first reflector's brindled stops (SIGTERM), for
// longer than the hold time; then every surviving node's routes are
// compared with what it had before.
func stopReflector(ctx context.Context, l *lab.Lab, res *scaleResult) error {
	var pingers []*lab.Pod
	for i := 2; i < len(l.Nodes) && len(pingers) < 10; i++ {
		p, err := l.Nodes[i].AddPod(ctx, fmt.Sprintf("ping%d", i))
		if err != nil {
			return err
		}
		pingers = append(pingers, p)
	}
	time.Sleep(time.Second) // the pods' routes are everywhere
	before := map[string][]string{}
	for _, n := range l.Nodes[1:] {
		rs, err := n.Routes()
		if err != nil {
			return err
		}
		before[n.Name] = rs
	}
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, from := range pingers {
		to := pingers[(i+1)%len(pingers)]
		wg.Go(func() {
			st, err := testenv.PingLoop(pctx, from.NS, to.Addr, 20*time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				res.pingSent += st.Sent
				res.pingLost += len(st.Lost)
			}
			res.pingPairs++
		})
	}
	time.Sleep(time.Second)
	rr := l.Nodes[0]
	res.reflectorStopped = rr.Name
	progress("  stopping the reflector %s, pinging between %d pods ...", rr.Name, len(pingers))
	if err := rr.Stop(); err != nil {
		stop()
		wg.Wait()
		return err
	}
	time.Sleep(12 * time.Second) // past the hold time: its sessions are gone
	for _, n := range l.Nodes[1:] {
		after, err := n.Routes()
		if err != nil {
			stop()
			wg.Wait()
			return err
		}
		have := map[string]bool{}
		for _, r := range after {
			have[r] = true
		}
		for _, r := range before[n.Name] {
			res.routesChecked++
			if !have[r] {
				res.routesLost++
			}
		}
	}
	stop()
	wg.Wait()
	return nil
}

// scaleIdle is brindled's RSS on a lab of n nodes (full mesh), 2 s after
// every node is ready.
func scaleIdle(bin string, n int) (int64, error) {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "benchbgp-")
	defer os.RemoveAll(dir)
	l, err := lab.New(ctx, lab.Config{Nodes: n, BinDir: bin, Dir: dir, DaemonArgs: []string{"--log-level", "info"}})
	if err != nil {
		return 0, err
	}
	defer l.Close()
	if err := l.WaitReady(ctx, 60*time.Second); err != nil {
		return 0, err
	}
	time.Sleep(2 * time.Second)
	return l.Nodes[0].RSS()
}
