// Command benchdataplane measures brindle's dataplane on the lab: iperf3
// single-stream TCP throughput and TCP request/response latency for pod to
// pod on one node, across nodes natively and across nodes through VXLAN,
// each against a raw baseline measured in the same run (a plain veth pair,
// two plain namespaces routed through a third, and node to node on the
// lab's underlay). Run it as root: make bench-dataplane.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/benchreport"
	"github.com/brindle-net/brindle/test/lab"
)

type options struct {
	bin      string
	duration time.Duration
	runs     int
	requests int
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "directory with built binaries (default: build them)")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "length of each iperf3 run")
	flag.IntVar(&o.runs, "runs", 3, "iperf3 runs per path (the median is reported)")
	flag.IntVar(&o.requests, "requests", 5000, "request/response round trips per path")
	flag.Parse()
	benchreport.CleanUpOnInterrupt()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchdataplane: needs root (network namespaces); run `sudo make bench-dataplane`")
		os.Exit(2)
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		fmt.Fprintln(os.Stderr, "benchdataplane: iperf3 is not installed (apt-get install iperf3, or scripts/install-deps.sh)")
		os.Exit(2)
	}
	err := run(o)
	testenv.Cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchdataplane:", err)
		os.Exit(1)
	}
}

// path is one way from a client namespace to a server address.
type path struct {
	name, baseline string
	from, to       ns.NetNS
	addr           netip.Addr
}

type result struct {
	path
	gbps     float64
	cpu      float64 // machine CPU cores busy per Gbit/s
	p50, p99 time.Duration
}

func run(o options) error {
	if o.bin == "" {
		fmt.Fprintln(os.Stderr, "building ...")
		d, err := testenv.Build(nil)
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.bin = d
	}
	var paths []path

	vA, vB, closeVeth, err := rawVeth()
	if err != nil {
		return fmt.Errorf("raw veth pair: %w", err)
	}
	defer closeVeth()
	paths = append(paths, path{name: "raw: veth pair", from: vA, to: vB, addr: rawVethB.Addr()})
	rA, rB, closeRouted, err := rawRouted()
	if err != nil {
		return fmt.Errorf("raw routed namespaces: %w", err)
	}
	defer closeRouted()
	paths = append(paths, path{name: "raw: routed through one host", from: rA, to: rB, addr: routedB.Addr()})

	dir, err := os.MkdirTemp("", "benchdataplane")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pool := lab.DefaultPool()
	fmt.Fprintln(os.Stderr, "lab: 2 nodes, one subnet ...")
	l, err := lab.New(context.Background(), lab.Config{Nodes: 2, BinDir: o.bin, Dir: dir, Pools: []conf.IPPool{pool}})
	if err != nil {
		return err
	}
	defer l.Close()
	ctx := context.Background()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		return err
	}
	n1, n2 := l.Nodes[0], l.Nodes[1]
	paths = append(paths, path{name: "raw: node to node (underlay)", from: n1.NS, to: n2.NS, addr: n2.Addr.Addr()})
	a, err := n1.AddPod(ctx, "a")
	if err != nil {
		return err
	}
	b, err := n1.AddPod(ctx, "b")
	if err != nil {
		return err
	}
	c, err := n2.AddPod(ctx, "c")
	if err != nil {
		return err
	}
	if err := waitReach(a.NS, c.Addr); err != nil {
		return err
	}
	paths = append(paths,
		path{name: "pod to pod, same node", baseline: "raw: routed through one host", from: a.NS, to: b.NS, addr: b.Addr},
		path{name: "pod to pod, across nodes, native", baseline: "raw: node to node (underlay)", from: a.NS, to: c.NS, addr: c.Addr})
	results, err := measureAll(o, paths)
	if err != nil {
		return err
	}

	// VXLAN Always at run time; new pods get the VXLAN MTU.
	fmt.Fprintln(os.Stderr, "switching the pool to vxlanMode Always ...")
	pool.Spec.VXLANMode = conf.EncapAlways
	if err := l.PutPool(ctx, pool); err != nil {
		return err
	}
	if err := waitVXLANRoute(n1); err != nil {
		return err
	}
	v1, err := n1.AddPod(ctx, "v1")
	if err != nil {
		return err
	}
	v2, err := n2.AddPod(ctx, "v2")
	if err != nil {
		return err
	}
	if err := waitReach(v1.NS, v2.Addr); err != nil {
		return err
	}
	if out, _ := lab.Run(n1.NS, "ip", "route", "get", v2.Addr.String()); !strings.Contains(out, "dev vxlan.brindle") {
		return fmt.Errorf("node-1 does not route %s through vxlan.brindle: %s", v2.Addr, out)
	}
	vx, err := measureAll(o, []path{{name: "pod to pod, across nodes, VXLAN", baseline: "raw: node to node (underlay)", from: v1.NS, to: v2.NS, addr: v2.Addr}})
	if err != nil {
		return err
	}
	results = append(results, vx...)

	// Back to native, and the native path again: this machine's speed
	// drifts, so VXLAN is compared with native measured on both sides of it.
	fmt.Fprintln(os.Stderr, "switching the pool back to vxlanMode Never ...")
	pool.Spec.VXLANMode = conf.EncapNever
	if err := l.PutPool(ctx, pool); err != nil {
		return err
	}
	if err := waitNoVXLANRoute(n1); err != nil {
		return err
	}
	if err := waitReach(a.NS, c.Addr); err != nil {
		return err
	}
	again, err := measureAll(o, []path{{name: "pod to pod, across nodes, native (again)", baseline: "raw: node to node (underlay)", from: a.NS, to: c.NS, addr: c.Addr}})
	if err != nil {
		return err
	}
	results = append(results, again...)
	return print(o, results)
}

