package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// This file and antispoof_test.go, forwarddrop_test.go and
// tunnelguard_test.go are the filter table's scenarios (table inet
// brindle, policy/nft): helpers are prefixed filter to stay apart from the
// rest of the suite's.

// filterLab builds a lab for one scenario, removed when the test ends, with
// the daemons' logs shown on failure.
func filterLab(t *testing.T, cfg lab.Config) *lab.Lab {
	t.Helper()
	testenv.RequireRoot(t)
	cfg.BinDir = testenv.BinDir(t)
	cfg.Dir = t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	l, err := lab.New(ctx, cfg)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range l.Nodes {
				b, _ := os.ReadFile(n.LogFile())
				s := string(b)
				if len(s) > 6000 {
					s = s[len(s)-6000:]
				}
				t.Logf("---- %s brindled log (tail) ----\n%s", n.Name, s)
			}
		}
		l.Close()
	})
	return l
}

// filterMetric reads one metric of node n's brindled (/metrics), 0 when
// absent.
func filterMetric(t *testing.T, n *lab.Node, name string) float64 {
	t.Helper()
	res, err := n.HTTP().Get("http://" + lab.HealthAddr + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", n.Name, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ([0-9.e+]+)$`)
	m := re.FindStringSubmatch(string(b))
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// filterSendUDP sends count UDP datagrams from src (an address of the
// namespace) to dst:port.
func filterSendUDP(n ns.NetNS, src, dst netip.Addr, port, count int) error {
	return n.Do(func(ns.NetNS) error {
		// Unconnected, so that ICMP errors from the far end do not fail
		// the writes.
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: src.AsSlice()})
		if err != nil {
			return fmt.Errorf("udp from %s: %w", src, err)
		}
		defer c.Close()
		for i := range count {
			if _, err := c.WriteToUDP([]byte("brindle-"+strconv.Itoa(i)), &net.UDPAddr{IP: dst.AsSlice(), Port: port}); err != nil {
				return fmt.Errorf("udp %s -> %s: %w", src, dst, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	})
}

// filterCaptured counts the captured lines from src.
func filterCaptured(c *lab.Capture, src netip.Addr) int {
	n := 0
	for _, l := range c.Lines() {
		if strings.Contains(l, " "+src.String()+".") {
			n++
		}
	}
	return n
}
