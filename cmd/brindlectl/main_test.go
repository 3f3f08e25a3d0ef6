package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
)

func ctl(t *testing.T, ep string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(append([]string{"--etcd-endpoints", ep, "--timeout", "5s"}, args...), &out)
	return out.String(), err
}

func mustCtl(t *testing.T, ep string, args ...string) string {
	t.Helper()
	out, err := ctl(t, ep, args...)
	if err != nil {
		t.Fatalf("brindlectl %v: %v\n%s", args, err, out)
	}
	return out
}

const poolsYAML = `apiVersion: brindle.net/v1
kind: IPPool
metadata:
  name: default
spec:
  cidr: 10.244.0.0/16
---
apiVersion: brindle.net/v1
kind: IPPool
metadata:
  name: v6
spec:
  cidr: fd00:10::/64
  vxlanMode: CrossSubnet
`

func TestPoolCommands(t *testing.T) {
	s := etcdtest.Start(t)
	ep := s.Endpoint
	f := filepath.Join(t.TempDir(), "pools.yaml")
	os.WriteFile(f, []byte(poolsYAML), 0o644)
	if out := mustCtl(t, ep, "pool", "apply", "-f", f); !strings.Contains(out, "ippool/default created") {
		t.Fatalf("apply: %s", out)
	}
	if out := mustCtl(t, ep, "pool", "apply", "-f", f); !strings.Contains(out, "ippool/default configured") {
		t.Fatalf("re-apply: %s", out)
	}
	y := mustCtl(t, ep, "pool", "get", "default", "-o", "yaml")
	for _, want := range []string{"blockSize: 26", "ipipMode: Never", "vxlanMode: Never", "natOutgoing: false", "nodeSelector: all()", "disabled: false", "kind: IPPool"} {
		if !strings.Contains(y, want) {
			t.Errorf("pool get -o yaml lacks %q:\n%s", want, y)
		}
	}
	// What get prints can be applied back unchanged.
	os.WriteFile(f, []byte(y), 0o644)
	mustCtl(t, ep, "pool", "apply", "-f", f)
	var pools []map[string]any
	if err := json.Unmarshal([]byte(mustCtl(t, ep, "pool", "get", "-o", "json")), &pools); err != nil || len(pools) != 2 {
		t.Fatalf("pool get -o json: %v %v", pools, err)
	}
	if out := mustCtl(t, ep, "pool", "get"); !strings.Contains(out, "CrossSubnet") || !strings.Contains(out, "NAME") {
		t.Fatalf("table: %s", out)
	}
	os.WriteFile(f, []byte("kind: IPPool\nmetadata: {name: bad}\nspec: {cidr: 10.244.1.0/24}\n"), 0o644)
	if _, err := ctl(t, ep, "pool", "apply", "-f", f); err == nil || !strings.Contains(err.Error(), "overlaps pool") {
		t.Fatalf("overlap: %v", err)
	}

	a := ipam.New(etcdgrpc.New(s.Client))
	if _, err := a.Assign(t.Context(), ipam.AssignRequest{Handle: "c1.eth0", Node: "n1", IPv4: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl(t, ep, "pool", "delete", "default"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("delete in use: %v", err)
	}
	mustCtl(t, ep, "pool", "delete", "default", "--force")
	mustCtl(t, ep, "pool", "delete", "v6")
}

func TestIPAMShowCheckRelease(t *testing.T) {
	s := etcdtest.Start(t)
	ep := s.Endpoint
	ctx := t.Context()
	a := ipam.New(etcdgrpc.New(s.Client))
	f := filepath.Join(t.TempDir(), "pools.yaml")
	os.WriteFile(f, []byte(poolsYAML), 0o644)
	mustCtl(t, ep, "pool", "apply", "-f", f)
	for _, n := range []string{"n1", "gone"} {
		if _, err := s.Client.Put(ctx, ipam.Prefix+"nodes/"+n, `{}`); err != nil {
			t.Fatal(err)
		}
	}
	assign := func(c, node string) ipam.HandleAddr {
		got, err := a.Assign(ctx, ipam.AssignRequest{Handle: c + ".eth0", Node: node, IPv4: true,
			Attrs:    map[string]string{ipam.AttrContainerID: c, ipam.AttrIfName: "eth0"},
			Endpoint: &ipam.Endpoint{ContainerID: c, IfName: "eth0"}})
		if err != nil {
			t.Fatal(err)
		}
		return got[0]
	}
	ok := assign("ok", "n1")
	leak := assign("leak", "n1")
	assign("onGone", "gone")
	if _, err := s.Client.Delete(ctx, ipam.Prefix+"endpoints/n1/leak.eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.Put(ctx, ipam.Prefix+"endpoints/n1/orphan.eth0", `{"v":1,"node":"n1","containerID":"orphan","ifname":"eth0","addresses":["10.244.9.9/32"]}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.Delete(ctx, ipam.Prefix+"nodes/gone"); err != nil {
		t.Fatal(err)
	}

	out := mustCtl(t, ep, "ipam", "show")
	if !strings.Contains(out, "default") || !strings.Contains(out, "n1") || !strings.Contains(out, "confirmed") {
		t.Fatalf("ipam show:\n%s", out)
	}
	out = mustCtl(t, ep, "ipam", "show", "--ip", ok.Addr.String())
	if !strings.Contains(out, "ok.eth0") || !strings.Contains(out, "true") {
		t.Fatalf("ipam show --ip:\n%s", out)
	}
	var r ipam.CheckReport
	if err := json.Unmarshal([]byte(mustCtl(t, ep, "ipam", "check", "-o", "json")), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Leaks) != 1 || r.Leaks[0].IP != leak.Addr.String() {
		t.Errorf("leaks %+v", r.Leaks)
	}
	if len(r.Orphans) != 1 || r.Orphans[0].ID != "orphan.eth0" {
		t.Errorf("orphans %+v", r.Orphans)
	}
	if len(r.StaleBlocks) != 1 || r.StaleBlocks[0].Node != "gone" {
		t.Errorf("stale blocks %+v", r.StaleBlocks)
	}
	if out := mustCtl(t, ep, "ipam", "check"); !strings.Contains(out, "LEAKED ALLOCATIONS (1)") {
		t.Errorf("check table:\n%s", out)
	}
	// A dry run says what it would do and does nothing.
	dry := mustCtl(t, ep, "ipam", "release", "--dry-run")
	for _, want := range []string{"would release " + leak.Addr.String(), "would delete endpoint n1/orphan.eth0", "kept "} {
		if !strings.Contains(dry, want) {
			t.Errorf("release --dry-run: no %q in:\n%s", want, dry)
		}
	}
	if strings.Contains(dry, "run `brindlectl ipam release`") {
		t.Errorf("release --dry-run repeats check's advice:\n%s", dry)
	}
	var again ipam.CheckReport
	if err := json.Unmarshal([]byte(mustCtl(t, ep, "ipam", "check", "-o", "json")), &again); err != nil || len(again.Leaks) != 1 || len(again.Orphans) != 1 {
		t.Fatalf("dry run changed something: %+v %v", again, err)
	}
	// The gone node's pod still has its endpoint: release keeps it and says why.
	out = mustCtl(t, ep, "ipam", "release")
	t.Logf("release:\n%s", out)
	if !strings.Contains(out, "in use, endpoint gone/onGone.eth0 exists") {
		t.Errorf("release did not say why it kept the address of gone/onGone.eth0:\n%s", out)
	}
	if err := json.Unmarshal([]byte(mustCtl(t, ep, "ipam", "check", "-o", "json")), &r); err != nil || len(r.StaleBlocks) != 1 || len(r.Leaks)+len(r.Orphans) != 0 {
		t.Fatalf("after release: %+v %v", r, err)
	}
	// Told that the node is gone for good, it releases that too.
	out = mustCtl(t, ep, "ipam", "release", "--gone-node", "gone")
	t.Logf("release --gone-node gone:\n%s", out)
	if err := json.Unmarshal([]byte(mustCtl(t, ep, "ipam", "check", "-o", "json")), &r); err != nil || !r.Clean() {
		t.Fatalf("after release: %+v %v", r, err)
	}
	if h, _ := a.HandleOf(ctx, "ok.eth0"); h == nil {
		t.Fatal("release freed a healthy allocation")
	}
}

func TestIPAMConfig(t *testing.T) {
	s := etcdtest.Start(t)
	out := mustCtl(t, s.Endpoint, "ipam", "config", "--strict-affinity=true", "--max-blocks-per-host", "4")
	if !strings.Contains(out, "strictAffinity: true") || !strings.Contains(out, "maxBlocksPerHost: 4") {
		t.Fatalf("config: %s", out)
	}
	if _, err := ctl(t, s.Endpoint, "nope", "cmd"); err == nil {
		t.Fatal("unknown command accepted")
	}
}