func measureAll(o options, paths []path) ([]result, error) {
	var out []result
	for _, p := range paths {
		fmt.Fprintf(os.Stderr, "%s ...\n", p.name)
		r := result{path: p}
		var gs, cs []float64
		for range o.runs {
			g, c, err := iperf(p, o.duration)
			if err != nil {
				return nil, fmt.Errorf("%s: iperf3: %w", p.name, err)
			}
			gs, cs = append(gs, g), append(cs, c)
		}
		r.gbps, r.cpu = testenv.Median(gs), testenv.Median(cs)
		lat, err := latency(p, o.requests)
		if err != nil {
			return nil, fmt.Errorf("%s: latency: %w", p.name, err)
		}
		r.p50, r.p99 = testenv.Percentile(lat, 50), testenv.Percentile(lat, 99)
		out = append(out, r)
	}
	return out, nil
}

func print(o options, rs []result) error {
	by := map[string]result{}
	for _, r := range rs {
		by[r.name] = r
	}
	sec := &benchreport.Section{Name: "bench-dataplane", Command: "make bench-dataplane",
		Intro: "Pod to pod on the lab, each path against a raw baseline measured in the same run. CPU is the whole machine's busy time " +
			"during the iperf3 run (/proc/stat), so other load on the machine counts too."}
	t := sec.Table("Throughput and latency",
		fmt.Sprintf("iperf3 single TCP stream, %d x %s runs (median); request/response latency over %d round trips of 1 byte on one TCP connection.", o.runs, o.duration, o.requests),
		"path", "Gbit/s", "x baseline", "p50 µs", "p99 µs", "p50 x baseline", "CPU cores per Gbit/s", "baseline")
	for _, r := range rs {
		ratio, lratio := "", ""
		if b, ok := by[r.baseline]; ok {
			ratio = fmt.Sprintf("%.2f", r.gbps/b.gbps)
			lratio = fmt.Sprintf("%.2f", float64(r.p50)/float64(b.p50))
		}
		t.Add(r.name, fmt.Sprintf("%.2f", r.gbps), ratio, fmt.Sprintf("%.0f", us(r.p50)), fmt.Sprintf("%.0f", us(r.p99)), lratio, fmt.Sprintf("%.2f", r.cpu), r.baseline)
	}
	same, routed := by["pod to pod, same node"], by["raw: routed through one host"]
	vx := by["pod to pod, across nodes, VXLAN"]
	native := (by["pod to pod, across nodes, native"].gbps + by["pod to pod, across nodes, native (again)"].gbps) / 2
	sec.Target("same-node pod to pod, of a plain routed path", "≥ 0.95", fmt.Sprintf("%.2f", same.gbps/routed.gbps), same.gbps/routed.gbps >= 0.95)
	sec.Target("VXLAN across nodes, of native (mean of the two native runs)", "≥ 0.80", fmt.Sprintf("%.2f", vx.gbps/native), vx.gbps/native >= 0.8)
	return sec.Emit()
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

// iperf runs one iperf3 test from p.from to a one-off server at p.addr in
// p.to, and returns the receiver's throughput and the machine's CPU per
// Gbit/s during it.
func iperf(p path, d time.Duration) (gbps, cpuPerGbit float64, err error) {
	srv := exec.Command("iperf3", "-s", "-1", "-B", p.addr.String(), "-p", "5201")
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	srv.Stdout, srv.Stderr = io.Discard, io.Discard
	done, err := testenv.StartIn(p.to, srv)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = srv.Process.Kill()
			<-done
		}
	}()
	var out string
	var busy0, total0 uint64
	for try := 0; ; try++ {
		busy0, total0 = cpuTimes()
		out, err = lab.Run(p.from, "iperf3", "-c", p.addr.String(), "-p", "5201", "-t", strconv.Itoa(int(d.Seconds())), "-J")
		// A server not listening yet is reported in the JSON, exit status 0 or not.
		if try > 50 || !strings.Contains(out, "unable to connect") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	busy1, total1 := cpuTimes()
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %s", err, tail(out))
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return 0, 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if res.Error != "" {
		return 0, 0, errors.New(res.Error)
	}
	gbps = res.End.SumReceived.BitsPerSecond / 1e9
	cores := float64(busy1-busy0) / float64(total1-total0) * float64(ncpu())
	if gbps > 0 {
		cpuPerGbit = cores / gbps
	}
	return gbps, cpuPerGbit, nil
}

