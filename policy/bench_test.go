package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/policy/nft"
)

// benchCluster is the shape bench-policy uses: pods over namespaces with
// app and tier labels, policies selecting by app and allowing by tier,
// namespace or named port.
func benchCluster(pods, policies, namespaces int) (*Cluster, []Local) {
	c := &Cluster{}
	for i := range namespaces {
		c.Namespaces = append(c.Namespaces, &Namespace{Name: fmt.Sprintf("bench-%d", i), Labels: map[string]string{"team": fmt.Sprintf("team-%d", i%4)}})
	}
	var locals []Local
	for i := range pods {
		p := &Pod{Namespace: fmt.Sprintf("bench-%d", i%namespaces), Name: fmt.Sprintf("pod-%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app-%d", (i/namespaces)%10), "tier": fmt.Sprintf("tier-%d", i%5)},
			Addrs:  []netip.Addr{netip.AddrFrom4([4]byte{10, 90, byte(i >> 8), byte(i)})},
			Ports:  []ContainerPort{{Name: "http", Proto: nft.ProtoTCP, Port: 8080}}, Node: fmt.Sprintf("n%d", i%3)}
		c.Pods = append(c.Pods, p)
		if i%3 == 0 {
			locals = append(locals, Local{Veth: conf.HostVethName(p.Namespace, p.Name, ""), Addrs: p.Addrs, Namespace: p.Namespace, Name: p.Name})
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	http := intstr.FromString("http")
	for i := range policies {
		peer := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("tier-%d", r.IntN(5))}}}
		if r.IntN(3) == 0 {
			peer.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("team-%d", r.IntN(4))}}
		}
		port := networkingv1.NetworkPolicyPort{Port: &http}
		spec := networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", r.IntN(10))}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{peer}, Ports: []networkingv1.NetworkPolicyPort{port}}}}
		if r.IntN(4) == 0 {
			spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}
			spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		}
		c.Policies = append(c.Policies, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("bench-%d", i%namespaces), Name: fmt.Sprintf("pol-%d", i)}, Spec: spec})
	}
	return c, locals
}

// BenchmarkCompile: one sync's pure part for 1,000 pods and 500 policies:
// compile, one node's program, render.
func BenchmarkCompile(b *testing.B) {
	c, locals := benchCluster(1000, 500, 20)
	for b.Loop() {
		m := Compile(c)
		nft.Render(m.Program(locals, false))
	}
}
