package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam"
)

func TestNodeRouteReflector(t *testing.T) {
	s := etcdtest.Start(t)
	put := func(n conf.Node) {
		t.Helper()
		b, _ := json.Marshal(n)
		if _, err := s.Client.Put(context.Background(), ipam.Prefix+"nodes/"+n.Name, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	get := func(name string) conf.Node {
		t.Helper()
		res, err := s.Client.Get(context.Background(), ipam.Prefix+"nodes/"+name)
		if err != nil || len(res.Kvs) != 1 {
			t.Fatalf("node %s: %v", name, err)
		}
		n, err := conf.UnmarshalNode(res.Kvs[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	put(conf.Node{V: 1, Name: "rr-a", IPv4Address: "10.0.0.1/24", Labels: map[string]string{"rack": "r1"}})
	put(conf.Node{V: 1, Name: "labelled", IPv4Address: "10.0.0.2/24", Labels: map[string]string{conf.RouteReflectorLabel: "224.0.0.1"}})

	if out := mustCtl(t, s.Endpoint, "node", "route-reflector", "rr-a", "--cluster-id", "224.0.0.1"); !strings.Contains(out, "route reflector, cluster ID 224.0.0.1") {
		t.Fatalf("output %q", out)
	}
	if n := get("rr-a"); n.RRClusterID() != "224.0.0.1" || n.Labels["rack"] != "r1" || n.IPv4Address != "10.0.0.1/24" {
		t.Fatalf("record after set: %+v", n)
	}
	mustCtl(t, s.Endpoint, "node", "route-reflector", "rr-a", "--clear")
	if n := get("rr-a"); n.RRClusterID() != "" {
		t.Fatalf("record after clear: %+v", n)
	}
	for _, c := range []struct {
		args []string
		err  string
	}{
		{[]string{"node", "route-reflector", "rr-a", "--cluster-id", "yes"}, `routeReflectorClusterID "yes": want a dotted quad`},
		{[]string{"node", "route-reflector", "nope", "--cluster-id", "224.0.0.1"}, `node "nope": not registered`},
		{[]string{"node", "route-reflector", "rr-a"}, "give --cluster-id ID or --clear"},
		{[]string{"node", "route-reflector", "labelled", "--clear"}, "its label brindle.net/route-reflector-cluster-id=224.0.0.1 makes it a reflector"},
	} {
		if out, err := ctl(t, s.Endpoint, c.args...); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("brindlectl %v: %v (%s), want %q", c.args, err, out, c.err)
		}
	}
}
