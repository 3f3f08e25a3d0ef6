// Package e2e runs brindle end to end on the lab: real brindled daemons,
// real BGP sessions, pods attached through the real CNI binaries, traffic
// between namespaces.
package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// newLab builds a lab for one test and removes it when the test ends,
// showing the daemons' logs when the test failed.
func newLab(t *testing.T, cfg lab.Config) *lab.Lab {
	t.Helper()
	testenv.RequireRoot(t)
	cfg.BinDir = testenv.BinDir(t)
	cfg.Dir = t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	l, err := lab.New(ctx, cfg)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if dir := os.Getenv("BRINDLE_LAB_LOGS"); dir != "" {
			for _, n := range l.Nodes {
				b, _ := os.ReadFile(n.LogFile())
				_ = os.MkdirAll(dir, 0o755)
				_ = os.WriteFile(filepath.Join(dir, t.Name()+"-"+n.Name+".log"), b, 0o644)
			}
		}
		if t.Failed() {
			for _, n := range l.Nodes {
				b, _ := os.ReadFile(n.LogFile())
				t.Logf("---- %s brindled log (tail) ----\n%s", n.Name, tailLines(string(b), 40))
			}
		}
		l.Close()
	})
	return l
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// endpoint is something that pings: a pod or a node.
type endpoint struct {
	name string
	ns   ns.NetNS
	addr netip.Addr
}

func pods(l *lab.Lab) []endpoint {
	var out []endpoint
	for _, n := range l.Nodes {
		for _, p := range n.Pods() {
			out = append(out, endpoint{n.Name + "/" + p.Name, p.NS, p.Addr})
		}
	}
	return out
}

// reachAll checks every pair from froms to tos, retrying each for up to
// wait (routes may still be converging), and reports every failing pair.
func reachAll(t *testing.T, froms, tos []endpoint, wait time.Duration) {
	t.Helper()
	var failed []string
	for _, f := range froms {
		for _, to := range tos {
			if f.addr == to.addr {
				continue
			}
			deadline := time.Now().Add(wait)
			for {
				err := testenv.Ping(f.ns, to.addr, 1)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					failed = append(failed, fmt.Sprintf("%s -> %s (%s): %v", f.name, to.name, to.addr, err))
					break
				}
			}
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d pairs unreachable:\n%s", len(failed), strings.Join(failed, "\n"))
	}
}
