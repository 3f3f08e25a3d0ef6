package conf

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The document a Calico user pastes (issue 10), in both API versions.
const calicoPoolDoc = `apiVersion: %s
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.60.0.0/16, ipipMode: Always, vxlanMode: Never, natOutgoing: true,
       nodeSelector: all(), allowedUses: [Workload, Tunnel]}
`

func TestCalicoIPPoolAppliesAsIs(t *testing.T) {
	for _, v := range []string{CalicoCRDAPIVersion, CalicoAPIVersion} {
		t.Run(v, func(t *testing.T) {
			pools, err := ParseIPPools([]byte(strings.Replace(calicoPoolDoc, "%s", v, 1)))
			if err != nil {
				t.Fatal(err)
			}
			p := pools[0]
			want := IPPoolSpec{CIDR: "10.60.0.0/16", BlockSize: 26, IPIPMode: EncapAlways, VXLANMode: EncapNever,
				NATOutgoing: true, NodeSelector: "all()", AllowedUses: []PoolUse{UseWorkload, UseTunnel}, AssignmentMode: AssignAutomatic}
			if p.APIVersion != APIVersion || p.Kind != KindIPPool || p.Metadata.Name != "pool-a" {
				t.Fatalf("stored as %s %s %q, want brindle's form", p.APIVersion, p.Kind, p.Metadata.Name)
			}
			if !specEqual(p.Spec, want) {
				t.Fatalf("spec %+v, want %+v", p.Spec, want)
			}
		})
	}
}

func specEqual(a, b IPPoolSpec) bool {
	return reflect.DeepEqual(a, b)
}

func TestCalicoIPPoolDefaults(t *testing.T) {
	// What kubectl prints for a CRD object: metadata noise, modes unset or
	// empty. Unset modes mean Never, never something else.
	pools, err := ParseIPPools([]byte(`apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata:
  name: default-ipv6-ippool
  uid: 6b1d7a3e-0000-4000-8000-000000000000
  resourceVersion: "1234"
  generation: 1
  creationTimestamp: "2026-01-01T00:00:00Z"
  annotations:
    projectcalico.org/metadata: '{"creationTimestamp":null}'
spec:
  cidr: fd00:60::/64
  ipipMode: ""
  disableBGPExport: true
  assignmentMode: Manual
  allowedUses: [Tunnel]
  nodeSelector: "!all()"
`))
	if err != nil {
		t.Fatal(err)
	}
	s := pools[0].Spec
	want := IPPoolSpec{CIDR: "fd00:60::/64", BlockSize: 122, IPIPMode: EncapNever, VXLANMode: EncapNever,
		NodeSelector: "!all()", DisableBGPExport: true, AllowedUses: []PoolUse{UseTunnel}, AssignmentMode: AssignManual}
	if !specEqual(s, want) {
		t.Fatalf("spec %+v, want %+v", s, want)
	}
	if s.Allows(UseTunnel) || s.Allows(UseWorkload) {
		t.Fatal("a Manual pool must not be used automatically")
	}
	sel, _ := ParseSelector(s.NodeSelector)
	if sel.Matches(map[string]string{"a": "b"}) || sel.Matches(nil) {
		t.Fatal("!all() matched a node")
	}
}

func TestCalicoRefusesUnsupportedFieldsByName(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"awsSubnetID: subnet-1", "spec.awsSubnetID: not supported by brindle (brindle does not manage AWS subnets)"},
		{"ipip: {enabled: true, mode: always}", "spec.ipip: not supported by brindle (the deprecated form of ipipMode"},
		{"nat-outgoing: true", "spec.nat-outgoing: not supported"},
		{"namespaceSelector: all()", "spec.namespaceSelector: not supported"},
		{"allowedUses: [LoadBalancer]", `spec.allowedUses "LoadBalancer": brindle does not assign Service load-balancer addresses`},
		{"allowedUses: [Workload, Workload]", `listed twice`},
		{"assignmentMode: Sometimes", `spec.assignmentMode "Sometimes"`},
		{"vxlanMode: Always\n  ipipMode: Always", "only one encapsulation"},
		{"blockSize: 32", "spec.blockSize 32: out of range 20-30"},
		{"nodeSelector: \"zone == 'a' && starts with\"", "spec.nodeSelector"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			doc := "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec:\n  cidr: 10.61.0.0/16\n  " + tc.spec + "\n"
			_, err := ParseIPPools([]byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	_, err := ParseIPPools([]byte("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16}\nstatus: {}\n"))
	if err == nil || !strings.Contains(err.Error(), "status: not supported") {
		t.Fatalf("top-level field: %v", err)
	}
}

func TestIPReservations(t *testing.T) {
	rs, err := ParseIPReservations([]byte(`apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: gateways}
spec:
  reservedCIDRs: [10.60.0.1, 10.60.1.0/28, "fd00:60::1"]
---
kind: IPReservation
metadata: {name: printers}
spec: {reservedCIDRs: [10.60.2.0/30]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := rs[0].Spec.ReservedCIDRs; !slices.Equal(got, []string{"10.60.0.1/32", "10.60.1.0/28", "fd00:60::1/128"}) {
		t.Fatalf("stored %v", got)
	}
	if rs[1].APIVersion != APIVersion || rs[0].APIVersion != APIVersion {
		t.Fatal("not stored in brindle's form")
	}
	for _, tc := range []struct{ doc, want string }{
		{"kind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [10.0.0.1/24]}", `spec.reservedCIDRs "10.0.0.1/24": host bits set`},
		{"kind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [nope]}", `spec.reservedCIDRs "nope"`},
		{"kind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: []}", "spec.reservedCIDRs: empty"},
		{"kind: IPReservation\nmetadata: {name: R}\nspec: {reservedCIDRs: [10.0.0.1]}", `metadata.name "R"`},
		{"kind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [10.0.0.1], extra: 1}", `unknown field "extra"`},
		{"apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [10.0.0.1], extra: 1}", "spec.extra: not supported"},
		{"kind: IPPool\nmetadata: {name: r}\nspec: {cidr: 10.0.0.0/16}", "brindlectl pool apply"},
	} {
		if _, err := ParseIPReservations([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.doc, err, tc.want)
		}
	}
	if _, err := ParseIPPools([]byte("kind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [10.0.0.1]}")); err == nil || !strings.Contains(err.Error(), "brindlectl reservation apply") {
		t.Errorf("pool apply of a reservation: %v", err)
	}
}

// Reservation documents are outside input (an operator's file): parsing
// never panics, and what parses is valid.
func FuzzParseIPReservations(f *testing.F) {
	for _, s := range []string{
		"kind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [10.0.0.1, 10.0.1.0/28]}",
		"apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: ['fd00::1']}",
		"apiVersion: crd.projectcalico.org/v1\nkind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [], x: 1}\n---\nkind: IPPool",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		rs, err := ParseIPReservations([]byte(doc))
		if err != nil {
			return
		}
		for _, r := range rs {
			if err := r.Validate(); err != nil {
				t.Fatalf("parsed but invalid: %v", err)
			}
		}
	})
}
