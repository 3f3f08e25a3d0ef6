// Command benchbgp measures brindled on the lab: how long a block claimed
// on one node takes to be routed in the kernels of the others (3 and 10
// nodes), how long 10,000 routes take to reach the kernel (route sync
// alone, and end to end from a BGP peer), and brindled's resident memory.
// Run it as root: make bench-bgp.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/test/lab"
)

func main() {
	bin := flag.String("bin", "", "directory with built binaries (default: build them)")
	claims := flag.Int("claims", 30, "blocks claimed per convergence run")
	only := flag.String("only", "", "run only these sections, comma-separated: conv, mem, fib, bird")
	birdRuns := flag.Int("bird-runs", 5, "runs of each BIRD route count")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	sections = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s != "" {
			sections[s] = true
		}
	}
	birdRunsN = *birdRuns
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchbgp: needs root (network namespaces); run `sudo make bench-bgp`")
		os.Exit(2)
	}
	if err := run(*bin, *claims); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "benchbgp:", err)
		os.Exit(1)
	}
}

type row struct{ name, value, note string }

var (
	sections  map[string]bool
	birdRunsN int
)

func want(section string) bool { return len(sections) == 0 || sections[section] }

func run(bin string, claims int) error {
	if bin == "" {
		fmt.Fprintln(os.Stderr, "building ...")
		d, err := testenv.Build(nil)
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		bin = d
	}
	var rows []row
	var conv []string
	if want("conv") {
		for _, nodes := range []int{3, 10} {
			fmt.Fprintf(os.Stderr, "convergence, %d nodes, %d block claims ...\n", nodes, claims)
			lat, rss, err := convergence(bin, nodes, claims)
			if err != nil {
				return err
			}
			conv = append(conv, fmt.Sprintf("%d nodes\t%d\t%s\t%s\t%s\t", nodes, len(lat), testenv.Millis(testenv.Percentile(lat, 50)), testenv.Millis(testenv.Percentile(lat, 99)), testenv.Millis(slices.Max(lat))))
			rows = append(rows, row{fmt.Sprintf("brindled RSS, %d peers, after the run", nodes-1), mib(rss), ""})
		}
	}
	if want("mem") {
		fmt.Fprintln(os.Stderr, "memory, idle and with 10 peers ...")
		for _, nodes := range []int{1, 11} {
			rss, err := idleRSS(bin, nodes)
			if err != nil {
				return err
			}
			rows = append(rows, row{fmt.Sprintf("brindled RSS idle, %d peers", nodes-1), mib(rss), ""})
		}
	}
	if want("fib") {
		for _, n := range []int{10000, 100000} {
			fmt.Fprintf(os.Stderr, "%s routes through route sync ...\n", thousands(n))
			fr, err := fibBench(n)
			if err != nil {
				return err
			}
			rows = append(rows, fr...)
		}
	}
	if want("bird") {
		rows = append(rows, birdRows(birdRoutes(bin, []int{10000, 100000}, birdRunsN))...)
	}

	fmt.Printf("\nbrindled on the lab (%s)\n\nConvergence: block claimed in etcd -> route in every other node's kernel\n\n", time.Now().UTC().Format(time.RFC3339))
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "cluster\tsamples\tp50\tp99\tmax\t")
	for _, c := range conv {
		fmt.Fprintln(w, c)
	}
	w.Flush()
	fmt.Println()
	w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "measure\tvalue\tnote")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\n", r.name, r.value, r.note)
	}
	return w.Flush()
}

// convergence claims blocks one at a time, round robin over the nodes, by
// writing the node's affinity to etcd as IPAM does, and times the arrival
// of the route in every other node's kernel (netlink events, not polling).
func convergence(bin string, nodes, claims int) ([]time.Duration, int64, error) {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "benchbgp-")
	defer os.RemoveAll(dir)
	l, err := lab.New(ctx, lab.Config{Nodes: nodes, BinDir: bin, Dir: dir})
	if err != nil {
		return nil, 0, err
	}
	defer l.Close()
	if err := l.WaitReady(ctx, 60*time.Second); err != nil {
		return nil, 0, err
	}
	type arrival struct {
		node int
		dst  string
		at   time.Time
	}
	arrivals := make(chan arrival, 1024)
	done := make(chan struct{})
	defer close(done)
	for i, n := range l.Nodes {
		h, err := netns.GetFromPath(n.NS.Path())
		if err != nil {
			return nil, 0, err
		}
		ch := make(chan netlink.RouteUpdate, 1024)
		if err := netlink.RouteSubscribeAt(h, ch, done); err != nil {
			return nil, 0, err
		}
		go func() {
			for u := range ch {
				if u.Type == unix.RTM_NEWROUTE && u.Route.Protocol == bgpd.RouteProtocol && u.Route.Dst != nil {
					arrivals <- arrival{i, u.Route.Dst.String(), time.Now()}
				}
			}
		}()
	}
	var lat []time.Duration
	for c := range claims {
		owner := c % nodes
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(200 + c/4), byte((c % 4) * 64)}), 26)
		key := ipam.Prefix + "ipam/affinity/" + l.Nodes[owner].Name + "/" + strings.ReplaceAll(block.String(), "/", "-")
		val, _ := json.Marshal(ipam.Affinity{V: 1, State: ipam.AffinityConfirmed, Since: time.Now()})
		start := time.Now()
		if _, err := l.Etcd.Put(ctx, key, string(val)); err != nil {
			return nil, 0, err
		}
		seen := map[int]bool{}
		timeout := time.After(5 * time.Second)
		for len(seen) < nodes-1 {
			select {
			case a := <-arrivals:
				if a.dst == block.String() && a.node != owner && !seen[a.node] {
					seen[a.node] = true
					lat = append(lat, a.at.Sub(start))
				}
			case <-timeout:
				return nil, 0, fmt.Errorf("block %s on %s: routed on %d of %d nodes after 5s", block, l.Nodes[owner].Name, len(seen), nodes-1)
			}
		}
	}
	rss, err := l.Nodes[0].RSS()
	return lat, rss, err
}

func idleRSS(bin string, nodes int) (int64, error) {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "benchbgp-")
	defer os.RemoveAll(dir)
	l, err := lab.New(ctx, lab.Config{Nodes: nodes, BinDir: bin, Dir: dir})
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

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
