package routed_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/brindle-net/brindle/internal/testenv"
)

// builtinRig is a rig whose CNI_PATH holds the brindle binary alone: an
// ADD that names brindle-ipam can only succeed, or fail with brindle-ipam's
// own errors, by running brindle-ipam's code in the plugin's process.
func builtinRig(t *testing.T) *rig {
	t.Helper()
	r := newRig(t)
	src := filepath.Join(testenv.BinDir(t, "brindle"), "brindle")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "brindle"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	r.cni = testenv.NewCNIConfig(dir, filepath.Join(r.dir, "cache"))
	return r
}

// builtinIPAM is a brindle-ipam section with no node state directory (the
// nodename file's directory does not exist), so nothing is written outside
// the test's own directory.
func (r *rig) builtinIPAM(etcd string, extra map[string]any) map[string]any {
	m := map[string]any{"type": "brindle-ipam", "etcd_endpoints": etcd, "nodename": "node-1",
		"nodename_file": filepath.Join(r.dir, "no-state-dir", "nodename"), "timeout_seconds": 2}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func cniCode(t *testing.T, err error) uint {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %q (%T) is not a CNI error", err, err)
	}
	return te.Code
}

// TestBuiltinIPAMUnreachable: with brindle-ipam run in the plugin's process
// and etcd unreachable, ADD fails with brindle-ipam's "try again later"
// (code 11), named as the IPAM plugin's ADD, and leaves no veth and no pod
// interface behind: the veth made while IPAM ran goes again.
func TestBuiltinIPAMUnreachable(t *testing.T) {
	r := builtinRig(t)
	p := r.newPod("unreachable")
	l := r.list("1.1.0", r.builtinIPAM("http://127.0.0.1:1", nil), nil)
	_, err := r.add(l, p)
	errContains(t, err, `ipam plugin "brindle-ipam" ADD`, "127.0.0.1:1")
	if c := cniCode(t, err); c != types.ErrTryAgainLater {
		t.Errorf("error code %d, want %d (try again later): %v", c, types.ErrTryAgainLater, err)
	}
	leftovers(t, r, p)
	// The runtime's DEL after the failed ADD: etcd still unreachable, and
	// this node holds nothing for the attachment, so it must not fail
	// forever; with no node state directory it cannot know, and says so.
	if err := r.del(l, p); err != nil {
		errContains(t, err, `ipam plugin "brindle-ipam" DEL`)
		if c := cniCode(t, err); c != types.ErrTryAgainLater {
			t.Errorf("DEL error code %d, want %d: %v", c, types.ErrTryAgainLater, err)
		}
	}
	leftovers(t, r, p)
}

// TestBuiltinIPAMBadConfig: a bad brindle-ipam section fails ADD with the
// field and the value in the error, as the executed plugin would say it
// (code 7), and leaves nothing behind.
func TestBuiltinIPAMBadConfig(t *testing.T) {
	r := builtinRig(t)
	for _, tc := range []struct {
		name  string
		extra map[string]any
		want  string
	}{
		{"timeout", map[string]any{"timeout_seconds": -3}, "ipam.timeout_seconds -3: must be positive"},
		{"pools", map[string]any{"ipv4_pools": []string{"no/such"}}, `"no/such": not a pool name`},
		{"families", map[string]any{"assign_ipv4": false}, "ipam.assign_ipv4 and ipam.assign_ipv6: both false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := r.newPod("badconf-" + tc.name)
			l := r.list("1.1.0", r.builtinIPAM("http://127.0.0.1:1", tc.extra), nil)
			_, err := r.add(l, p)
			errContains(t, err, `ipam plugin "brindle-ipam" ADD`, tc.want)
			if c := cniCode(t, err); c != types.ErrInvalidNetworkConfig {
				t.Errorf("error code %d, want %d: %v", c, types.ErrInvalidNetworkConfig, err)
			}
			leftovers(t, r, p)
		})
	}
}
