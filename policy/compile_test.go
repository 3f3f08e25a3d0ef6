package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/brindle-net/brindle/policy/nft"
)

// The test cluster: namespaces x and y, pods with labels, addresses and
// named ports, and a hostNetwork pod.
func testCluster(pols ...*networkingv1.NetworkPolicy) *Cluster {
	a := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }
	return &Cluster{
		Namespaces: []*Namespace{{Name: "x", Labels: map[string]string{"ns": "x"}}, {Name: "y", Labels: map[string]string{"ns": "y"}}},
		Pods: []*Pod{
			{Namespace: "x", Name: "a", Labels: map[string]string{"app": "a"}, Addrs: append(a("10.0.0.1"), netip.MustParseAddr("fd00::1")), Node: "n1",
				Ports: []ContainerPort{{Name: "http", Proto: nft.ProtoTCP, Port: 80}}},
			{Namespace: "x", Name: "b", Labels: map[string]string{"app": "b"}, Addrs: a("10.0.0.2"), Node: "n1"},
			{Namespace: "y", Name: "a", Labels: map[string]string{"app": "a"}, Addrs: a("10.0.1.1"), Node: "n2"},
			{Namespace: "y", Name: "c", Labels: map[string]string{"app": "c"}, Addrs: a("10.0.1.3"), Node: "n2",
				Ports: []ContainerPort{{Name: "dns", Proto: nft.ProtoUDP, Port: 53}, {Name: "http", Proto: nft.ProtoTCP, Port: 8080}}},
			{Namespace: "y", Name: "host", Labels: map[string]string{"app": "a"}, Addrs: a("192.168.1.2"), Node: "n2", HostNetwork: true},
		},
		Policies: pols,
	}
}

type ppol = networkingv1.NetworkPolicy

