package conf

// Fuzz tests of every parser of outside input: the network configs the
// runtime hands the plugins, the YAML operators apply, and the records read
// back from etcd (which anyone with access can write). Each must return a
// value or an error, never panic, and what it accepts must hold up: valid
// as parsed, and the same when written out and read back. `make fuzz`
// runs each for 30 s (FUZZTIME).

import (
	"encoding/json"
	"reflect"
	"testing"
)

func FuzzParseNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"k8s","type":"brindle","ipam":{"type":"brindle-ipam"}}`,
		`{"cniVersion":"1.1.0","name":"k8s","type":"brindle","mtu":1450,"logLevel":"debug","logFile":"/tmp/x","mtuFile":"/var/lib/brindle/mtu","ipam":{"type":"host-local"},"dns":{"nameservers":["10.96.0.10"]}}`,
		`{"type":"brindle","ipam":{"type":"../x"}}`,
		`{"mtu":-1,"ipam":{"type":"x"}}`,
		`{"logLevel":"LOUD","ipam":{"type":"x"}}`,
		`[]`, `null`, `{"ipam":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseNetConf(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted a config that is not valid: %v", err)
		}
		if _, err := c.SlogLevel(); err != nil {
			t.Fatalf("accepted logLevel %q: %v", c.LogLevel, err)
		}
		if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > MaxMTU) || c.LogFile == "" || c.MTUFile == "" {
			t.Fatalf("accepted %+v", c)
		}
	})
}

func FuzzLoadIPAMNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"brindle-ipam","etcd_endpoints":"https://10.0.0.1:2379,https://10.0.0.2:2379","etcd_ca_cert_file":"/ca","etcd_cert_file":"/c","etcd_key_file":"/k","nodename_file":"/var/lib/brindle/nodename","assign_ipv6":true,"ipv4_pools":["default-ipv4"],"timeout_seconds":2.5}}`,
		`{"ipam":{"etcd_endpoints":"http://a:1","assign_ipv4":false}}`,
		`{"ipam":{"etcd_endpoints":"http://a:1","timeout_seconds":-3}}`,
		`{"ipam":{"etcd_endpoints":"http://a:1","timeout_seconds":1e300}}`,
		`{"ipam":{"etcd_endpoints":"http://a:1"},"runtimeConfig":{"ips":["10.0.0.1/32"]},"cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}`,
		`{"ipam":{"etcd_endpoints":"http://a:1","etcd_ca_cert_file":"/ca"}}`,
	} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{"ipam":{}}`), "http://127.0.0.1:2379")
	f.Fuzz(func(t *testing.T, data []byte, envEndpoints string) {
		env := func(k string) (string, bool) {
			if k == "ETCD_ENDPOINTS" && envEndpoints != "" {
				return envEndpoints, true
			}
			return "", false
		}
		n, err := LoadIPAMNetConf(data, env)
		if err != nil {
			return
		}
		if err := n.IPAM.Validate(); err != nil {
			t.Fatalf("accepted an ipam section that is not valid: %v", err)
		}
		if len(n.IPAM.Etcd.Endpoints) == 0 || n.IPAM.Timeout <= 0 || (!n.IPAM.AssignIPv4 && !n.IPAM.AssignIPv6) {
			t.Fatalf("accepted %+v", n.IPAM)
		}
	})
}

func FuzzParseIPPools(f *testing.F) {
	for _, s := range []string{
		"apiVersion: brindle.net/v1\nkind: IPPool\nmetadata:\n  name: default-ipv4\nspec:\n  cidr: 10.244.0.0/16\n  blockSize: 26\n  vxlanMode: CrossSubnet\n  natOutgoing: true\n  nodeSelector: rack == 'r1' && has(gpu)\n",
		"apiVersion: brindle.net/v1\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: 'fd00:244::/48', blockSize: 122}\n---\napiVersion: brindle.net/v1\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.1.0.0/16}\n",
		"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: calico\nspec:\n  cidr: 192.168.0.0/16\n  ipipMode: Always\n  blockSize: 24\n",
		"apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: c}\nspec: {cidr: 10.9.0.0/16, vxlanMode: Always, disabled: true}\n",
		"kind: IPPool\nspec: {cidr: 10.0.0.0/8, blockSize: 99}\n",
		"{\"apiVersion\":\"brindle.net/v1\",\"kind\":\"IPPool\",\"metadata\":{\"name\":\"j\"},\"spec\":{\"cidr\":\"10.3.0.0/16\"}}",
		"---\n---\n", "kind: [", "a: &a [*a]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pools, err := ParseIPPools(data)
		if err != nil {
			return
		}
		for _, p := range pools {
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted a pool that is not valid: %v (%+v)", err, p)
			}
			b, err := MarshalPool(p)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			again, err := UnmarshalPool(b)
			if err != nil {
				t.Fatalf("stored and read back: %v\n%s", err, b)
			}
			if !reflect.DeepEqual(again, p) {
				t.Fatalf("stored and read back differently:\n%+v\n%+v", p, again)
			}
		}
	})
}

func FuzzParseBGPDocs(f *testing.F) {
	for _, s := range []string{
		"apiVersion: brindle.net/v1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  asNumber: 64512\n  nodeToNodeMesh: false\n  listenPort: 179\n  gracefulRestart: true\n  restartTimeSeconds: 120\n",
		"apiVersion: brindle.net/v1\nkind: BGPPeer\nmetadata: {name: tor}\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 65000\n  nodeSelector: rack == 'r1'\n  password: s3cret\n  multihopTTL: 2\n  passive: true\n  port: 1179\n  maxPrefixes: 0\n  maxPrefixesRestartSeconds: 5\n",
		"apiVersion: brindle.net/v1\nkind: BGPPeer\nmetadata: {name: x}\nspec: {peerIP: '::1', asNumber: 1}\n",
		"kind: BGPPeer\nspec: {peerIP: 300.1.1.1}\n", "kind: Nope\n", "---",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfgs, peers, err := ParseBGPDocs(data)
		if err != nil {
			return
		}
		for _, c := range cfgs {
			if err := c.Validate(); err != nil {
				t.Fatalf("accepted a configuration that is not valid: %v", err)
			}
			b, _ := json.Marshal(c)
			again, err := UnmarshalBGPConfiguration(b)
			if err != nil || again.Validate() != nil || !reflect.DeepEqual(again, c) {
				t.Fatalf("stored and read back: %v\n%+v\n%+v", err, c, again)
			}
		}
		for _, p := range peers {
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted a peer that is not valid: %v", err)
			}
			b, _ := json.Marshal(p)
			again, err := UnmarshalBGPPeer(b)
			if err != nil || again.Validate() != nil || !reflect.DeepEqual(again, p) {
				t.Fatalf("stored and read back: %v\n%+v\n%+v", err, p, again)
			}
			_ = p.Selects(&Node{Name: "n", Labels: map[string]string{"rack": "r1"}})
		}
	})
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"all()", "has(gpu)", "!has(x) && rack == 'r1'", "k in {'a','b'} || k not in {'c'}", "k != \"v\"", "((", "'", "a ==", ""} {
		f.Add(s, "k", "a")
	}
	f.Fuzz(func(t *testing.T, src, k, v string) {
		sel, err := ParseSelector(src)
		if err != nil {
			return
		}
		_ = sel.Matches(map[string]string{k: v})
		_ = sel.Matches(nil)
		if again, err := ParseSelector(sel.String()); err != nil || again.Matches(map[string]string{k: v}) != sel.Matches(map[string]string{k: v}) {
			t.Fatalf("selector %q does not parse the same again: %v", sel.String(), err)
		}
	})
}

// FuzzEtcdValues feeds the decoders of what brindle reads back from etcd:
// node records, pools, the BGP configuration, peers and reservations, and
// a set of stored pools as IPAM picks from them.
func FuzzEtcdValues(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"name":"node-1","ipv4Address":"198.19.1.11/24","ipv6Address":"fd00::11/64","asNumber":65000,"routeReflectorClusterID":"224.0.0.1","labels":{"rack":"r1"},"tunnelIPv4":"10.244.0.1","vxlanMAC":"66:00:00:00:00:01"}`,
		`{"apiVersion":"brindle.net/v1","kind":"IPPool","metadata":{"name":"p"},"spec":{"cidr":"10.244.0.0/16","blockSize":26,"ipipMode":"Never","vxlanMode":"Never","natOutgoing":false,"nodeSelector":"all()","disabled":false}}`,
		`{"apiVersion":"brindle.net/v1","kind":"BGPConfiguration","metadata":{"name":"default"},"spec":{"asNumber":64512}}`,
		`{"apiVersion":"brindle.net/v1","kind":"BGPPeer","metadata":{"name":"tor"},"spec":{"peerIP":"192.0.2.1","asNumber":65000}}`,
		`{"spec":{"cidr":123}}`, `}{`, `[1,2]`, `{"v":99}`, `{"labels":{"k":null}}`,
	} {
		f.Add([]byte(s), []byte(`{"apiVersion":"brindle.net/v1","kind":"IPPool","metadata":{"name":"q"},"spec":{"cidr":"10.244.128.0/17"}}`))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if n, err := UnmarshalNode(a); err == nil && n.Validate() == nil {
			_, _ = n.IPv4()
			_, _ = n.IPv6()
			_ = n.AS(64512)
		}
		if p, err := UnmarshalPool(a); err == nil && p.Validate() == nil {
			if !p.Prefix().IsValid() {
				t.Fatalf("a valid pool without a prefix: %+v", p)
			}
			if _, err := ParseSelector(p.Spec.NodeSelector); err != nil {
				t.Fatalf("a valid pool whose selector does not parse: %v", err)
			}
		}
		if c, err := UnmarshalBGPConfiguration(a); err == nil && c.Validate() == nil {
			_, _ = c.Mesh(), c.GR()
		}
		if p, err := UnmarshalBGPPeer(a); err == nil && p.Validate() == nil {
			_ = p.Selects(&Node{Name: "n"})
		}
		if r, err := UnmarshalReservation(a); err == nil {
			_ = r.Validate()
		}
		pools, _ := UsablePools([]PoolRecord{{Key: "ippools/p", Value: a, CreateRevision: 2}, {Key: "ippools/q", Value: b, CreateRevision: 1}})
		for i := range pools {
			for j := i + 1; j < len(pools); j++ {
				if pools[i].Prefix().Overlaps(pools[j].Prefix()) {
					t.Fatalf("UsablePools kept overlapping pools %s and %s", pools[i].Spec.CIDR, pools[j].Spec.CIDR)
				}
			}
		}
	})
}
