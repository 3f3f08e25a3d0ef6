package smoke

// Calico's IPPool documents through brindlectl, pools refused over the
// node network and the Service CIDR, and node labels steering a pool's
// nodeSelector (issue 10), on the real cluster.

import (
	"context"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// calicoPoolA is the document of issue 10, exactly as a Calico user pastes it.
const calicoPoolA = `apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.60.0.0/16, ipipMode: Always, vxlanMode: Never, natOutgoing: true,
       nodeSelector: all(), allowedUses: [Workload, Tunnel]}
`

// storedPool is a pool as `brindlectl pool get NAME -o json` prints it.
type storedPool struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Spec       map[string]any `json:"spec"`
}

func (c *cluster) getPool(node, name string) storedPool {
	c.t.Helper()
	out := c.mustCtl(node, "", "pool", "get", name, "-o", "json")
	var ps []storedPool
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &ps); err != nil || len(ps) != 1 {
		c.t.Fatalf("pool get %s -o json: %v: %s", name, err, out)
	}
	return ps[0]
}

// checkSpec compares a stored pool's spec with want field by field: every
// field brindle has must be stored explicitly.
func checkSpec(t *testing.T, name string, got storedPool, want map[string]any) {
	t.Helper()
	if got.APIVersion != "brindle.net/v1" || got.Kind != "IPPool" {
		t.Errorf("pool %s stored as %s %s, want brindle.net/v1 IPPool", name, got.APIVersion, got.Kind)
	}
	for k, v := range want {
		g, ok := got.Spec[k]
		if !ok {
			t.Errorf("pool %s: spec.%s not stored (every default must be explicit): %v", name, k, got.Spec)
			continue
		}
		if !reflect.DeepEqual(g, v) {
			t.Errorf("pool %s: spec.%s = %#v, want %#v", name, k, g, v)
		}
	}
	for k := range got.Spec {
		if _, ok := want[k]; !ok {
			t.Errorf("pool %s: spec.%s = %v is not checked by this test", name, k, got.Spec[k])
		}
	}
}

// TestKubeCalicoPools: the Calico IPPool of issue 10 applies as is through
// `brindlectl pool apply -f -` and reads back as a brindle pool with every
// default explicit; a projectcalico.org/v3 pool without modes means Never;
// a field brindle does not support is refused by name and nothing is
// stored; pools over the node network or the Service CIDR are refused.
func TestKubeCalicoPools(t *testing.T) {
	c := connect(t)
	a := c.workers()[0]
	// pool-a allows Tunnel use: a node may take its tunnel address from
	// it while it exists, so it goes with --force, and the test waits
	// until no node's tunnel address is in it.
	t.Cleanup(func() { c.dropEncapPool(a.Name, "pool-a", netip.MustParsePrefix("10.60.0.0/16")) })
	c.removeAtEnd(a.Name, []string{"pool-v3"}, nil)

	if out := c.apply(a.Name, "pool", calicoPoolA); !strings.Contains(out, "ippool/pool-a created") {
		t.Errorf("pool apply of issue 10's Calico IPPool: %q, want ippool/pool-a created", out)
	}
	checkSpec(t, "pool-a", c.getPool(a.Name, "pool-a"), map[string]any{
		"cidr": "10.60.0.0/16", "blockSize": 26.0, "ipipMode": "Always", "vxlanMode": "Never", "natOutgoing": true,
		"nodeSelector": "all()", "disabled": false, "disableBGPExport": false,
		"allowedUses": []any{"Workload", "Tunnel"}, "assignmentMode": "Automatic",
	})
	if yml := c.mustCtl(a.Name, "", "pool", "get", "pool-a", "-o", "yaml"); !strings.Contains(yml, "apiVersion: brindle.net/v1") {
		t.Errorf("pool get pool-a -o yaml:\n%s", yml)
	}

	c.apply(a.Name, "pool", `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-v3}
spec: {cidr: 10.61.0.0/16, disabled: true, blockSize: 28, disableBGPExport: true}
`)
	checkSpec(t, "pool-v3", c.getPool(a.Name, "pool-v3"), map[string]any{
		"cidr": "10.61.0.0/16", "blockSize": 28.0, "ipipMode": "Never", "vxlanMode": "Never", "natOutgoing": false,
		"nodeSelector": "all()", "disabled": true, "disableBGPExport": true,
		"allowedUses": []any{"Workload", "Tunnel"}, "assignmentMode": "Automatic",
	})

	n := netip.MustParseAddr(nodeIP(a))
	nodeNet, _ := n.Prefix(24)
	for _, tc := range []struct{ name, spec, want string }{
		{"pool-aws", "{cidr: 10.62.0.0/16, awsSubnetID: subnet-0123}", "spec.awsSubnetID: not supported by brindle"},
		{"pool-node", "{cidr: " + nodeNet.String() + "}", "overlaps the network " + nodeNet.String() + " of node"},
		{"pool-svc", "{cidr: 10.96.128.0/20}", "overlaps the Service CIDR 10.96.0.0/16"},
	} {
		doc := "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: " + tc.name + "}\nspec: " + tc.spec + "\n"
		out, err := c.ctl(a.Name, doc, "pool", "apply", "-f", "-")
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("pool apply %s: err %v, output %q; want refused with %q", tc.name, err, out, tc.want)
		} else {
			t.Logf("%s refused: %s", tc.name, strings.TrimSpace(out))
		}
		if out, err := c.ctl(a.Name, "", "pool", "get", tc.name); err == nil {
			t.Errorf("refused pool %s is stored: %s", tc.name, out)
		}
	}
}

