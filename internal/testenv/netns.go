package testenv

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// NewNS creates a network namespace that is removed when the test ends.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, cleanup, err := CreateNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(cleanup)
	return n
}

// registry records, per test process, the namespaces it created, so that
// a later run can remove those of a process that was killed before it
// could clean up (SIGKILL, a CI timeout).
const registry = "/run/brindle-test"

// CreateNS creates a network namespace; cleanup removes it.
func CreateNS() (ns.NetNS, func(), error) {
	sweepOnce.Do(Sweep)
	n, err := testutils.NewNS()
	if err != nil {
		return nil, nil, err
	}
	mark := filepath.Join(registry, strconv.Itoa(os.Getpid()), filepath.Base(n.Path()))
	if err := os.MkdirAll(filepath.Dir(mark), 0o755); err == nil {
		_ = os.WriteFile(mark, []byte(n.Path()), 0o644)
	}
	return n, func() {
		n.Close()
		_ = testutils.UnmountNS(n)
		_ = os.Remove(mark)
	}, nil
}

var sweepOnce sync.Once

// Leftovers lists the namespaces process pid registered and did not
// remove: after it has exited, what it left behind.
func Leftovers(pid int) []string {
	marks, _ := os.ReadDir(filepath.Join(registry, strconv.Itoa(pid)))
	var out []string
	for _, m := range marks {
		if path, err := os.ReadFile(filepath.Join(registry, strconv.Itoa(pid), m.Name())); err == nil {
			out = append(out, string(path))
		}
	}
	return out
}

// RemoveOwn removes every namespace this process registered and has not
// removed yet: for a program interrupted (SIGINT, SIGTERM) before its own
// cleanup ran. Processes started in them die with this one (Pdeathsig).
func RemoveOwn() {
	for _, path := range Leftovers(os.Getpid()) {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
	}
	_ = os.RemoveAll(filepath.Join(registry, strconv.Itoa(os.Getpid())))
}

// alive reports whether pid runs: a zombie (killed, not yet reaped) does not.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// Sweep removes the namespaces that test processes no longer running left
// behind. CreateNS calls it once per process.
func Sweep() {
	dirs, _ := os.ReadDir(registry)
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if alive(pid) {
			continue
		}
		marks, _ := os.ReadDir(filepath.Join(registry, d.Name()))
		for _, m := range marks {
			path, err := os.ReadFile(filepath.Join(registry, d.Name(), m.Name()))
			if err != nil || !strings.HasPrefix(string(path), "/") {
				continue
			}
			_ = unix.Unmount(string(path), unix.MNT_DETACH)
			_ = os.Remove(string(path))
		}
		_ = os.RemoveAll(filepath.Join(registry, d.Name()))
	}
}

// Do runs f with the calling goroutine's thread in namespace n; processes
// started inside (the CNI plugins libcni executes) are born in n.
func Do(t testing.TB, n ns.NetNS, f func() error) error {
	t.Helper()
	return n.Do(func(ns.NetNS) error { return f() })
}

// Host is a network namespace standing in for a node: it has an uplink to
// a second namespace, World, and a default route through it, which proxy
// ARP needs before it answers for 169.254.1.1.
type Host struct {
	NS    ns.NetNS
	World ns.NetNS
	// Addr is the host's address on the uplink; WorldAddr the world's.
	Addr, WorldAddr netip.Addr
}

// Host and world addresses: the benchmarking range, kept inside the test's
// own namespaces.
var (
	hostAddr  = netip.MustParsePrefix("198.18.0.2/24")
	worldAddr = netip.MustParsePrefix("198.18.0.1/24")
	hostAddr6 = netip.MustParsePrefix("fd00:198:18::2/64")
	world6    = netip.MustParsePrefix("fd00:198:18::1/64")
)

// NewHost builds a host namespace with IPv4 and IPv6 default routes via
// World, and forwarding switched on as a node has it.
func NewHost(t testing.TB) *Host {
	t.Helper()
	h, cleanup, err := CreateHost()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return h
}

