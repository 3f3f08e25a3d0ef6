// Command benchbgp measures brindled on the lab (test/lab): clusters of 10,
// 50 and 100 nodes with two of them as route reflectors (cold start, block
// claimed -> route in every other kernel, etcd watch traffic, a reflector
// stopped, memory), the full mesh at 10 for comparison, route sync alone
// at 10,000 and 100,000 routes, and routes from a BGP peer (BIRD) to the
// kernel. Run it as root: make bench-bgp.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/benchreport"
)

type row struct{ name, value, cpu, note string }

// perfFile, when set, is where perf records the clients during the claims.
var perfFile string

type options struct {
	bin        string
	claims     int
	sections   map[string]bool
	sizes      []int
	birdRuns   int
	birdCounts []int
}

func (o *options) want(section string) bool { return len(o.sections) == 0 || o.sections[section] }

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "directory with built binaries (default: build them)")
	flag.IntVar(&o.claims, "claims", 30, "blocks claimed one after another per cluster")
	only := flag.String("only", "", "run only these sections, comma-separated: scale, mesh, mem, fib, bird")
	sizes := flag.String("sizes", "10,50,100", "cluster sizes for the route-reflector labs")
	flag.IntVar(&o.birdRuns, "bird-runs", 5, "runs of each BIRD route count")
	birdCounts := flag.String("bird-counts", "10000,100000", "route counts BIRD announces")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process to this file")
	flag.StringVar(&perfFile, "perf", "", "record the client nodes' brindled with `perf record` during the claims, into this file (.N for N nodes)")
	flag.Parse()
	benchreport.CleanUpOnInterrupt()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchbgp: needs root (network namespaces); run `sudo make bench-bgp`")
		os.Exit(2)
	}
	o.sections = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s != "" {
			o.sections[s] = true
		}
	}
	var err error
	if o.sizes, err = ints(*sizes); err != nil {
		fmt.Fprintln(os.Stderr, "benchbgp: -sizes:", err)
		os.Exit(2)
	}
	if o.birdCounts, err = ints(*birdCounts); err != nil {
		fmt.Fprintln(os.Stderr, "benchbgp: -bird-counts:", err)
		os.Exit(2)
	}
	if o.want("bird") {
		if _, err := exec.LookPath("bird"); err != nil {
			fmt.Fprintln(os.Stderr, "benchbgp: needs BIRD 2 (`bird`, Debian package bird2) for the routes-from-a-peer runs: run scripts/install-deps.sh as root, or -only scale,mesh,mem,fib")
			os.Exit(2)
		}
	}
	if *cpuprofile != "" {
		if f, err := os.Create(*cpuprofile); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(&o); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "benchbgp:", err)
		os.Exit(1)
	}
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func run(o *options) error {
	if o.bin == "" {
		fmt.Fprintln(os.Stderr, "building ...")
		d, err := testenv.Build(nil)
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.bin = d
	}
	sec := &benchreport.Section{Name: "bench-bgp", Command: "make bench-bgp",
		Intro: "brindled on the lab: every node a network namespace running a real brindled, etcd (labetcd) on the underlay, " +
			"BIRD 2 as an outside peer. Times are measured through netlink notifications in each node's namespace and " +
			"confirmed by dumping the kernel's table, not by polling brindled."}
	if o.want("scale") || o.want("mesh") {
		if err := scaleSection(o, sec); err != nil {
			return err
		}
	}
	if o.want("fib") {
		t := sec.Table("Route sync alone", "bgpd.FIB in a fresh namespace, as brindled runs it (bulk rtnetlink). "+
			"CPU is the user and system time of the syncing thread, which includes the kernel's work on the routes (rtnetlink runs "+
			"in the sender's context): on a loaded machine the wall time includes waiting for a core, the CPU time does not. "+
			"The targets are judged on the wall time.", "measure", "time", "CPU", "note")
		for _, n := range []int{10000, 100000} {
			progress("route sync, %s routes ...", thousands(n))
			rows, err := fibBench(n)
			if err != nil {
				return err
			}
			for _, r := range rows {
				t.Add(r.name, r.value, r.cpu, r.note)
			}
			if n == 100000 {
				install, _ := time.ParseDuration(strings.ReplaceAll(rows[0].value, " ", ""))
				resync, _ := time.ParseDuration(strings.ReplaceAll(rows[2].value, " ", ""))
				sec.Target("route sync: install 100,000 routes", "< 1 s", rows[0].value, install > 0 && install < time.Second)
				sec.Target("route sync: full resync of 100,000 unchanged routes", "< 300 ms", rows[2].value, resync > 0 && resync < 300*time.Millisecond)
			}
		}
	}
	if o.want("bird") {
		runs := birdRoutes(o.bin, o.birdCounts, o.birdRuns)
		t := sec.Table("Routes from a BGP peer (BIRD) to the kernel",
			"BIRD announces n /32s to a one-node lab; first to last route in the node's kernel, and from the BGPPeer's creation (session setup included).",
			"routes", "run", "first to last", "peer configured to last", "note")
		ok := map[int]int{}
		for i, r := range runs {
			run := fmt.Sprint(i%o.birdRuns + 1)
			if r.err != nil {
				t.Add(thousands(r.n), run, "FAILED", "", r.err.Error())
				continue
			}
			ok[r.n]++
			note := ""
			if r.lost {
				note = "notifications overflowed; the last route timed by dump (100 ms resolution)"
			}
			if r.naiveErr != nil {
				note = strings.TrimPrefix(note+"; ", "; ") + fmt.Sprintf("a default-size notification socket saw %s before %v", thousands(r.naive), r.naiveErr)
			}
			t.Add(thousands(r.n), run, testenv.Millis(r.stream), testenv.Millis(r.total), note)
		}
		for _, n := range o.birdCounts {
			sec.Target(fmt.Sprintf("%s routes from BIRD reach the kernel, every run", thousands(n)),
				fmt.Sprintf("%d of %d runs", o.birdRuns, o.birdRuns), fmt.Sprintf("%d of %d runs", ok[n], o.birdRuns), ok[n] == o.birdRuns)
		}
	}
	if o.want("mem") {
		t := sec.Table("brindled memory, idle", "RSS after 2 s idle, full mesh.", "peers", "RSS")
		for _, nodes := range []int{1, 11} {
			rss, err := idleRSS(o.bin, nodes)
			if err != nil {
				return err
			}
			t.Add(fmt.Sprint(nodes-1), mib(rss))
		}
	}
	return sec.Emit()
}

