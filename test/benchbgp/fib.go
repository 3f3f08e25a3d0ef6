package main

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/internal/testenv"
)

// threadCPU is the CPU time (user and system) of the calling thread. Route
// sync runs on one locked thread and rtnetlink does its work inside that
// thread's sendmsg and recvmsg, so this is what a sync costs, whatever else
// runs on the machine: wall time on a loaded machine includes waiting for a
// core, CPU time does not.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fibBench times route sync alone, in a fresh namespace, as brindled runs
// it: installing n routes, a Set of the same n (compared with what the last
// Set left), a full resync of the same n (the kernel listed and compared,
// as every --resync and after a route deleted by hand), changing the next
// hop of 1% of them, and removing them all.
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
		sock, err := bgpd.OpenRouteSocket()
		if err != nil {
			return err
		}
		defer sock.Close()
		fib := bgpd.NewFIB(bgpd.Netlink{H: h, Sock: sock}, quietLog(), false)
		gw1, gw2 := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
		routes := func(changed int) []bgpd.Route {
			out := make([]bgpd.Route, n)
			for i := range n {
				gw := gw1
				if i < changed {
					gw = gw2
				}
				out[i] = bgpd.Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>14), byte(i >> 6), byte(i&63) << 2}), 30), Gw: gw}
			}
			return out
		}
		want := routes(0)
		for _, step := range []struct {
			name, note string
			set        []bgpd.Route
			full       bool
		}{
			{name: "install %s routes", set: want},
			{name: "Set of %s unchanged routes", set: want, note: "compared with what the last Set left"},
			{name: "full resync of %s unchanged routes", set: want, full: true, note: "kernel listed and compared"},
			{name: "next hop of 1%% of %s routes changed", set: routes(n / 100)},
			{name: "delete %s routes", set: nil},
		} {
			if step.full {
				fib.Invalidate()
			}
			cpu0 := threadCPU()
			start := time.Now()
			res, err := fib.Set(step.set)
			took := time.Since(start)
			cpu := threadCPU() - cpu0
			if err != nil {
				return err
			}
			note := fmt.Sprintf("%d added or replaced, %d deleted", res.Added, res.Deleted)
			if step.note != "" {
				note = step.note + "; " + note
			}
			rows = append(rows, row{"route sync: " + fmt.Sprintf(step.name, thousands(n)), testenv.Millis(took), testenv.Millis(cpu), note})
		}
		return nil
	})
	return rows, err
}
