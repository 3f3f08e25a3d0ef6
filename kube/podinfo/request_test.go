package podinfo

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	sts := &Owner{Kind: "StatefulSet", Name: "web", UID: "u1"}
	for _, tc := range []struct {
		name    string
		info    Info
		check   func(Request) bool
		wantErr string
	}{
		{"nothing", Info{}, func(r Request) bool { return r.IPs == nil && r.IPv4Pools == nil && r.Sticky == nil }, ""},
		{"ipAddrs both families", Info{Annotations: map[string]string{IPAddrs: `["10.0.0.5", "fd00::5/128"]`}},
			func(r Request) bool { return len(r.IPs) == 2 && r.IPsFrom == "annotation "+IPAddrs }, ""},
		{"calico ipAddrs", Info{Annotations: map[string]string{CalicoIPAddrs: `["10.0.0.5"]`}},
			func(r Request) bool {
				return r.IPs[0].String() == "10.0.0.5" && r.IPsFrom == "annotation "+CalicoIPAddrs
			}, ""},
		{"twins agree", Info{Annotations: map[string]string{CalicoIPAddrs: `["10.0.0.5"]`, IPAddrs: `[" 10.0.0.5"]`}},
			func(r Request) bool { return r.IPsFrom == "annotation "+IPAddrs }, ""},
		{"twins disagree", Info{Annotations: map[string]string{CalicoIPAddrs: `["10.0.0.6"]`, IPAddrs: `["10.0.0.5"]`}}, nil,
			`pod ns/p: pod annotations brindle.net/ipAddrs "[\"10.0.0.5\"]" and cni.projectcalico.org/ipAddrs "[\"10.0.0.6\"]" disagree`},
		{"not json", Info{Annotations: map[string]string{IPAddrs: `10.0.0.5`}}, nil, `pod ns/p: annotation brindle.net/ipAddrs "10.0.0.5": not a JSON list`},
		{"not an address", Info{Annotations: map[string]string{IPAddrs: `["10.0.0.300"]`}}, nil, `"10.0.0.300" is not an IP address`},
		{"a range", Info{Annotations: map[string]string{IPAddrs: `["10.0.0.0/24"]`}}, nil, `"10.0.0.0/24" is not an IP address`},
		{"two v4", Info{Annotations: map[string]string{IPAddrs: `["10.0.0.5","10.0.0.6"]`}}, nil, "at most one address per family"},
		{"empty", Info{Annotations: map[string]string{IPAddrs: `[]`}}, nil, "empty list"},
		{"noIpam refused", Info{Annotations: map[string]string{CalicoIPAddrsNoIPAM: `["10.0.0.5"]`}}, nil, "cni.projectcalico.org/ipAddrsNoIpam \"[\\\"10.0.0.5\\\"]\": not supported"},
		{"pod pools win", Info{Annotations: map[string]string{IPv4Pools: `["a"]`}, NamespaceAnnotations: map[string]string{IPv4Pools: `["b"]`}},
			func(r Request) bool { return r.IPv4Pools[0] == "a" && r.IPv4PoolsFrom == "pod annotation "+IPv4Pools }, ""},
		{"namespace default", Info{NamespaceAnnotations: map[string]string{CalicoIPv6Pools: `["fd00:1::/64"]`}},
			func(r Request) bool {
				return r.IPv6Pools[0] == "fd00:1::/64" && r.IPv6PoolsFrom == "annotation "+CalicoIPv6Pools+" of namespace ns"
			}, ""},
		{"pool of the wrong family", Info{Annotations: map[string]string{IPv4Pools: `["fd00::/64"]`}}, nil, "fd00::/64 is not of the annotation's family"},
		{"empty pools", Info{Annotations: map[string]string{IPv4Pools: `[]`}}, nil, "want a non-empty JSON list"},
		{"sticky", Info{Annotations: map[string]string{Sticky: "true"}, Owner: sts, Name: "web-12"},
			func(r Request) bool {
				return r.Sticky != nil && r.Sticky.Ordinal == 12 && r.Sticky.UID == "u1" && r.Sticky.StatefulSet == "web"
			}, ""},
		{"sticky off", Info{Annotations: map[string]string{Sticky: "false"}, Owner: sts, Name: "web-1"}, func(r Request) bool { return r.Sticky == nil }, ""},
		{"sticky bad value", Info{Annotations: map[string]string{Sticky: "yes please"}}, nil, `want "true" or "false"`},
		{"sticky without a statefulset", Info{Annotations: map[string]string{Sticky: "true"}, Owner: &Owner{Kind: "ReplicaSet", Name: "rs"}}, nil,
			"only pods of a StatefulSet can be sticky (this pod's controller is ReplicaSet rs)"},
		{"sticky odd name", Info{Annotations: map[string]string{Sticky: "true"}, Owner: sts, Name: "web-x"}, nil, "the name is not web-<ordinal>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.info.Namespace == "" {
				tc.info.Namespace = "ns"
			}
			if tc.info.Name == "" {
				tc.info.Name = "p"
			}
			r, err := Parse(&tc.info)
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			case tc.wantErr == "" && err != nil:
				t.Fatal(err)
			case tc.check != nil && !tc.check(r):
				t.Fatalf("request %+v", r)
			}
		})
	}
}

// The annotations come from the API, that is from users: parsing them
// never panics, whatever they hold.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`["10.0.0.5"]`, `[]`, `["fd00::1","10.0.0.1"]`, `x`, `["a/b"]`, `true`} {
		f.Add(s, s, "true", "web-3")
	}
	f.Fuzz(func(t *testing.T, addrs, pools, sticky, name string) {
		i := &Info{Namespace: "ns", Name: name, Owner: &Owner{Kind: "StatefulSet", Name: "web"},
			Annotations:          map[string]string{IPAddrs: addrs, IPv4Pools: pools, Sticky: sticky},
			NamespaceAnnotations: map[string]string{IPv6Pools: pools}}
		r, err := Parse(i)
		if err == nil && len(r.IPs) > 2 {
			t.Fatalf("more than two addresses accepted: %v", r.IPs)
		}
	})
}