func pol(ns, name string, spec networkingv1.NetworkPolicySpec) *ppol {
	return &ppol{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func ingressOnly(podSel *metav1.LabelSelector, rules ...networkingv1.NetworkPolicyIngressRule) networkingv1.NetworkPolicySpec {
	return networkingv1.NetworkPolicySpec{PodSelector: *podSel, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, Ingress: rules}
}

func egressOnly(podSel *metav1.LabelSelector, rules ...networkingv1.NetworkPolicyEgressRule) networkingv1.NetworkPolicySpec {
	return networkingv1.NetworkPolicySpec{PodSelector: *podSel, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, Egress: rules}
}

func from(peers ...networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{From: peers}
}

func port(proto corev1.Protocol, p intstr.IntOrString, end ...int32) networkingv1.NetworkPolicyPort {
	np := networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
	if len(end) > 0 {
		np.EndPort = &end[0]
	}
	return np
}

var (
	tcp  = corev1.ProtocolTCP
	udp  = corev1.ProtocolUDP
	sctp = corev1.ProtocolSCTP
)

func TestEvaluate(t *testing.T) {
	X, Y := "10.0.0.1", "10.0.1.1" // x/a, y/a
	XB, YC := "10.0.0.2", "10.0.1.3"
	type probe struct {
		src, dst string
		proto    uint8
		port     uint16
		want     bool
	}
	P := func(src, dst string, proto uint8, port uint16, want bool) probe {
		return probe{src, dst, proto, port, want}
	}
	cases := []struct {
		name   string
		pols   []*ppol
		probes []probe
	}{
		{"no policy: open", nil, []probe{P(Y, X, 6, 80, true), P(X, Y, 17, 53, true)}},
		{"deny all ingress in x", []*ppol{pol("x", "deny", ingressOnly(sel()))},
			[]probe{P(Y, X, 6, 80, false), P(XB, X, 6, 80, false), P(X, Y, 6, 80, true), P("192.168.9.9", X, 6, 80, false)}},
		{"a pod always reaches itself", []*ppol{pol("x", "deny", ingressOnly(sel())), pol("x", "deny-e", egressOnly(sel()))},
			[]probe{P(X, X, 6, 80, true), P("fd00::1", "fd00::1", 6, 80, true), P(X, XB, 6, 80, false)}},
		{"pods app=b of the same namespace", []*ppol{pol("x", "p", ingressOnly(sel("app", "a"), from(networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "b")})))},
			[]probe{P(XB, X, 6, 80, true), P(Y, X, 6, 80, false), P(Y, XB, 6, 80, true)}},
		{"namespace ns=y", []*ppol{pol("x", "p", ingressOnly(sel(), from(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("ns", "y")})))},
			[]probe{P(Y, X, 6, 80, true), P(YC, X, 6, 80, true), P(XB, X, 6, 80, false)}},
		{"namespace ns=y and pod app=c", []*ppol{pol("x", "p", ingressOnly(sel(), from(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("ns", "y"), PodSelector: sel("app", "c")})))},
			[]probe{P(YC, X, 6, 80, true), P(Y, X, 6, 80, false)}},
		{"all namespaces", []*ppol{pol("x", "p", ingressOnly(sel(), from(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel()})))},
			[]probe{P(YC, X, 6, 80, true), P(XB, X, 6, 80, true), P("192.168.9.9", X, 6, 80, false)}},
		{"hostNetwork pods are not peers", []*ppol{pol("x", "p", ingressOnly(sel(), from(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(), PodSelector: sel("app", "a")})))},
			[]probe{P(Y, X, 6, 80, true), P("192.168.1.2", X, 6, 80, false)}},
		{"ipBlock with except", []*ppol{pol("x", "p", ingressOnly(sel(), from(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.1.0/24", Except: []string{"10.0.1.3/32"}}})))},
			[]probe{P(Y, X, 6, 80, true), P(YC, X, 6, 80, false), P(XB, X, 6, 80, false)}},
		{"IPv6 ipBlock", []*ppol{pol("y", "p", ingressOnly(sel(), from(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/64"}})))},
			[]probe{P("fd00::1", Y, 6, 80, true), P(X, Y, 6, 80, false)}},
		{"TCP port 80", []*ppol{pol("x", "p", ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(80))}}))},
			[]probe{P(Y, X, 6, 80, true), P(Y, X, 6, 81, false), P(Y, X, 17, 80, false)}},
		{"port range 80-82", []*ppol{pol("x", "p", ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(80), 82)}}))},
			[]probe{P(Y, X, 6, 82, true), P(Y, X, 6, 83, false), P(Y, X, 6, 79, false)}},
		{"default protocol TCP, any UDP port", []*ppol{pol("x", "p", ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp}, {Port: ptr(intstr.FromInt32(81))}}}))},
			[]probe{P(Y, X, 17, 5353, true), P(Y, X, 6, 81, true), P(Y, X, 6, 80, false)}},
		{"SCTP port", []*ppol{pol("x", "p", ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(sctp, intstr.FromInt32(80))}}))},
			[]probe{P(Y, X, 132, 80, true), P(Y, X, 6, 80, false)}},
		{"named port on the selected pod", []*ppol{pol("x", "p", ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("http"))}}))},
			[]probe{P(Y, X, 6, 80, true), P(Y, X, 6, 8080, false), P(Y, XB, 6, 80, false)}},
		{"named port with the wrong protocol", []*ppol{pol("x", "p", ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(udp, intstr.FromString("http"))}}))},
			[]probe{P(Y, X, 6, 80, false), P(Y, X, 17, 80, false)}},
		{"ingress rule {} allows all", []*ppol{pol("x", "p", ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{}))},
			[]probe{P(Y, X, 6, 80, true), P("192.168.9.9", X, 17, 1, true)}},
		{"deny all egress", []*ppol{pol("x", "p", egressOnly(sel()))},
			[]probe{P(X, Y, 6, 80, false), P(Y, X, 6, 80, true), P(X, "8.8.8.8", 17, 53, false)}},
		{"egress to a named port of the peer", []*ppol{pol("x", "p", egressOnly(sel(), networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{port(udp, intstr.FromString("dns"))}}))},
			[]probe{P(X, YC, 17, 53, true), P(X, YC, 6, 53, false), P(X, Y, 17, 53, false), P(X, "8.8.8.8", 17, 53, false)}},
		{"egress to ipBlock", []*ppol{pol("x", "p", egressOnly(sel(), networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "8.8.8.0/24"}}}}))},
			[]probe{P(X, "8.8.8.8", 17, 53, true), P(X, Y, 6, 80, false)}},
		{"egress rules without policyTypes isolate egress", []*ppol{pol("x", "p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "a"),
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("ns", "y")}}}}})},
			[]probe{P(X, Y, 6, 80, true), P(X, XB, 6, 80, false), P(XB, X, 6, 80, false), P(Y, XB, 6, 80, true)}},
		{"policies add up", []*ppol{
			pol("x", "p1", ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "b")}}, Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(80))}})),
			pol("x", "p2", ingressOnly(sel(), from(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("ns", "y")}))),
		}, []probe{P(XB, X, 6, 80, true), P(XB, X, 6, 81, false), P(Y, X, 6, 81, true)}},
		{"a policy of another namespace does not apply", []*ppol{pol("y", "deny", ingressOnly(sel()))},
			[]probe{P(Y, X, 6, 80, true), P(X, Y, 6, 80, false)}},
		{"both sides must allow", []*ppol{pol("x", "e", egressOnly(sel("app", "a"), networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("ns", "y")}}})),
			pol("y", "i", ingressOnly(sel("app", "c")))},
			[]probe{P(X, Y, 6, 80, true), P(X, YC, 6, 80, false)}},
		{"an invalid selector selects nothing", []*ppol{pol("x", "bad", ingressOnly(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus"}}}))},
			[]probe{P(Y, X, 6, 80, true)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := Compile(testCluster(c.pols...))
			for _, p := range c.probes {
				v := m.Evaluate(netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst), p.proto, p.port)
				if v.Allowed != p.want {
					t.Errorf("%s -> %s %d/%d: allowed=%v, want %v (egress: %s; ingress: %s)", p.src, p.dst, p.port, p.proto, v.Allowed, p.want, v.Egress, v.Ingress)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestProblemsNamed(t *testing.T) {
	m := Compile(testCluster(pol("x", "bad", ingressOnly(sel(), from(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}})))))
	p, ok := m.Policy("x/bad")
	if !ok || len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "spec.ingress[0].peers[0].ipBlock") || !strings.Contains(p.Problems[0], "10.0.0.0/33") {
		t.Fatalf("problems %q: want one naming spec.ingress[0].peers[0].ipBlock and the value", p.Problems)
	}
}

// TestProgram: only local pods the model knows are endpoints, each with its
// policies in order; pod-dependent elements only for policies that isolate
// a local pod.
func TestProgram(t *testing.T) {
	m := Compile(testCluster(
		pol("x", "p1", ingressOnly(sel(), from(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("ns", "y")}))),
		pol("x", "p2", ingressOnly(sel("app", "a"), networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("http"))}})),
		pol("y", "p3", egressOnly(sel(), networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel()}}})),
	))
	locals := []Local{
		{Veth: "bri1", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Namespace: "x", Name: "a"},
		{Veth: "bri2", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, Namespace: "x", Name: "b"},
		{Veth: "bri9", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, Namespace: "x", Name: "unknown"},
	}
	prog := m.Program(locals, false)
	var veths []string
	for _, e := range prog.Endpoints {
		veths = append(veths, e.Veth)
	}
	if !slices.Equal(veths, []string{"bri1", "bri2"}) {
		t.Fatalf("endpoints %v, want bri1 bri2 (the unknown pod stays in default deny)", veths)
	}
	p1, p2, p3 := PolicyID("x", "p1"), PolicyID("x", "p2"), PolicyID("y", "p3")
	if got := prog.Endpoints[0].Ingress; !slices.Equal(got, []string{p1, p2}) {
		t.Errorf("x/a ingress policies %v, want p1 p2", got)
	}
	if got := prog.Endpoints[1].Ingress; !slices.Equal(got, []string{p1}) {
		t.Errorf("x/b ingress policies %v, want p1", got)
	}
	if len(prog.Policies) != 3 {
		t.Fatalf("%d policies, want all 3 (chains for every policy)", len(prog.Policies))
	}
	byID := map[string]nft.Policy{}
	for _, p := range prog.Policies {
		byID[p.ID] = p
	}
	if ps := byID[p1].Ingress[0].PeerSet; ps == "" || len(prog.PeerSets[ps]) != 2 {
		t.Errorf("p1 peer set %q: %v, want y/a and y/c", ps, prog.PeerSets[ps])
	}
	if got := byID[p2].Ingress[0].Named; len(got) != 2 || got[0].Port != 80 {
		t.Errorf("p2 named ports %v, want x/a's http on both its addresses", got)
	}
	if got := byID[p3]; got.Egress == nil || got.Egress[0].PeerSet == "" || len(prog.PeerSets[got.Egress[0].PeerSet]) != 0 || got.Ingress != nil {
		t.Errorf("p3 (no local pod): %+v, want an egress chain with an empty peer set", got)
	}
	all := m.Program(locals, true)
	if len(all.Endpoints) != 3 {
		t.Errorf("admitAll: %d endpoints, want 3", len(all.Endpoints))
	}
}