func tail(s string) string {
	if len(s) > 400 {
		return s[len(s)-400:]
	}
	return s
}

// cpuTimes reads the machine's busy and total jiffies from /proc/stat.
func cpuTimes() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

func ncpu() int {
	b, _ := os.ReadFile("/proc/stat")
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			n++
		}
	}
	return max(n, 1)
}

// latency measures n sequential 1-byte request/response round trips over
// one TCP connection (after a warm-up).
func latency(p path, n int) ([]time.Duration, error) {
	var ln net.Listener
	err := p.to.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(p.addr.String(), "0"))
		return err
	})
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	var c net.Conn
	err = p.from.Do(func(ns.NetNS) (err error) {
		c, err = (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp4", ln.Addr().String())
		return err
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	buf := []byte{1}
	out := make([]time.Duration, 0, n)
	for i := range n + 200 {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, err
		}
		if i >= 200 {
			out = append(out, time.Since(start))
		}
	}
	return out, nil
}

func waitReach(from ns.NetNS, to netip.Addr) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := testenv.Ping(from, to, 1)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}

// waitVXLANRoute waits until n routes a remote block through vxlan.brindle.
func waitVXLANRoute(n *lab.Node) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := lab.Run(n.NS, "ip", "route", "show", "proto", "98")
		if strings.Contains(out, "dev vxlan.brindle") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no route through vxlan.brindle after 20s:\n%s", n.Name, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitNoVXLANRoute waits until n routes nothing through vxlan.brindle.
func waitNoVXLANRoute(n *lab.Node) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := lab.Run(n.NS, "ip", "route", "show", "proto", "98")
		if !strings.Contains(out, "dev vxlan.brindle") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: routes still through vxlan.brindle after 20s:\n%s", n.Name, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Raw baselines, in the benchmarking range 198.18.0.0/15, in namespaces of
// their own.
var (
	rawVethA = netip.MustParsePrefix("198.18.10.1/24")
	rawVethB = netip.MustParsePrefix("198.18.10.2/24")
	routedA  = netip.MustParsePrefix("198.18.11.2/24")
	routerA  = netip.MustParsePrefix("198.18.11.1/24")
	routedB  = netip.MustParsePrefix("198.18.12.2/24")
	routerB  = netip.MustParsePrefix("198.18.12.1/24")
)

// rawVeth is two namespaces joined by one veth pair.
func rawVeth() (a, b ns.NetNS, cleanup func(), err error) {
	var cs []func()
	cleanup = func() {
		for _, c := range cs {
			c()
		}
	}
	for _, p := range []*ns.NetNS{&a, &b} {
		n, c, err := testenv.CreateNS()
		if err != nil {
			cleanup()
			return nil, nil, nil, err
		}
		*p, cs = n, append(cs, c)
	}
	if err := link(a, b, "eth0", "eth0", rawVethA, rawVethB); err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	return a, b, cleanup, nil
}

// rawRouted is two namespaces, each joined by a veth pair to a third that
// routes between them: the shape of a pod-to-pod path on one node.
func rawRouted() (a, b ns.NetNS, cleanup func(), err error) {
	var r ns.NetNS
	var cs []func()
	cleanup = func() {
		for _, c := range cs {
			c()
		}
	}
	for _, p := range []*ns.NetNS{&a, &b, &r} {
		n, c, err := testenv.CreateNS()
		if err != nil {
			cleanup()
			return nil, nil, nil, err
		}
		*p, cs = n, append(cs, c)
	}
	err = errors.Join(link(a, r, "eth0", "to-a", routedA, routerA), link(b, r, "eth0", "to-b", routedB, routerB),
		defaultVia(a, routerA.Addr()), defaultVia(b, routerB.Addr()),
		r.Do(func(ns.NetNS) error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }))
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	return a, b, cleanup, nil
}

// link joins x and y with a veth pair (xName in x, yName in y) and
// addresses both ends.
func link(x, y ns.NetNS, xName, yName string, xAddr, yAddr netip.Prefix) error {
	err := x.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: xName}, PeerName: yName, PeerNamespace: netlink.NsFd(int(y.Fd()))}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		return up(xName, xAddr)
	})
	if err != nil {
		return err
	}
	return y.Do(func(ns.NetNS) error { return up(yName, yAddr) })
}

func up(name string, addr netip.Prefix) error {
	for _, n := range []string{"lo", name} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	l, _ := netlink.LinkByName(name)
	return netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}})
}

func defaultVia(n ns.NetNS, gw netip.Addr) error {
	return n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()})
	})
}
