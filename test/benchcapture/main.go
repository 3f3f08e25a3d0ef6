// Command benchcapture measures brindlectl capture on the lab against
// tcpdump (libpcap, TPACKET_V3) on the same host veth in the same run: a pod
// sends to another pod on its node (iperf3: one TCP stream, and a UDP flood
// of small datagrams) while one of them captures, and the table shows the
// throughput, the packets that crossed the veth (its counters), how many of
// them each captured, what the kernel dropped, and the CPU used. Run it as
// root: make bench-capture.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/benchreport"
	"github.com/brindle-net/brindle/test/lab"
)

func main() {
	bin := flag.String("bin", "", "directory with built binaries (default: build them)")
	dur := flag.Duration("duration", 3*time.Second, "length of each run")
	flag.Parse()
	benchreport.CleanUpOnInterrupt()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchcapture: needs root (network namespaces)")
		os.Exit(2)
	}
	for _, tool := range []string{"iperf3", "tcpdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "benchcapture: %s is not installed (scripts/install-deps.sh)\n", tool)
			os.Exit(2)
		}
	}
	err := run(*bin, *dur)
	testenv.Cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchcapture:", err)
		os.Exit(1)
	}
}

type row struct {
	traffic, capturer   string
	mbps                float64
	crossed, got, drops uint64
	cpu                 float64 // seconds of CPU of the capturing side
}

func run(bin string, d time.Duration) error {
	if bin == "" {
		b, err := testenv.Build(nil)
		if err != nil {
			return err
		}
		defer os.RemoveAll(b)
		bin = b
	}
	dir, err := os.MkdirTemp("", "benchcapture")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	l, err := lab.New(ctx, lab.Config{Nodes: 1, BinDir: bin, Dir: dir})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		return err
	}
	n := l.Nodes[0]
	a, err := n.AddPod(ctx, "a")
	if err != nil {
		return err
	}
	b, err := n.AddPod(ctx, "b")
	if err != nil {
		return err
	}
	var rows []row
	for _, tr := range []struct {
		name string
		args []string
	}{
		{"TCP, 1 stream", nil},
		{"UDP, 64-byte datagrams", []string{"-u", "-b", "0", "-l", "64"}},
	} {
		for _, capturer := range []string{"none", "brindlectl capture", "tcpdump"} {
			r, err := measure(n, a, b, bin, dir, capturer, tr.args, d)
			if err != nil {
				return fmt.Errorf("%s with %s: %w", tr.name, capturer, err)
			}
			r.traffic = tr.name
			rows = append(rows, r)
			fmt.Fprintf(os.Stderr, "%s, %s: done\n", tr.name, capturer)
		}
	}
	sec := &benchreport.Section{Name: "bench-capture", Command: "make bench-capture",
		Intro: fmt.Sprintf("brindlectl capture against tcpdump on one node of the lab: pod a -> pod b, captured on a's host veth %s; %s per run; %d cores.", a.HostVeth, d, numCPU())}
	t := sec.Table("Capture cost", "", "traffic", "capture (snaplen 96)", "Mbit/s", "packets on veth", "captured", "captured %", "kernel drops", "CPU s")
	for _, r := range rows {
		pct, got, drops, cpu := "-", "-", "-", "-"
		if r.capturer != "none" {
			got, drops, cpu = strconv.FormatUint(r.got, 10), strconv.FormatUint(r.drops, 10), fmt.Sprintf("%.2f", r.cpu)
			if r.crossed > 0 {
				pct = fmt.Sprintf("%.1f", 100*float64(r.got)/float64(r.crossed))
			}
		}
		t.Add(r.traffic, r.capturer, fmt.Sprintf("%.0f", r.mbps), fmt.Sprint(r.crossed), got, pct, drops, cpu)
	}
	return sec.Emit()
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func vethPackets(n *lab.Node, veth string) (uint64, error) {
	var total uint64
	err := n.NS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(veth)
		if err != nil {
			return err
		}
		s := l.Attrs().Statistics
		total = s.RxPackets + s.TxPackets
		return nil
	})
	return total, err
}

var (
	reEnded   = regexp.MustCompile(`capture ended \(\w+\): (\d+) packets`)
	reDropped = regexp.MustCompile(`(\d+) dropped by the kernel`)
	reTcpdump = regexp.MustCompile(`(\d+) packets captured`)
	reTdDrops = regexp.MustCompile(`(\d+) packets dropped by kernel`)
)

