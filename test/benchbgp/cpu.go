package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/brindle-net/brindle/test/lab"
)

// cpuSample is the CPU time used so far by the lab's reflectors, its
// clients and this process, and the clients' context switches.
type cpuSample struct {
	reflectors, clients, bench time.Duration
	switches                   int64
}

// contextSwitches counts a process's context switches so far, voluntary
// or not, over its threads (/proc/PID/status counts only the first).
func contextSwitches(pid int) int64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var n int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += c
			}
		}
	}
	return n
}

func sampleCPU(l *lab.Lab, reflectors int) (cpuSample, error) {
	var s cpuSample
	for i, n := range l.Nodes {
		c, err := lab.ProcCPU(n.PID())
		if err != nil {
			return s, fmt.Errorf("%s: %w", n.Name, err)
		}
		if i < reflectors {
			s.reflectors += c
		} else {
			s.clients += c
			s.switches += contextSwitches(n.PID())
		}
	}
	c, err := lab.ProcCPU(os.Getpid())
	s.bench = c
	return s, err
}

// perClaim is the CPU used between two samples, divided by the claims.
func (s cpuSample) perClaim(before cpuSample, claims int) cpuSample {
	d := time.Duration(max(claims, 1))
	return cpuSample{(s.reflectors - before.reflectors) / d, (s.clients - before.clients) / d, (s.bench - before.bench) / d,
		(s.switches - before.switches) / int64(d)}
}

// idleCPU is the CPU per second of the lab's processes over 5 s with
// nothing happening, after 2 s of quiet (with -perf, recorded too).
func idleCPU(l *lab.Lab, reflectors, n int) (cpuSample, error) {
	time.Sleep(2 * time.Second)
	before, err := sampleCPU(l, reflectors)
	if err != nil {
		return before, err
	}
	stop := func() error { return nil }
	if perfFile != "" {
		if stop, err = perfRecord(fmt.Sprintf("%s.idle.%d", perfFile, n), l.Nodes[reflectors:]); err != nil {
			return before, err
		}
		before, _ = sampleCPU(l, reflectors)
	}
	time.Sleep(5 * time.Second)
	after, err := sampleCPU(l, reflectors)
	_ = stop()
	return after.perClaim(before, 5), err
}

// perfRecord starts `perf record` on the given nodes' brindled (sampled
// call graphs, for `perf report`) and returns the function that stops it.
func perfRecord(file string, nodes []*lab.Node) (func() error, error) {
	var pids []string
	for _, n := range nodes {
		pids = append(pids, strconv.Itoa(n.PID()))
	}
	cmd := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-o", file, "-p", strings.Join(pids, ","))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(500 * time.Millisecond) // perf has attached
	return func() error {
		_ = cmd.Process.Signal(syscall.SIGINT)
		return cmd.Wait()
	}, nil
}
