package routed_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/internal/testenv"
)

// TestBadInput: every bad input is refused with an error that names the
// field and the value, and leaves no veth, no address and no pod interface.
func TestBadInput(t *testing.T) {
	r := newRig(t)
	bin := testenv.BinDir(t, "brindle")
	cases := []struct {
		name   string
		stdin  string
		netns  func(p *pod) string
		before func(p *pod)
		want   []string
	}{
		{name: "malformed JSON", stdin: `{"cniVersion":"1.1.0","name":"n","type":"brindle",`, want: []string{"unmarshal", "network config"}},
		{name: "missing ipam type", stdin: `{"cniVersion":"1.1.0","name":"n","type":"brindle","ipam":{}}`, want: []string{"ipam.type", "missing"}},
		{name: "unknown ipam type", stdin: `{"cniVersion":"1.1.0","name":"n","type":"brindle","ipam":{"type":"nosuch-ipam"}}`, want: []string{`ipam.type "nosuch-ipam"`, "no such plugin"}},
		{name: "unsupported cniVersion", stdin: `{"cniVersion":"9.9.9","name":"n","type":"brindle","ipam":{"type":"host-local"}}`, want: []string{"incompatible CNI versions", "9.9.9"}},
		{name: "MTU too small", stdin: hostLocalConf(r, `"mtu":20`), want: []string{"mtu: 20 is out of range"}},
		{name: "MTU too large", stdin: hostLocalConf(r, `"mtu":70000`), want: []string{"mtu: 70000 is out of range"}},
		{name: "bad log level", stdin: hostLocalConf(r, `"logLevel":"loud"`), want: []string{`logLevel: "loud"`}},
		{name: "netns does not exist", stdin: hostLocalConf(r, ""), netns: func(*pod) string { return "/run/netns/brindle-no-such-ns" },
			want: []string{`CNI_NETNS "/run/netns/brindle-no-such-ns": no such network namespace`}},
		{name: "interface exists", stdin: hostLocalConf(r, ""), before: func(p *pod) {
			_ = p.ns.Do(func(ns.NetNS) error {
				a := netlink.NewLinkAttrs()
				a.Name = "eth0"
				return netlink.LinkAdd(&netlink.Veth{LinkAttrs: a, PeerName: "other0"})
			})
		}, want: []string{`CNI_IFNAME "eth0": an interface of that name already exists`}},
		{name: "host veth name taken (fails after IPAM: rolled back)", stdin: hostLocalConf(r, ""), before: func(p *pod) {
			_ = r.in(func() error {
				a := netlink.NewLinkAttrs()
				a.Name = p.veth()
				return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: a})
			})
		}, want: []string{"taken by a bridge device that brindle did not create"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := r.newPod("bad")
			if c.before != nil {
				c.before(p)
			}
			path := p.ns.Path()
			if c.netns != nil {
				path = c.netns(p)
			}
			args := &invoke.Args{Command: "ADD", ContainerID: "ctr-bad", NetNS: path, IfName: "eth0",
				PluginArgs: p.rt.Args, Path: bin}
			err := r.in(func() error {
				_, err := invoke.ExecPluginWithResult(context.Background(), filepath.Join(bin, "brindle"), []byte(c.stdin), args, nil)
				return err
			})
			errContains(t, err, c.want...)
			t.Logf("error: %v", err)

			// Nothing left behind.
			if links := r.hostLinks("bri"); len(links) > 1 || (len(links) == 1 && c.before == nil) {
				t.Errorf("host veths left: %v", links)
			}
			if ips := r.allocated(); len(ips) != 0 {
				t.Errorf("addresses left allocated: %v", ips)
			}
			if c.netns == nil {
				_ = p.ns.Do(func(ns.NetNS) error {
					links, _ := netlink.LinkList()
					for _, l := range links {
						if l.Attrs().Name != "lo" && c.before == nil {
							t.Errorf("pod interface left: %s", l.Attrs().Name)
						}
					}
					return nil
				})
			}
			// Remove what the case made itself.
			_ = r.in(func() error {
				if l, err := netlink.LinkByName(p.veth()); err == nil {
					return netlink.LinkDel(l)
				}
				return nil
			})
		})
	}
	if _, err := os.Stat(r.logFile); err != nil {
		t.Errorf("plugin log %s not written: %v", r.logFile, err)
	}
}

func hostLocalConf(r *rig, extra string) string {
	if extra != "" {
		extra = "," + extra
	}
	return `{"cniVersion":"1.1.0","name":"brindle-test","type":"brindle","logFile":"` + r.logFile + `"` + extra +
		`,"ipam":{"type":"host-local","dataDir":"` + filepath.Join(r.dir, "ipam") + `","ranges":[[{"subnet":"10.244.1.0/24"}]]}}`
}
