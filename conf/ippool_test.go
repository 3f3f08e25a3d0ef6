package conf

import (
	"strings"
	"testing"
)

func pool(cidr string, mut func(*IPPool)) IPPool {
	p := IPPool{Metadata: ObjectMeta{Name: "p"}, Spec: IPPoolSpec{CIDR: cidr}}
	if mut != nil {
		mut(&p)
	}
	p.Default()
	return p
}

func TestIPPoolValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p       IPPool
		wantErr string // substring; "" means valid
	}{
		{"v4 defaults", pool("10.244.0.0/16", nil), ""},
		{"v6 defaults", pool("fd00:10::/64", nil), ""},
		{"host bits", pool("10.244.0.1/16", nil), `spec.cidr "10.244.0.1/16": host bits set`},
		{"not a cidr", pool("10.244.0.0", nil), `spec.cidr "10.244.0.0"`},
		{"link-local", pool("169.254.0.0/20", nil), "overlaps link-local 169.254.0.0/16"},
		{"contains link-local", pool("169.0.0.0/8", nil), "overlaps link-local"},
		{"loopback", pool("127.0.0.0/16", nil), "overlaps loopback"},
		{"multicast", pool("224.1.0.0/16", nil), "overlaps multicast"},
		{"v6 multicast", pool("ff05::/64", nil), "overlaps multicast"},
		{"v6 link-local", pool("fe80::/64", nil), "link-local fe80::/10"},
		{"block too small", pool("10.0.0.0/16", func(p *IPPool) { p.Spec.BlockSize = 31 }), "spec.blockSize 31: out of range 20-30"},
		{"block too big", pool("10.0.0.0/16", func(p *IPPool) { p.Spec.BlockSize = 19 }), "spec.blockSize 19: out of range"},
		{"block larger than pool", pool("10.0.0.0/27", nil), "spec.blockSize 26: a block is larger than the pool"},
		{"v6 block range", pool("fd00::/64", func(p *IPPool) { p.Spec.BlockSize = 26 }), "out of range 116-126"},
		{"ipip and vxlan", pool("10.0.0.0/16", func(p *IPPool) { p.Spec.IPIPMode = EncapAlways; p.Spec.VXLANMode = EncapCrossSubnet }), "only one encapsulation"},
		{"ipip on v6", pool("fd00::/64", func(p *IPPool) { p.Spec.IPIPMode = EncapAlways }), "IPIP carries IPv4 only"},
		{"bad mode", pool("10.0.0.0/16", func(p *IPPool) { p.Spec.VXLANMode = "always" }), `spec.vxlanMode "always": must be one of Never, Always, CrossSubnet`},
		{"vxlan crosssubnet", pool("10.0.0.0/16", func(p *IPPool) { p.Spec.VXLANMode = EncapCrossSubnet }), ""},
		{"selector ok", pool("10.0.0.0/16", func(p *IPPool) { p.Spec.NodeSelector = "zone == 'a' && has(gpu)" }), ""},
		{"selector bad", pool("10.0.0.0/16", func(p *IPPool) { p.Spec.NodeSelector = "zone = a" }), `spec.nodeSelector "zone = a"`},
		{"bad name", pool("10.0.0.0/16", func(p *IPPool) { p.Metadata.Name = "Bad_Name" }), `metadata.name "Bad_Name"`},
		{"bad kind", pool("10.0.0.0/16", func(p *IPPool) { p.Kind = "IPPools" }), `kind "IPPools"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("want error containing %q, got valid", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestIPPoolDefaultsWrittenOut(t *testing.T) {
	pools, err := ParseIPPools([]byte(`
apiVersion: brindle.net/v1
kind: IPPool
metadata:
  name: default-v4
spec:
  cidr: 10.244.0.0/16
---
kind: IPPool
metadata:
  name: v6
spec:
  cidr: fd00:10::/64
  vxlanMode: Always
`))
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := pools[0].Spec, pools[1].Spec
	if v4.BlockSize != 26 || v4.IPIPMode != EncapNever || v4.VXLANMode != EncapNever || v4.NodeSelector != "all()" || v4.NATOutgoing || v4.Disabled {
		t.Errorf("v4 defaults not applied: %+v", v4)
	}
	if v6.BlockSize != 122 || v6.VXLANMode != EncapAlways || v6.IPIPMode != EncapNever {
		t.Errorf("v6 defaults not applied: %+v", v6)
	}
	b, _ := MarshalPool(pools[0])
	for _, field := range []string{`"blockSize":26`, `"ipipMode":"Never"`, `"vxlanMode":"Never"`, `"natOutgoing":false`, `"nodeSelector":"all()"`, `"disabled":false`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("stored pool %s lacks %s", b, field)
		}
	}
}

func TestParseIPPoolsRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "kind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16, blockBits: 24}",
		"wrong kind":    "kind: BGPPeer\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16}",
		"empty":         "# nothing\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseIPPools([]byte(doc)); err == nil {
				t.Fatal("want error")
			}
		})
	}
}

func TestValidatePoolsOverlap(t *testing.T) {
	a := pool("10.0.0.0/16", func(p *IPPool) { p.Metadata.Name = "a" })
	b := pool("10.0.128.0/17", func(p *IPPool) { p.Metadata.Name = "b" })
	c := pool("10.1.0.0/16", func(p *IPPool) { p.Metadata.Name = "c" })
	if err := ValidatePools([]IPPool{a, c}); err != nil {
		t.Fatalf("disjoint pools: %v", err)
	}
	err := ValidatePools([]IPPool{a, b})
	if err == nil || !strings.Contains(err.Error(), `overlaps pool "a"`) && !strings.Contains(err.Error(), `overlaps pool "b"`) {
		t.Fatalf("want overlap error, got %v", err)
	}
}

func TestSelector(t *testing.T) {
	labels := map[string]string{"zone": "a", "gpu": "true"}
	for sel, want := range map[string]bool{
		"":                               true,
		"all()":                          true,
		"zone == 'a'":                    true,
		`zone == "b"`:                    false,
		"zone != 'b' && has(gpu)":        true,
		"!has(gpu)":                      false,
		"zone in {'b', 'c'} || has(gpu)": true,
		"zone not in {'a'}":              false,
		"rack == 'r1' || zone in {'a'}":  true,
		"has(kubernetes.io/hostname)":    false,
		"!has(kubernetes.io/hostname)":   true,
	} {
		s, err := ParseSelector(sel)
		if err != nil {
			t.Errorf("%q: %v", sel, err)
			continue
		}
		if got := s.Matches(labels); got != want {
			t.Errorf("%q matches %v: got %v, want %v", sel, labels, got, want)
		}
	}
	for _, bad := range []string{"zone ==", "has(", "zone = 'a'", "all() &&", "zone in {'a'", "'a' == zone"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("%q: want parse error", bad)
		}
	}
}