// CreateHost is NewHost for programs: cleanup removes both namespaces.
func CreateHost() (_ *Host, cleanup func(), retErr error) {
	h := &Host{Addr: hostAddr.Addr(), WorldAddr: worldAddr.Addr()}
	var cleanups []func()
	cleanup = func() {
		for _, c := range cleanups {
			c()
		}
	}
	defer func() {
		if retErr != nil {
			cleanup()
		}
	}()
	var c func()
	var err error
	if h.NS, c, err = CreateNS(); err != nil {
		return nil, nil, fmt.Errorf("host netns: %w", err)
	}
	cleanups = append(cleanups, c)
	if h.World, c, err = CreateNS(); err != nil {
		return nil, nil, fmt.Errorf("world netns: %w", err)
	}
	cleanups = append(cleanups, c)
	err = h.NS.Do(func(ns.NetNS) error {
		if err := setUp("lo"); err != nil {
			return err
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "uplink"
		veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "downlink", PeerNamespace: netlink.NsFd(int(h.World.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add uplink: %w", err)
		}
		if err := configure("uplink", hostAddr, hostAddr6); err != nil {
			return err
		}
		for _, f := range []string{"/proc/sys/net/ipv4/conf/all/forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		l, _ := netlink.LinkByName("uplink")
		for _, gw := range []netip.Addr{worldAddr.Addr(), world6.Addr()} {
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
				return fmt.Errorf("default route via %s: %w", gw, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("host netns: %w", err)
	}
	err = h.World.Do(func(ns.NetNS) error {
		if err := setUp("lo"); err != nil {
			return err
		}
		return configure("downlink", worldAddr, world6)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("world netns: %w", err)
	}
	return h, cleanup, nil
}

func setUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

func configure(name string, addrs ...netip.Prefix) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = 0x02 // IFA_F_NODAD: usable at once
		}
		if err := netlink.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add %s to %s: %w", p, name, err)
		}
	}
	return netlink.LinkSetUp(l)
}

// Ping sends ICMP echo requests from namespace n to dst until one is
// answered or tries run out; each try waits up to a second.
func Ping(n ns.NetNS, dst netip.Addr, tries int) error {
	var last error
	for i := range tries {
		if last = n.Do(func(ns.NetNS) error { return pingOnce(dst, i, time.Second) }); last == nil {
			return nil
		}
	}
	return fmt.Errorf("ping %s from %s: %w", dst, n.Path(), last)
}

// PingOne sends one ICMP echo request from n to dst and waits up to wait
// for its reply: on a loaded machine a reply can take longer than Ping's
// second, and a test of whether the first packet gets through must not
// read a late reply as a dropped packet, nor send a second one.
func PingOne(n ns.NetNS, dst netip.Addr, wait time.Duration) error {
	if err := n.Do(func(ns.NetNS) error { return pingOnce(dst, 0, wait) }); err != nil {
		return fmt.Errorf("one echo %s from %s, %s for its reply: %w", dst, n.Path(), wait, err)
	}
	return nil
}

func pingOnce(dst netip.Addr, seq int, wait time.Duration) error {
	network, proto, typ, reply := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho), icmp.Type(ipv4.ICMPTypeEchoReply)
	if dst.Is6() {
		network, proto, typ, reply = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, "")
	if err != nil {
		return err
	}
	defer c.Close()
	id := os.Getpid()&0xffff ^ seq
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("brindle")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		nr, peer, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(proto, buf[:nr])
		if err != nil || m.Type != reply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && strings.HasPrefix(peer.String(), dst.String()) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timeout")
		}
	}
}

// PingStats is the outcome of PingLoop.
type PingStats struct {
	Sent, Received int
	// Lost lists the sequence numbers never answered.
	Lost []int
}

// PingLoop pings dst from namespace n every interval until ctx ends, then
// waits a second for late replies. IPv4 only.
func PingLoop(ctx context.Context, n ns.NetNS, dst netip.Addr, interval time.Duration) (PingStats, error) {
	var st PingStats
	err := n.Do(func(ns.NetNS) error {
		c, err := icmp.ListenPacket("ip4:icmp", "")
		if err != nil {
			return err
		}
		defer c.Close()
		id := (os.Getpid() ^ int(time.Now().UnixNano())) & 0xffff
		got := map[int]bool{}
		var mu sync.Mutex
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 1500)
			for {
				nr, peer, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				m, err := icmp.ParseMessage(1, buf[:nr])
				if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
					continue
				}
				if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && peer.String() == dst.String() {
					mu.Lock()
					got[e.Seq] = true
					mu.Unlock()
				}
			}
		}()
		t := time.NewTicker(interval)
		defer t.Stop()
	loop:
		for seq := 0; ; seq++ {
			b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: []byte("brindle")}}).Marshal(nil)
			_, _ = c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()})
			st.Sent++
			select {
			case <-ctx.Done():
				break loop
			case <-t.C:
			}
		}
		time.Sleep(time.Second)
		_ = c.SetReadDeadline(time.Now())
		<-done
		mu.Lock()
		defer mu.Unlock()
		for seq := range st.Sent {
			if got[seq&0xffff] {
				st.Received++
			} else {
				st.Lost = append(st.Lost, seq)
			}
		}
		return nil
	})
	return st, err
}

// StartIn starts cmd in namespace n and returns a channel that receives its
// exit. The starting thread stays locked in n until the child exits: a
// child with Pdeathsig set is killed when the thread that forked it ends,
// and the Go runtime may end a thread that ns.Do has used.
func StartIn(n ns.NetNS, cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine, after the child
		if err := n.Set(); err != nil {
			started <- fmt.Errorf("enter %s: %w", n.Path(), err)
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}
