package main

import (
	"flag"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"time"
)

// maxProcsFlag registers --max-procs: how many processors (GOMAXPROCS)
// brindled's Go scheduler uses.
//
// brindled's work comes in small bursts (a BGP UPDATE, an etcd event, a
// route, a netlink answer), each handed between a few goroutines. With
// idle processors to spare, every hand-off wakes another thread, and the
// runtime's monitor polls every 20 µs while any of them runs: a node then
// spends more CPU switching threads than on the work. One processor keeps
// a burst on one thread. Measured on the 100-node lab together with the
// timer slack below and the policy enforcer's commit watch (docs/bgp.md,
// "The nodes' CPU per claim"): the clients' CPU per claimed block fell by a
// median 42% over 13 pairs and their context switches by 66-81%. A route
// reflector with many hundreds of clients may want more.
func maxProcsFlag(fs *flag.FlagSet) *int {
	return fs.Int("max-procs", 1, "processors brindled's Go scheduler uses (GOMAXPROCS); 0: one per CPU (Go's default). $GOMAXPROCS, when set, wins")
}

// setMaxProcs applies --max-procs unless GOMAXPROCS is set.
func setMaxProcs(n int, log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" || n <= 0 {
		return
	}
	if n > runtime.NumCPU() {
		n = runtime.NumCPU()
	}
	runtime.GOMAXPROCS(n)
	log.Debug("Go scheduler", "maxProcs", n)
}

// timerSlackFlag registers --timer-slack: how late the kernel may wake
// brindled's threads from a timed sleep.
//
// The runtime's monitor thread (sysmon) sleeps 20 µs at a time while any
// goroutine runs, and a node's burst of work lasts, on a busy machine,
// as long as it waits for a core: with the kernel's default slack (50 µs)
// the monitor then wakes thousands of times a second, each a context
// switch. A millisecond of slack lets the kernel wake it with the other
// timers due about then; nothing in brindled sleeps for less than
// seconds, and a wake-up on a socket or a channel is not a timer.
func timerSlackFlag(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("timer-slack", time.Millisecond, "timer slack of brindled's threads (how late a timed sleep may end); 0: the kernel's default")
}

// setTimerSlack gives every thread of the process the slack d (through
// /proc/TID/timerslack_ns: prctl would set only the calling thread's,
// and the monitor starts before main). Threads
// started later inherit their creator's, so doing it first thing covers
// all of them.
func setTimerSlack(d time.Duration, log *slog.Logger) {
	if d <= 0 {
		return
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		log.Debug("timer slack not set", "err", err)
		return
	}
	v := []byte(strconv.FormatInt(d.Nanoseconds(), 10))
	for _, t := range tasks {
		if err := os.WriteFile("/proc/"+t.Name()+"/timerslack_ns", v, 0); err != nil {
			log.Debug("timer slack not set", "thread", t.Name(), "err", err)
		}
	}
}
