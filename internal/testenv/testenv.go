// Package testenv holds what the integration and e2e tests share: the root
// check, building the real binaries once per test process, and throwaway
// network namespaces that stand in for hosts and pods.
package testenv

import (
	"fmt"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// RequireRoot skips the test, saying why, unless it runs as root on Linux
// with network namespaces available. Root-only tests never pass silently.
func RequireRoot(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("SKIP: needs Linux network namespaces (GOOS=%s)", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root to create network namespaces and veths; run `sudo make test`")
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		t.Skipf("SKIP: network namespaces unavailable: %v", err)
	}
}

// ModuleRoot returns the repository root (the directory holding go.mod).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the brindle module")
	}
	return filepath.Dir(mod), nil
}

// RefPlugins are the reference CNI plugins, built from the version pinned in
// go.mod (tool directives) so that tests and benchmarks compare like with like.
var RefPlugins = []string{
	"github.com/containernetworking/plugins/plugins/main/ptp",
	"github.com/containernetworking/plugins/plugins/ipam/host-local",
	"github.com/containernetworking/plugins/plugins/meta/portmap",
	"github.com/containernetworking/plugins/plugins/meta/bandwidth",
}

// TestBins are test programs built next to the binaries: the lab's etcd.
var TestBins = []string{"./test/lab/labetcd"}

var (
	buildMu   sync.Mutex
	builds    = map[string]string{}
	buildDirs []string
)

// BinDir builds the named brindle commands (e.g. "brindle", "brindle-ipam";
// all of ./cmd/* when none are named) and the reference plugins into one
// directory, once per test process and set of names, and returns it.
// BRINDLE_BIN_DIR, when set, names a directory already built by `make build`
// and is used as it is.
func BinDir(t testing.TB, cmds ...string) string {
	t.Helper()
	if d := os.Getenv("BRINDLE_BIN_DIR"); d != "" {
		return d
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	key := strings.Join(cmds, ",")
	if d, ok := builds[key]; ok {
		return d
	}
	d, err := Build(cmds)
	if err != nil {
		t.Fatalf("build binaries: %v", err)
	}
	builds[key] = d
	buildDirs = append(buildDirs, d)
	return d
}

// Main runs a package's tests and then Cleanup: a package whose tests use
// BinDir has `func TestMain(m *testing.M) { testenv.Main(m) }`.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup removes the directories BinDir built; Main calls it.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	for _, d := range buildDirs {
		os.RemoveAll(d)
	}
	buildDirs, builds = nil, map[string]string{}
}

// Build compiles the named brindle commands (all of ./cmd/* when none are
// named) and the reference plugins into a new temporary directory.
func Build(cmds []string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	if len(cmds) == 0 {
		mains, _ := filepath.Glob(filepath.Join(root, "cmd", "*", "main.go"))
		for _, m := range mains {
			cmds = append(cmds, filepath.Base(filepath.Dir(m)))
		}
	}
	dir, err := os.MkdirTemp("", "brindle-bin-")
	if err != nil {
		return "", err
	}
	var pkgs []string
	for _, c := range cmds {
		pkgs = append(pkgs, "./cmd/"+c)
	}
	pkgs = append(pkgs, RefPlugins...)
	pkgs = append(pkgs, TestBins...)
	args := append([]string{"build", "-o", dir + "/"}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return dir, nil
}

// NewCNIConfig is libcni's runtime for binaries in binDir, safe for
// concurrent use: libcni fills in its exec lazily on first use, which races
// when several goroutines start at once, so it is given one here.
func NewCNIConfig(binDir, cacheDir string) *libcni.CNIConfig {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return libcni.NewCNIConfigWithCacheDir([]string{binDir}, cacheDir, exec)
}
