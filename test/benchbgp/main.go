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
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
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
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchbgp: needs root (network namespaces); run `sudo make bench-bgp`")
		os.Exit(2)
	}
	if err := run(*bin, *claims); err != nil {
		fmt.Fprintln(os.Stderr, "benchbgp:", err)
		os.Exit(1)
	}
}

type row struct{ name, value, note string }

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
	for _, nodes := range []int{3, 10} {
		fmt.Fprintf(os.Stderr, "convergence, %d nodes, %d block claims ...\n", nodes, claims)
		lat, rss, err := convergence(bin, nodes, claims)
		if err != nil {
			return err
		}
		conv = append(conv, fmt.Sprintf("%d nodes\t%d\t%s\t%s\t%s\t", nodes, len(lat), testenv.Millis(testenv.Percentile(lat, 50)), testenv.Millis(testenv.Percentile(lat, 99)), testenv.Millis(slices.Max(lat))))
		rows = append(rows, row{fmt.Sprintf("brindled RSS, %d peers, after the run", nodes-1), mib(rss), ""})
	}
	fmt.Fprintln(os.Stderr, "memory, idle and with 10 peers ...")
	for _, nodes := range []int{1, 11} {
		rss, err := idleRSS(bin, nodes)
		if err != nil {
			return err
		}
		rows = append(rows, row{fmt.Sprintf("brindled RSS idle, %d peers", nodes-1), mib(rss), ""})
	}
	fmt.Fprintln(os.Stderr, "10,000 routes through route sync ...")
	fr, err := fibBench(10000)
	if err != nil {
		return err
	}
	rows = append(rows, fr...)
	if lab.BirdAvailable() {
		fmt.Fprintln(os.Stderr, "10,000 routes from a BGP peer (BIRD) to the kernel ...")
		total, stream, err := bgpToKernel(bin, 10000)
		if err != nil {
			return err
		}
		rows = append(rows, row{"10,000 /32s from BIRD: first to last route in the kernel", testenv.Millis(stream), "BGP updates -> RIB -> kernel"},
			row{"10,000 /32s from BIRD: peer configured to last route", testenv.Millis(total), "includes session setup"})
	} else {
		rows = append(rows, row{"10,000 routes from a BGP peer", "skipped", "BIRD not installed"})
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

// fibBench times route sync alone in a fresh namespace: installing n
// routes, a resync that changes nothing, and removing them all.
func fibBench(n int) ([]row, error) {
	nsh, cleanup, err := testenv.CreateNS()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	peer, cleanup2, err := testenv.CreateNS()
	if err != nil {
		return nil, err
	}
	defer cleanup2()
	var rows []row
	err = nsh.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(peer.Fd()))}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		l, _ := netlink.LinkByName("eth0")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 18, 0, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		fib := bgpd.NewFIB(bgpd.Netlink{H: h}, quietLog(), false)
		var want []bgpd.Route
		for i := range n {
			want = append(want, bgpd.Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>14), byte(i >> 6), byte(i&63) << 2}), 30), Gw: netip.MustParseAddr("198.18.0.2")})
		}
		for _, step := range []struct {
			name string
			set  []bgpd.Route
		}{{fmt.Sprintf("route sync: install %d routes", n), want}, {fmt.Sprintf("route sync: resync of %d unchanged routes", n), want}, {fmt.Sprintf("route sync: delete %d routes", n), nil}} {
			start := time.Now()
			res, err := fib.Set(step.set)
			if err != nil {
				return err
			}
			rows = append(rows, row{step.name, testenv.Millis(time.Since(start)), fmt.Sprintf("%d added, %d deleted", res.Added, res.Deleted)})
		}
		return nil
	})
	return rows, err
}

// bgpToKernel: BIRD announces n host routes inside the pool to a one-node
// lab; timed from the session coming up to the last route in the kernel.
func bgpToKernel(bin string, n int) (total, stream time.Duration, err error) {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "benchbgp-")
	defer os.RemoveAll(dir)
	l, err := lab.New(ctx, lab.Config{Nodes: 1, BinDir: bin, Dir: dir})
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	var b strings.Builder
	b.WriteString("router id {{ROUTER_ID}};\nprotocol device {}\nprotocol static many {\n  ipv4;\n")
	for i := range n {
		fmt.Fprintf(&b, "  route 10.244.%d.%d/32 blackhole;\n", 100+i/250, 1+i%250)
	}
	b.WriteString("}\nprotocol bgp node1 { local as 65001; neighbor 198.19.1.11 as 64512; ipv4 { import none; export all; }; }\n")
	if _, err := l.StartBird("many", netip.MustParseAddr("198.19.1.250"), b.String()); err != nil {
		return 0, 0, err
	}
	var mu sync.Mutex
	count := 0
	var first, last time.Time
	done := make(chan struct{})
	defer close(done)
	h, err := netns.GetFromPath(l.Nodes[0].NS.Path())
	if err != nil {
		return 0, 0, err
	}
	ch := make(chan netlink.RouteUpdate, 16384)
	if err := netlink.RouteSubscribeAt(h, ch, done); err != nil {
		return 0, 0, err
	}
	go func() {
		for u := range ch {
			if u.Type == unix.RTM_NEWROUTE && u.Route.Protocol == bgpd.RouteProtocol {
				mu.Lock()
				count++
				last = time.Now()
				if count == 1 {
					first = last
				}
				mu.Unlock()
			}
		}
	}()
	peer := `{"apiVersion":"brindle.net/v1","kind":"BGPPeer","metadata":{"name":"many"},"spec":{"peerIP":"198.19.1.250","asNumber":65001}}`
	start := time.Now()
	if _, err := l.Etcd.Put(ctx, ipam.Prefix+"bgp/peers/many", peer); err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		c, f, t := count, first, last
		mu.Unlock()
		if c >= n {
			return t.Sub(start), t.Sub(f), nil
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("only %d of %d routes in the kernel after 60s", c, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
