package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brindle-net/brindle/internal/etcdtest"
)

// The Calico document of issue 10 goes through `pool apply` as is, and
// reads back in brindle's form with every default written out.
func TestPoolApplyCalicoForms(t *testing.T) {
	s := etcdtest.Start(t)
	f := filepath.Join(t.TempDir(), "calico.yaml")
	os.WriteFile(f, []byte(`apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.60.0.0/16, ipipMode: Always, vxlanMode: Never, natOutgoing: true,
       nodeSelector: all(), allowedUses: [Workload, Tunnel]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-b}
spec: {cidr: 10.61.0.0/16, disableBGPExport: true}
`), 0o644)
	if out := mustCtl(t, s.Endpoint, "pool", "apply", "-f", f); !strings.Contains(out, "ippool/pool-a created") || !strings.Contains(out, "ippool/pool-b created") {
		t.Fatalf("apply: %s", out)
	}
	y := mustCtl(t, s.Endpoint, "pool", "get", "pool-b", "-o", "yaml")
	for _, want := range []string{"apiVersion: brindle.net/v1", "blockSize: 26", "ipipMode: Never", "vxlanMode: Never", "disableBGPExport: true",
		"assignmentMode: Automatic", "- Workload\n  - Tunnel", "nodeSelector: all()", "natOutgoing: false"} {
		if !strings.Contains(y, want) {
			t.Errorf("pool get lacks %q:\n%s", want, y)
		}
	}
	os.WriteFile(f, []byte("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-c}\nspec: {cidr: 10.62.0.0/16, awsSubnetID: x}\n"), 0o644)
	if _, err := ctl(t, s.Endpoint, "pool", "apply", "-f", f); err == nil || !strings.Contains(err.Error(), "spec.awsSubnetID: not supported by brindle") {
		t.Fatalf("unsupported field: %v", err)
	}
	if out := mustCtl(t, s.Endpoint, "pool", "get"); strings.Contains(out, "pool-c") {
		t.Fatalf("refused pool stored:\n%s", out)
	}
}

func TestReservationCommands(t *testing.T) {
	s := etcdtest.Start(t)
	ep := s.Endpoint
	dir := t.TempDir()
	pools := filepath.Join(dir, "pools.yaml")
	os.WriteFile(pools, []byte("kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.60.0.0/16}\n"), 0o644)
	mustCtl(t, ep, "pool", "apply", "-f", pools)
	f := filepath.Join(dir, "r.yaml")
	os.WriteFile(f, []byte("apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: gw}\nspec: {reservedCIDRs: [10.60.0.1, 10.60.1.0/28]}\n"), 0o644)
	if out := mustCtl(t, ep, "reservation", "apply", "-f", f); !strings.Contains(out, "ipreservation/gw created") {
		t.Fatalf("apply: %s", out)
	}
	if out := mustCtl(t, ep, "reservation", "apply", "-f", f); !strings.Contains(out, "ipreservation/gw configured") {
		t.Fatalf("re-apply: %s", out)
	}
	if out := mustCtl(t, ep, "reservation", "get"); !strings.Contains(out, "gw") || !strings.Contains(out, "10.60.0.1/32,10.60.1.0/28") {
		t.Fatalf("get: %s", out)
	}
	y := mustCtl(t, ep, "reservation", "get", "gw", "-o", "yaml")
	if !strings.Contains(y, "apiVersion: brindle.net/v1") || !strings.Contains(y, "kind: IPReservation") {
		t.Fatalf("get -o yaml: %s", y)
	}
	// What get prints applies back.
	os.WriteFile(f, []byte(y), 0o644)
	mustCtl(t, ep, "reservation", "apply", "-f", f)
	if out := mustCtl(t, ep, "reservation", "delete", "gw"); !strings.Contains(out, "ipreservation/gw deleted") {
		t.Fatalf("delete: %s", out)
	}
	if _, err := ctl(t, ep, "reservation", "get", "gw"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("get after delete: %v", err)
	}
	os.WriteFile(f, []byte("kind: IPReservation\nmetadata: {name: bad}\nspec: {reservedCIDRs: [10.60.0.1/24]}\n"), 0o644)
	if _, err := ctl(t, ep, "reservation", "apply", "-f", f); err == nil || !strings.Contains(err.Error(), "host bits set") {
		t.Fatalf("bad reservation: %v", err)
	}
	if out := mustCtl(t, ep, "ipam", "config", "--service-cidrs", "10.96.0.0/12"); !strings.Contains(out, "serviceCIDRs: 10.96.0.0/12") {
		t.Fatalf("ipam config: %s", out)
	}
	os.WriteFile(pools, []byte("kind: IPPool\nmetadata: {name: q}\nspec: {cidr: 10.100.0.0/16}\n"), 0o644)
	if _, err := ctl(t, ep, "pool", "apply", "-f", pools); err == nil || !strings.Contains(err.Error(), "overlaps the Service CIDR 10.96.0.0/12") {
		t.Fatalf("pool over the service cidr: %v", err)
	}
}