// scaleSection runs the route-reflector labs (and the mesh at 10).
func scaleSection(o *options, sec *benchreport.Section) error {
	var results []*scaleResult
	if o.want("mesh") {
		progress("full mesh, 10 nodes ...")
		r, err := scaleLab(o.bin, 10, o.claims, false)
		if err != nil {
			return fmt.Errorf("mesh, 10 nodes: %w", err)
		}
		results = append(results, r)
	}
	if o.want("scale") {
		for _, n := range o.sizes {
			progress("mesh off, 2 route reflectors, %d nodes ...", n)
			r, err := scaleLab(o.bin, n, o.claims, true)
			if err != nil {
				return fmt.Errorf("%d nodes: %w", n, err)
			}
			results = append(results, r)
		}
	}
	t := sec.Table("Cluster convergence and memory",
		"Cold start: every node's block claimed, then every brindled started at once, until the last block route is in the last kernel. "+
			"Claim -> route: a block's claim written to etcd (as IPAM's claim transaction writes it), until the route is in each other node's kernel; "+fmt.Sprint(o.claims)+" claims, round robin. "+
			"Lighter nodes: brindled at --log-level info; each node a network namespace, all on one 2-core machine. "+
			"RSS (VmRSS) counts the pages of brindled's 60+ MB executable it has mapped, which all brindled processes share; anon (RssAnon) is its own heap and stacks.",
		"nodes", "peering", "cold start", "claim -> owner's blackhole p50", "claim -> route p50", "p99", "max", "samples", "RSS reflector (anon)", "RSS client (anon)")
	var byRR []*scaleResult
	for _, r := range results {
		peering, rrRSS := "full mesh", "-"
		if r.rr {
			peering, rrRSS = "2 reflectors", fmt.Sprintf("%s (%s)", mib(r.rssRR), mib(r.anonRR))
			byRR = append(byRR, r)
		}
		t.Add(fmt.Sprint(r.nodes), peering, testenv.Millis(r.cold), testenv.Millis(testenv.Percentile(r.own, 50)), testenv.Millis(testenv.Percentile(r.lat, 50)),
			testenv.Millis(testenv.Percentile(r.lat, 99)), testenv.Millis(slices.Max(r.lat)), fmt.Sprint(len(r.lat)), rrRSS,
			fmt.Sprintf("%s (%s)", mib(r.rssClient), mib(r.anonClient)))
	}
	if len(byRR) == 0 {
		return nil
	}
	w := sec.Table("etcd watch traffic per node per cluster-wide ADD",
		"2 ADDs per node through the allocator (block, handle, endpoint, as brindle-ipam writes them); events and bytes (keys and values) "+
			"received by each brindled's cache (brindle_etcd_watch_*_total), averaged over the nodes, and what one watch of the whole "+
			"/brindle/v1/ received (what every node received before the watch was scoped).",
		"nodes", "ADDs", "brindled events", "brindled bytes", "whole-prefix watch events", "whole-prefix watch bytes")
	cpu := sec.Table("CPU per claim",
		"User and system time of the processes during the claims (/proc/PID/stat), divided by the claims: the reflectors' together, "+
			"every other node's brindled together (and their context switches), and this benchmark's (its netlink watches of every node); "+
			"then the same processes' CPU per second over 5 s after the claims, with nothing happening. On 2 cores, the clients' "+
			"CPU per claim is most of what a claim waits for.",
		"nodes", "reflectors", "clients", "clients' context switches", "benchmark", "idle, per second: reflectors", "clients", "claims took")
	s := sec.Table("A route reflector stopped",
		"Pods on up to 10 client nodes ping each other in a ring every 20 ms; the first reflector's brindled is stopped (SIGTERM) "+
			"and 12 s later (past the 9 s hold time) every other node's brindle routes are compared with what it had before.",
		"nodes", "pings sent", "lost", "routes checked", "routes lost")
	for _, r := range byRR {
		w.Add(fmt.Sprint(r.nodes), fmt.Sprint(r.adds), fmt.Sprintf("%.3f", r.nodeEvents), fmt.Sprintf("%.0f", r.nodeBytes),
			fmt.Sprintf("%.2f", r.rootEvents), fmt.Sprintf("%.0f", r.rootBytes))
		cpu.Add(fmt.Sprint(r.nodes), testenv.Millis(r.cpu.reflectors), testenv.Millis(r.cpu.clients), fmt.Sprint(r.cpu.switches),
			testenv.Millis(r.cpu.bench), testenv.Millis(r.idle.reflectors), testenv.Millis(r.idle.clients), testenv.Millis(r.claimsTook))
		s.Add(fmt.Sprint(r.nodes), fmt.Sprint(r.pingSent), fmt.Sprint(r.pingLost), fmt.Sprint(r.routesChecked), fmt.Sprint(r.routesLost))
		sec.Target(fmt.Sprintf("reflector stopped at %d nodes: pings lost, routes lost", r.nodes), "0, 0",
			fmt.Sprintf("%d, %d", r.pingLost, r.routesLost), r.pingSent > 0 && r.pingLost == 0 && r.routesLost == 0)
	}
	first, last := byRR[0], byRR[len(byRR)-1]
	sec.Target(fmt.Sprintf("watch events per node per cluster-wide ADD, %d vs %d nodes", last.nodes, first.nodes), "flat (not above the smaller cluster's)",
		fmt.Sprintf("%.3f vs %.3f", last.nodeEvents, first.nodeEvents), last.nodeEvents <= first.nodeEvents*1.1)
	sec.Target(fmt.Sprintf("watch bytes per node per cluster-wide ADD, %d vs %d nodes", last.nodes, first.nodes), "flat (not above the smaller cluster's)",
		fmt.Sprintf("%.0f vs %.0f", last.nodeBytes, first.nodeBytes), last.nodeBytes <= first.nodeBytes*1.1)
	for _, r := range byRR {
		if r.nodes == 100 {
			p99 := testenv.Percentile(r.lat, 99)
			sec.Target("claim -> route p99 at 100 nodes", "< 100 ms", testenv.Millis(p99), p99 < 100*time.Millisecond)
			sec.Target("brindled RSS of a reflector with 100 nodes", "< 64 MiB", mib(r.rssRR), r.rssRR < 64<<20)
		}
	}
	return nil
}

func idleRSS(bin string, nodes int) (int64, error) {
	r, err := scaleIdle(bin, nodes)
	return r, err
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
