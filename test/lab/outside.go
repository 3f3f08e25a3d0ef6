package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/internal/testenv"
)

// Outside is a host beyond the underlay router, in a documentation range
// (198.51.100.0/24): "the internet" for NAT outgoing. It has no route to
// the pools, so it can answer pods only if their traffic was masqueraded.
type Outside struct {
	NS   ns.NetNS
	Addr netip.Addr
}

var (
	outsideNet    = netip.MustParsePrefix("198.51.100.0/24")
	outsideAddr   = netip.MustParseAddr("198.51.100.1")
	outsideRouter = netip.MustParseAddr("198.51.100.254")
)

// AddOutside attaches the outside host to the underlay router.
func (l *Lab) AddOutside() (*Outside, error) {
	nsh, cleanup, err := testenv.CreateNS()
	if err != nil {
		return nil, err
	}
	l.onClose(cleanup)
	err = l.Underlay.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "outside"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(nsh.Fd()))}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		if err := addAddr("outside", netip.PrefixFrom(outsideRouter, outsideNet.Bits())); err != nil {
			return err
		}
		return linkUp("outside")
	})
	if err != nil {
		return nil, fmt.Errorf("outside uplink: %w", err)
	}
	err = nsh.Do(func(ns.NetNS) error {
		for _, n := range []string{"lo", "eth0"} {
			if err := linkUp(n); err != nil {
				return err
			}
		}
		if err := addAddr("eth0", netip.PrefixFrom(outsideAddr, outsideNet.Bits())); err != nil {
			return err
		}
		eth0, _ := netlink.LinkByName("eth0")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: outsideRouter.AsSlice()})
	})
	if err != nil {
		return nil, fmt.Errorf("outside network: %w", err)
	}
	l.logf("outside host %s behind the underlay router", outsideAddr)
	return &Outside{NS: nsh, Addr: outsideAddr}, nil
}

// Run runs a command in namespace n and returns its combined output.
func Run(n ns.NetNS, args ...string) (string, error) {
	var out []byte
	err := n.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command(args[0], args[1:]...).CombinedOutput()
		return err
	})
	return string(out), err
}

// Capture is a tcpdump running on the underlay (the router and both
// subnets' bridges): what crosses the wire between the nodes.
type Capture struct {
	cmd  *exec.Cmd
	done <-chan error
	mu   sync.Mutex
	out  bytes.Buffer
}

// TcpdumpAvailable says whether tcpdump is installed.
func TcpdumpAvailable() bool {
	_, err := exec.LookPath("tcpdump")
	return err == nil
}

// Capture starts tcpdump on every interface of the underlay with a pcap
// filter, and returns once it listens.
func (l *Lab) Capture(ctx context.Context, filter string) (*Capture, error) {
	c := &Capture{}
	cmd := exec.Command("tcpdump", append([]string{"-i", "any", "-nn", "-l", "-U", "-Q", "in"}, strings.Fields(filter)...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &lockedWriter{mu: &c.mu, w: &stderr}
	done, err := testenv.StartIn(l.Underlay, cmd)
	if err != nil {
		return nil, fmt.Errorf("tcpdump: %w", err)
	}
	c.cmd, c.done = cmd, done
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.mu.Lock()
			c.out.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		ready := strings.Contains(stderr.String(), "listening on")
		msg := stderr.String()
		c.mu.Unlock()
		if ready {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("tcpdump did not start: %s", msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Lines returns what was captured so far, one packet a line.
func (c *Capture) Lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := strings.TrimSpace(c.out.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Reset forgets what was captured so far.
func (c *Capture) Reset() {
	c.mu.Lock()
	c.out.Reset()
	c.mu.Unlock()
}

// Stop ends tcpdump.
func (c *Capture) Stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