func measure(n *lab.Node, a, b *lab.Pod, bin, dir, capturer string, iperfArgs []string, d time.Duration) (row, error) {
	r := row{capturer: capturer}
	var capCmd *exec.Cmd
	var capErr strings.Builder
	var capDone <-chan error
	file := filepath.Join(dir, "cap.pcap")
	os.Remove(file)
	switch capturer {
	case "brindlectl capture":
		capCmd = exec.Command(filepath.Join(bin, "brindlectl"), "capture", "default/a", "--via", "local",
			"--nodeapi-socket", n.NodeAPISocket(), "--snaplen", "96", "--duration", (d + 2*time.Second).String(), "--max-size", "1GiB", "-o", file)
	case "tcpdump":
		capCmd = exec.Command("tcpdump", "-i", a.HostVeth, "-s", "96", "-w", file, "-U")
	}
	brindledCPU(n) // the baseline for this run
	if capCmd != nil {
		capCmd.Stderr = &capErr
		capCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var err error
		if capDone, err = testenv.StartIn(n.NS, capCmd); err != nil {
			return r, err
		}
		for i := 0; i < 100; i++ { // until the capture writes its header
			if fi, err := os.Stat(file); err == nil && fi.Size() >= 24 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	before, err := vethPackets(n, a.HostVeth)
	if err != nil {
		return r, err
	}
	srv := exec.Command("iperf3", "-s", "-1", "-B", b.Addr.String())
	srv.Stdout, srv.Stderr = io.Discard, io.Discard
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	srvDone, err := testenv.StartIn(b.NS, srv)
	if err != nil {
		return r, err
	}
	var out string
	for try := 0; ; try++ {
		out, err = lab.Run(a.NS, append([]string{"iperf3", "-c", b.Addr.String(), "-t", strconv.Itoa(int(d.Seconds())), "-J"}, iperfArgs...)...)
		if try > 50 || !strings.Contains(out, "unable to connect") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	<-srvDone
	if err != nil {
		return r, fmt.Errorf("iperf3: %v: %.300s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			Sum struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return r, err
	}
	r.mbps = res.End.SumReceived.BitsPerSecond / 1e6
	if r.mbps == 0 {
		r.mbps = res.End.Sum.BitsPerSecond / 1e6
	}
	after, err := vethPackets(n, a.HostVeth)
	if err != nil {
		return r, err
	}
	r.crossed = after - before
	if capCmd == nil {
		return r, nil
	}
	if capturer == "tcpdump" {
		// brindlectl ends at its --duration; tcpdump at SIGINT.
		time.Sleep(300 * time.Millisecond)
		capCmd.Process.Signal(syscall.SIGINT)
	}
	select {
	case <-capDone:
	case <-time.After(15 * time.Second):
		capCmd.Process.Kill()
		<-capDone
		return r, fmt.Errorf("%s did not stop: %s", capturer, capErr.String())
	}
	if st := capCmd.ProcessState; st != nil {
		if u, ok := st.SysUsage().(*syscall.Rusage); ok {
			r.cpu = float64(u.Utime.Nano()+u.Stime.Nano()) / 1e9
		}
	}
	msg := capErr.String()
	switch capturer {
	case "brindlectl capture":
		m := reEnded.FindStringSubmatch(msg)
		if m == nil {
			return r, fmt.Errorf("brindlectl: %s", msg)
		}
		r.got, _ = strconv.ParseUint(m[1], 10, 64)
		if m := reDropped.FindStringSubmatch(msg); m != nil {
			r.drops, _ = strconv.ParseUint(m[1], 10, 64)
		}
		// brindled's own CPU is the capturing work; brindlectl only copies.
		r.cpu += brindledCPU(n)
		if os.Getenv("BENCH_DEBUG") != "" {
			b, _ := os.ReadFile(n.LogFile())
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "capture ended") {
					fmt.Fprintln(os.Stderr, line)
				}
			}
		}
	case "tcpdump":
		sc := bufio.NewScanner(strings.NewReader(msg))
		for sc.Scan() {
			if m := reTcpdump.FindStringSubmatch(sc.Text()); m != nil {
				r.got, _ = strconv.ParseUint(m[1], 10, 64)
			}
			if m := reTdDrops.FindStringSubmatch(sc.Text()); m != nil {
				r.drops, _ = strconv.ParseUint(m[1], 10, 64)
			}
		}
	}
	return r, nil
}

// lastBrindled is brindled's CPU time when last read, so that each run
// counts only its own.
var lastBrindled = map[int]float64{}

func brindledCPU(n *lab.Node) float64 {
	pid := n.PID()
	cpu, err := lab.ProcCPU(pid)
	if err != nil {
		return 0
	}
	now := cpu.Seconds()
	d := now - lastBrindled[pid]
	lastBrindled[pid] = now
	return d
}
