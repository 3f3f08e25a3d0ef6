// Package faults is brindle's fault-injection suite: each scenario breaks
// something on purpose — a plugin killed mid-ADD, an etcd member stopped,
// stalled or cut off, etcd gone, a hostile BGP peer, malformed records —
// states what must hold, checks it, and prints one line with its figures
// (docs/faults.md collects them).
package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
				t.Logf("---- %s brindled log (tail) ----\n%s", n.Name, tailLines(string(b), 40))
			}
		}
		if dir := os.Getenv("BRINDLE_LAB_LOGS"); dir != "" {
			for _, n := range l.Nodes {
				b, _ := os.ReadFile(n.LogFile())
				_ = os.MkdirAll(dir, 0o755)
				_ = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+n.Name+".log"), b, 0o644)
			}
		}
		l.Close()
	})
	return l
}

// podPair adds pod a on node-1 and pod b on node-2 of l, then waits up
// to ready for the lab to be ready.
func podPair(t *testing.T, l *lab.Lab, a, b string, ready time.Duration) (*lab.Pod, *lab.Pod) {
	t.Helper()
	ctx := t.Context()
	pa, err := l.Nodes[0].AddPod(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := l.Nodes[1].AddPod(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WaitReady(ctx, ready); err != nil {
		t.Fatal(err)
	}
	return pa, pb
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// figures prints a scenario's one line of figures, prefixed so that
// `go test -v ./test/faults | grep FIGURES` collects them.
func figures(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf("FIGURES %s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Log(line)
	fmt.Println(line)
}

// eventually polls f until it returns nil or within has passed.
func eventually(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
