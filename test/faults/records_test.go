package faults

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
	"github.com/brindle-net/brindle/test/lab"
)

// TestMalformedRecords: pools, BGP peers, the BGP configuration and node
// records written straight into etcd with wrong types, overlapping CIDRs,
// huge values and garbage. Must hold: every brindled keeps running (no
// restart, no crash loop) and logs what it ignores, naming the key; the
// sessions and routes in force stay; pods still reach each other; a new
// ADD works and gets its address from the pool that was there first; `ipam
// check` names the records it cannot read.
func TestMalformedRecords(t *testing.T) {
	l := newLab(t, lab.Config{Nodes: 2})
	ctx := t.Context()
	a, b := podPair(t, l, "a", "b", 30*time.Second)
	pids := map[string]int{}
	for _, n := range l.Nodes {
		pids[n.Name] = n.PID()
	}
	huge := strings.Repeat("x", 1<<20)
	bad := map[string]string{
		"ippools/wrong-type":  `{"apiVersion":"brindle.net/v1","kind":"IPPool","metadata":{"name":"wrong-type"},"spec":{"cidr":123,"blockSize":"big"}}`,
		"ippools/not-json":    `}{`,
		"ippools/overlap":     `{"apiVersion":"brindle.net/v1","kind":"IPPool","metadata":{"name":"overlap"},"spec":{"cidr":"10.244.128.0/17","blockSize":24,"ipipMode":"Never","vxlanMode":"Never","natOutgoing":false,"nodeSelector":"all()","disabled":false}}`,
		"ippools/huge":        `{"apiVersion":"brindle.net/v1","kind":"IPPool","metadata":{"name":"huge"},"spec":{"cidr":"10.250.0.0/16","nodeSelector":"` + huge + `"}}`,
		"ippools/zzz-bigmask": `{"apiVersion":"brindle.net/v1","kind":"IPPool","metadata":{"name":"zzz-bigmask"},"spec":{"cidr":"10.251.0.0/16","blockSize":4294967296}}`,
		"bgp/peers/bad-ip":    `{"apiVersion":"brindle.net/v1","kind":"BGPPeer","metadata":{"name":"bad-ip"},"spec":{"peerIP":"not-an-ip","asNumber":65000}}`,
		"bgp/peers/array":     `[1,2,3]`,
		"bgp/peers/huge-as":   `{"apiVersion":"brindle.net/v1","kind":"BGPPeer","metadata":{"name":"huge-as"},"spec":{"peerIP":"198.19.1.99","asNumber":1099511627776}}`,
		"bgp/config":          `{"apiVersion":"brindle.net/v1","kind":"BGPConfiguration","metadata":{"name":"default"},"spec":{"asNumber":"sixty-four"}}`,
		"nodes/garbage":       `{"name":"garbage","ipv4Address":5}`,
		"nodes/huge":          `{"v":1,"name":"huge","ipv4Address":"198.19.1.77/24","labels":{"k":"` + huge + `"}}`,
		"nodes/self-named":    `{"v":1,"name":"someone-else","ipv4Address":"198.19.1.11/24"}`,
		"nodes/future":        `{"v":99,"name":"future","ipv4Address":"198.19.1.78/24"}`,
	}
	for k, v := range bad {
		if _, err := l.Etcd.Put(ctx, ipam.Prefix+k, v); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	time.Sleep(3 * time.Second) // a reconcile or two on every node

	// What the figures line says is what was seen.
	unaffected := true
	for _, n := range l.Nodes {
		if !n.Alive() || n.PID() != pids[n.Name] {
			t.Errorf("%s: brindled restarted or exited", n.Name)
		}
		if err := established(l, n); err != nil {
			t.Errorf("%v", err)
			unaffected = false
		}
	}
	if err := testenv.Ping(a.NS, b.Addr, 3); err != nil {
		t.Errorf("pod to pod with malformed records around: %v", err)
		unaffected = false
	}
	c, err := l.Nodes[0].AddPod(ctx, "c")
	if err != nil {
		t.Fatalf("ADD with malformed pools stored: %v", err)
	}
	if !strings.HasPrefix(c.Addr.String(), "10.244.") {
		t.Errorf("new pod got %s", c.Addr)
	}
	if err := testenv.Ping(b.NS, c.Addr, 3); err != nil {
		t.Errorf("new pod from node-2: %v", err)
		unaffected = false
	}
	logb, _ := os.ReadFile(l.Nodes[0].LogFile())
	var missing []string
	for k := range bad {
		if !strings.Contains(string(logb), k) {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Errorf("brindled's log does not name %v", missing)
	}
	// IPAM with nothing cached (the node-local state of the plugin would
	// hide the pools from it): it allocates from the pool created first.
	alloc := ipam.New(etcdgrpc.New(l.Etcd))
	fresh, err := alloc.Assign(ctx, ipam.AssignRequest{Handle: "fresh.eth0", Node: l.Nodes[1].Name, IPv4: true})
	if err != nil || len(fresh) != 1 || !netip.MustParsePrefix("10.244.0.0/16").Contains(fresh[0].Addr) {
		t.Errorf("IPAM with malformed pools stored: %v %v", fresh, err)
	} else {
		_, blocks, _ := alloc.Usage(ctx)
		for _, b := range blocks {
			if netip.MustParsePrefix(b.CIDR).Contains(fresh[0].Addr) && b.Pool != "default-ipv4" {
				t.Errorf("IPAM allocated %s from block %s of pool %q, not from default-ipv4 (created first)", fresh[0].Addr, b.CIDR, b.Pool)
			}
		}
	}
	out, err := l.Nodes[0].Ctl("ipam", "check")
	if !strings.Contains(out, "ippools/not-json") {
		t.Errorf("ipam check does not name the unreadable pool (err %v):\n%s", err, out)
	}
	// The pool in force mangled by hand: its routes stay (the last valid
	// value is kept), and so does the cluster's AS.
	cfg := conf.DefaultBGPConfiguration()
	cfg.Spec.ASNumber = 64600
	if err := l.PutBGPConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// Every node has applied it (not merely kept its old sessions) before
	// it is mangled: a node that never saw the valid value keeps the one
	// before it (generous wait: the speakers restart in place).
	for _, n := range l.Nodes {
		if err := eventually(2*time.Minute, func() error { return establishedWithAS(l, n, cfg.Spec.ASNumber) }); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{"ippools/default-ipv4": `{"spec":"garbage"}`, "bgp/config": `{"spec":{"asNumber":-1}}`} {
		if _, err := l.Etcd.Put(ctx, ipam.Prefix+k, v); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second)
	keptUp := true
	for _, n := range l.Nodes {
		if err := established(l, n); err != nil {
			t.Errorf("after the pool and bgp/config were mangled: %v", err)
			keptUp = false
		}
	}
	if err := testenv.Ping(a.NS, b.Addr, 3); err != nil {
		t.Errorf("pod to pod after the pool in force was mangled: %v", err)
		keptUp = false
	}
	restarted := 0
	for _, n := range l.Nodes {
		if !n.Alive() || n.PID() != pids[n.Name] {
			t.Errorf("%s: brindled restarted or exited", n.Name)
			restarted++
		}
	}
	logb, _ = os.ReadFile(l.Nodes[0].LogFile())
	kept := strings.Count(string(logb), "keeping its last valid value")
	figures(t, "%d malformed records written (wrong types, garbage, an overlapping pool, 1 MiB values, a newer schema): sessions up and pods reachable: %v, a new ADD got %s, fresh IPAM got %v, %d of them named in the log; the pool in force and bgp/config mangled: last valid values kept (%d log lines), sessions and pings unaffected: %v; brindleds restarted: %d",
		len(bad), unaffected, c.Addr, addrOf(fresh), len(bad)-len(missing), kept, keptUp, restarted)
}

func addrOf(has []ipam.HandleAddr) string {
	if len(has) == 0 {
		return "nothing"
	}
	return has[0].Addr.String()
}
