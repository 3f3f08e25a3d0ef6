package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// encapPool is the lab's default pool with the given modes.
func encapPool(ipip, vxlan conf.EncapMode, nat bool) conf.IPPool {
	p := lab.DefaultPool()
	p.Spec.IPIPMode, p.Spec.VXLANMode, p.Spec.NATOutgoing = ipip, vxlan, nat
	return p
}

// podMTU is the MTU of the pod's eth0.
func podMTU(t *testing.T, p *lab.Pod) int {
	t.Helper()
	var mtu int
	err := p.NS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			mtu = l.Attrs().MTU
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	return mtu
}

// dfPing sends full-size pings (the pod's MTU, IPv4 header and ICMP
// header included) with DF set: a packet that does not fit anywhere on
// the path is dropped instead of fragmented.
func dfPing(from *lab.Pod, to netip.Addr, mtu int) error {
	var last error
	for range 3 {
		out, err := lab.Run(from.NS, "ping", "-M", "do", "-s", strconv.Itoa(mtu-28), "-c", "2", "-i", "0.2", "-W", "1", to.String())
		if err == nil {
			return nil
		}
		last = fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	return fmt.Errorf("DF ping of %d bytes %s -> %s: %w", mtu, from.Name, to, last)
}

// tcpTransfer sends size bytes over TCP from namespace from to a server
// in namespace to at addr, and returns the source address the server saw.
// The server echoes the count it received, so a transfer cut short fails.
func tcpTransfer(from, to ns.NetNS, addr netip.Addr, size int) (netip.Addr, error) {
	var ln net.Listener
	err := to.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(addr.String(), "0"))
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	seen := make(chan netip.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(seen)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		n, _ := io.Copy(io.Discard, c)
		_ = binary.Write(c, binary.BigEndian, n)
	}()
	var c net.Conn
	err = from.Do(func(ns.NetNS) (err error) {
		c, err = (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp4", ln.Addr().String())
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dial %s: %w", ln.Addr(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(c, bytes.NewReader(make([]byte, size))); err != nil {
		return netip.Addr{}, fmt.Errorf("send: %w", err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return netip.Addr{}, fmt.Errorf("read count: %w", err)
	}
	if got != int64(size) {
		return netip.Addr{}, fmt.Errorf("server received %d of %d bytes", got, size)
	}
	return <-seen, nil
}

// fullSize checks, for every ordered pair of pods, a DF ping of the pods'
// full MTU and a 1 MB TCP transfer.
func fullSize(t *testing.T, ps []*lab.Pod) {
	t.Helper()
	for _, a := range ps {
		mtu := podMTU(t, a)
		for _, b := range ps {
			if a == b {
				continue
			}
			if err := dfPing(a, b.Addr, mtu); err != nil {
				t.Error(err)
			}
			src, err := tcpTransfer(a.NS, b.NS, b.Addr, 1<<20)
			if err != nil {
				t.Errorf("1 MB TCP %s -> %s: %v", a.Name, b.Name, err)
			} else if src != a.Addr {
				t.Errorf("TCP %s -> %s: server saw source %s, want the pod's %s", a.Name, b.Name, src, a.Addr)
			}
		}
	}
}

// onNode runs a command in a node's namespace, for the test's log.
func onNode(n *lab.Node, args ...string) string {
	out, err := lab.Run(n.NS, args...)
	if err != nil {
		return fmt.Sprintf("$ %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return "$ " + strings.Join(args, " ") + "\n" + out
}

func hasLink(n *lab.Node, name string) bool {
	found := false
	_ = n.NS.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName(name)
		found = err == nil
		return nil
	})
	return found
}

// ipipAvailable says whether this kernel can make an IPIP tunnel, tried
// in a throwaway namespace; the error says why not.
func ipipAvailable() error {
	n, cleanup, err := testenv.CreateNS()
	if err != nil {
		return err
	}
	defer cleanup()
	out, err := lab.Run(n, "ip", "link", "add", "ipiptest", "type", "ipip", "remote", "192.0.2.1")
	if err != nil {
		return fmt.Errorf("ip link add type ipip: %v: %s", err, strings.TrimSpace(out))
	}
	return nil
}
