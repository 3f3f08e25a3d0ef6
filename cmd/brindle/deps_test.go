package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCNIBinariesStayLight: the binaries the runtime starts for every pod
// link no Kubernetes client, no GoBGP, no gRPC, no etcd client library and
// no net/http (DESIGN.md; the brindle plugin runs brindle-ipam's code in its
// own process, so what brindle-ipam imports is the plugin's too).
func TestCNIBinariesStayLight(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("SKIP: needs the go command to list the binaries' imports")
	}
	forbidden := []string{"k8s.io/client-go", "k8s.io/api", "k8s.io/apimachinery", "github.com/osrg/gobgp",
		"google.golang.org/grpc", "go.etcd.io/etcd", "net/http"}
	for _, cmd := range []string{"github.com/brindle-net/brindle/cmd/brindle", "github.com/brindle-net/brindle/cmd/brindle-ipam"} {
		out, err := exec.Command("go", "list", "-deps", cmd).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", cmd, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 50 {
			t.Fatalf("go list -deps %s: only %d packages listed: %q", cmd, len(deps), out)
		}
		for _, d := range deps {
			for _, f := range forbidden {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s links %s", cmd, d)
				}
			}
		}
	}
}