// dropEncapPool deletes a pool that nodes may hold tunnel addresses of,
// and waits until no node has a tunnel address in it and IPAM is clean.
func (c *cluster) dropEncapPool(node, name string, cidr netip.Prefix) {
	if out, err := c.ctl(node, "", "pool", "delete", name, "--force"); err != nil && !strings.Contains(out, "not found") {
		c.t.Errorf("cleanup: pool delete %s --force: %v", name, err)
	}
	var last map[string]nodeRecord
	if err := wait.PollUntilContextTimeout(context.Background(), 2*time.Second, 2*time.Minute, true, func(context.Context) (bool, error) {
		last = c.nodeRecords(node)
		for _, r := range last {
			if ip, err := netip.ParseAddr(r.TunnelIPv4); err == nil && cidr.Contains(ip) {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		c.t.Errorf("cleanup: 2 minutes after pool %s was deleted nodes still hold tunnel addresses in %s: %+v", name, cidr, last)
	}
	c.ipamClean(node, "after pool "+name+" was deleted")
}

// TestKubeNodeLabels: a pool whose nodeSelector no node matches refuses a
// pod that asks for it; labelling the pod's Node in Kubernetes puts the
// label in brindle's node record and kubelet's next try of the same pod
// gets an address from the pool, without restarting brindle.
func TestKubeNodeLabels(t *testing.T) {
	c := connect(t)
	w := c.workers()
	b := w[1]
	const key = "brindle-smoke-zone"
	ctx := context.Background()
	unlabel := func() {
		_, err := c.cs.CoreV1().Nodes().Patch(ctx, b.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"`+key+`":null}}}`), metav1.PatchOptions{})
		if err != nil {
			t.Errorf("remove label %s from %s: %v", key, b.Name, err)
		}
	}
	unlabel()
	t.Cleanup(unlabel)
	c.removeAtEnd(w[0].Name, []string{"smoke-zone-b"}, nil)
	c.apply(w[0].Name, "pool", `apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: smoke-zone-b}
spec: {cidr: 10.72.0.0/24, nodeSelector: "`+key+` == 'b'", assignmentMode: Manual}
`)
	brindleBefore := c.brindlePod(b.Name)

	c.annotated(c.ns, "zoned", b.Name, map[string]string{"brindle.net/ipv4pools": `["smoke-zone-b"]`})
	msg := c.refused(c.ns, "zoned", "pod "+c.ns+"/zoned", "annotation brindle.net/ipv4pools", "smoke-zone-b", `selects node "`+b.Name+`"`)
	t.Logf("before the label: %s", msg[max(0, strings.Index(msg, "pod "+c.ns)):])

	labelled := time.Now()
	if _, err := c.cs.CoreV1().Nodes().Patch(ctx, b.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"`+key+`":"b"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(context.Context) (bool, error) {
		return c.nodeRecords(w[0].Name)[b.Name].Labels[key] == "b", nil
	}); err != nil {
		t.Errorf("brindle's node record of %s has no %s=b 2 minutes after the Node was labelled: %+v", b.Name, key, c.nodeRecords(w[0].Name)[b.Name])
	}
	t.Logf("label in the node record after %s", time.Since(labelled).Round(100*time.Millisecond))
	p := c.running(c.ns, "zoned")
	if ip, err := netip.ParseAddr(p.Status.PodIP); err != nil || !netip.MustParsePrefix("10.72.0.0/24").Contains(ip) {
		t.Errorf("pod zoned: address %q, want one from smoke-zone-b 10.72.0.0/24", p.Status.PodIP)
	}
	t.Logf("pod zoned got %s %s after the label", p.Status.PodIP, time.Since(labelled).Round(100*time.Millisecond))
	if after := c.brindlePod(b.Name); after.UID != brindleBefore.UID || restarts(after) != restarts(brindleBefore) {
		t.Errorf("brindle-node on %s was restarted (pod %s -> %s, restarts %d -> %d)", b.Name, brindleBefore.UID, after.UID, restarts(brindleBefore), restarts(after))
	}
}

func (c *cluster) brindlePod(node string) corev1.Pod {
	c.t.Helper()
	pods, err := c.cs.CoreV1().Pods("brindle-system").List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=brindle-node", FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil || len(pods.Items) != 1 {
		c.t.Fatalf("brindle-node pod on %s: %v (%d pods)", node, err, len(pods.Items))
	}
	return pods.Items[0]
}

func restarts(p corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}
