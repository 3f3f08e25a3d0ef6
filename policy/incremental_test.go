package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/policy/nft"
)

// world is a cluster that changes step by step, as informers see it: a
// changed object is a new one, the others stay the same pointers.
type world struct {
	c      Cluster
	locals []Local
	n      int // names made so far
}

func newWorld(r *rand.Rand) *world {
	c, locals := benchCluster(80, 0, 6)
	w := &world{c: *c, locals: locals}
	for range 30 {
		w.addPolicy(r)
	}
	return w
}

// specs are the shapes of policy the changes draw from: every kind of
// peer, port and direction the compiler knows, including rules whose
// elements depend on every pod (egress to any peer on a named port).
func randomSpec(r *rand.Rand) networkingv1.NetworkPolicySpec {
	app := sel("app", fmt.Sprintf("app-%d", r.IntN(10)))
	tier := sel("tier", fmt.Sprintf("tier-%d", r.IntN(5)))
	team := sel("team", fmt.Sprintf("team-%d", r.IntN(4)))
	http := intstr.FromString("http")
	named := networkingv1.NetworkPolicyPort{Port: &http}
	num := port(tcp, intstr.FromInt32(int32(8000+r.IntN(10))))
	switch r.IntN(10) {
	case 0:
		return ingressOnly(app, from(networkingv1.NetworkPolicyPeer{PodSelector: tier}))
	case 1:
		return ingressOnly(app, networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: tier, NamespaceSelector: team}}, Ports: []networkingv1.NetworkPolicyPort{named}})
	case 2:
		return ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: team}, {PodSelector: tier}, {IPBlock: &networkingv1.IPBlock{CIDR: "10.90.0.0/24", Except: []string{"10.90.0.8/29"}}}}, Ports: []networkingv1.NetworkPolicyPort{num, named}})
	case 3:
		return egressOnly(app, networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{named}})
	case 4:
		return egressOnly(tier, networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel()}}, Ports: []networkingv1.NetworkPolicyPort{named}})
	case 5:
		return ingressOnly(app)
	case 6:
		return networkingv1.NetworkPolicySpec{PodSelector: *app, Ingress: []networkingv1.NetworkPolicyIngressRule{{}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: tier, NamespaceSelector: sel()}}}}}
	case 7:
		return ingressOnly(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"tier-1", "tier-2"}}}},
			from(networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists}}}}))
	case 8:
		return ingressOnly(app, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Bogus"}}}}))
	}
	return egressOnly(sel(), networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: team, PodSelector: app}}, Ports: []networkingv1.NetworkPolicyPort{num}})
}

func (w *world) name() string { w.n++; return fmt.Sprintf("n%d", w.n) }

func (w *world) ns(r *rand.Rand) string { return w.c.Namespaces[r.IntN(len(w.c.Namespaces))].Name }

func (w *world) addPolicy(r *rand.Rand) {
	w.c.Policies = append(slices.Clone(w.c.Policies), pol(w.ns(r), w.name(), randomSpec(r)))
}

// pod replaces pod i by a changed copy.
func (w *world) pod(i int, change func(*Pod)) {
	p := *w.c.Pods[i]
	p.Labels = cloneLabels(p.Labels)
	p.Ports = slices.Clone(p.Ports)
	p.Addrs = slices.Clone(p.Addrs)
	change(&p)
	w.c.Pods = slices.Clone(w.c.Pods)
	w.c.Pods[i] = &p
}

func cloneLabels(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// changes are the kinds of change a node's sync loop sees.
var changes = []struct {
	name  string
	apply func(w *world, r *rand.Rand)
}{
	{"nothing", func(*world, *rand.Rand) {}},
	{"policy added", func(w *world, r *rand.Rand) { w.addPolicy(r) }},
	{"policy deleted", func(w *world, r *rand.Rand) {
		if len(w.c.Policies) > 0 {
			i := r.IntN(len(w.c.Policies))
			w.c.Policies = slices.Delete(slices.Clone(w.c.Policies), i, i+1)
		}
	}},
	{"policy spec changed", func(w *world, r *rand.Rand) {
		if len(w.c.Policies) > 0 {
			i := r.IntN(len(w.c.Policies))
			old := w.c.Policies[i]
			w.c.Policies = slices.Clone(w.c.Policies)
			w.c.Policies[i] = pol(old.Namespace, old.Name, randomSpec(r))
		}
	}},
	{"pod relabelled", func(w *world, r *rand.Rand) {
		w.pod(r.IntN(len(w.c.Pods)), func(p *Pod) {
			p.Labels["app"], p.Labels["tier"] = fmt.Sprintf("app-%d", r.IntN(10)), fmt.Sprintf("tier-%d", r.IntN(5))
		})
	}},
	{"pod readdressed", func(w *world, r *rand.Rand) {
		w.pod(r.IntN(len(w.c.Pods)), func(p *Pod) {
			p.Addrs = []netip.Addr{netip.AddrFrom4([4]byte{10, 92, byte(r.IntN(256)), byte(r.IntN(256))})}
			if r.IntN(4) == 0 {
				p.Addrs = nil // not reported yet
			}
		})
	}},
	{"pod named port changed", func(w *world, r *rand.Rand) {
		w.pod(r.IntN(len(w.c.Pods)), func(p *Pod) {
			p.Ports = []ContainerPort{{Name: "http", Proto: nft.ProtoTCP, Port: uint16(9000 + r.IntN(10))}}
		})
	}},
	{"pod hostNetwork toggled", func(w *world, r *rand.Rand) {
		w.pod(r.IntN(len(w.c.Pods)), func(p *Pod) { p.HostNetwork = !p.HostNetwork })
	}},
	{"pod added", func(w *world, r *rand.Rand) {
		p := &Pod{Namespace: w.ns(r), Name: w.name(), Labels: map[string]string{"app": fmt.Sprintf("app-%d", r.IntN(10)), "tier": fmt.Sprintf("tier-%d", r.IntN(5))},
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 93, byte(w.n >> 8), byte(w.n)})}, Ports: []ContainerPort{{Name: "http", Proto: nft.ProtoTCP, Port: 8080}}}
		w.c.Pods = append(slices.Clone(w.c.Pods), p)
		if r.IntN(2) == 0 {
			w.locals = append(slices.Clone(w.locals), Local{Veth: conf.HostVethName(p.Namespace, p.Name, ""), Addrs: p.Addrs, Namespace: p.Namespace, Name: p.Name})
		}
	}},
	{"pod deleted", func(w *world, r *rand.Rand) {
		i := r.IntN(len(w.c.Pods))
		w.c.Pods = append(slices.Clone(w.c.Pods[:i]), w.c.Pods[i+1:]...)
	}},
	{"local attachment gone", func(w *world, r *rand.Rand) {
		if len(w.locals) > 0 {
			i := r.IntN(len(w.locals))
			w.locals = append(slices.Clone(w.locals[:i]), w.locals[i+1:]...)
		}
	}},
	{"local attachment comes", func(w *world, r *rand.Rand) {
		p := w.c.Pods[r.IntN(len(w.c.Pods))]
		for _, l := range w.locals {
			if l.Namespace == p.Namespace && l.Name == p.Name {
				return
			}
		}
		w.locals = append(slices.Clone(w.locals), Local{Veth: conf.HostVethName(p.Namespace, p.Name, ""), Addrs: p.Addrs, Namespace: p.Namespace, Name: p.Name})
	}},
	{"namespace relabelled", func(w *world, r *rand.Rand) {
		i := r.IntN(len(w.c.Namespaces))
		w.c.Namespaces = slices.Clone(w.c.Namespaces)
		w.c.Namespaces[i] = &Namespace{Name: w.c.Namespaces[i].Name, Labels: map[string]string{"team": fmt.Sprintf("team-%d", r.IntN(4))}}
	}},
	{"namespace added", func(w *world, r *rand.Rand) {
		w.c.Namespaces = append(slices.Clone(w.c.Namespaces), &Namespace{Name: w.name(), Labels: map[string]string{"team": fmt.Sprintf("team-%d", r.IntN(4))}})
	}},
}

// TestCompilerMatchesCompile: a Compiler, its Program and a Renderer kept
// across a sequence of changes give, after each change, exactly the model
// and the table that a fresh Compile, Program and Render of the same
// cluster give. Each kind of change on its own, then all of them mixed.
func TestCompilerMatchesCompile(t *testing.T) {
	run := func(t *testing.T, seed uint64, steps int, pick func(r *rand.Rand) int) {
		r := rand.New(rand.NewPCG(seed, 7))
		w := newWorld(r)
		var x Compiler
		var rd nft.Renderer
		for step := range steps {
			k := pick(r)
			changes[k].apply(w, r)
			c := w.c // the same cluster for both
			inc := x.Compile(&c)
			full := Compile(&c)
			if got, want := summary(inc), summary(full); got != want {
				t.Fatalf("step %d (%s): incremental model differs from a full compile:\n%s", step, changes[k].name, firstDiff(got, want))
			}
			got := rd.Render(x.Program(inc, w.locals, false)).Text()
			want := nft.Render(full.Program(w.locals, false)).Text()
			if got != want {
				t.Fatalf("step %d (%s): incremental table differs from a full render:\n%s", step, changes[k].name, firstDiff(got, want))
			}
		}
	}
	for k, ch := range changes {
		t.Run(ch.name, func(t *testing.T) {
			// The change, with a policy added now and then so that every
			// kind of policy meets it.
			run(t, uint64(k), 15, func(r *rand.Rand) int {
				if r.IntN(3) == 0 {
					return 1
				}
				return k
			})
		})
	}
	t.Run("mixed", func(t *testing.T) {
		run(t, 99, 100, func(r *rand.Rand) int { return r.IntN(len(changes)) })
	})
}

// summary prints a model: every policy, the pods it selects, each rule's
// peers and ports; pod lists sorted (their order carries no meaning).
func summary(m *Model) string {
	var b strings.Builder
	keys := func(ps []*Pod) []string {
		var out []string
		for _, p := range ps {
			out = append(out, fmt.Sprintf("%s%v%v%v", p.Key(), p.Addrs, p.Ports, p.Labels))
		}
		sort.Strings(out)
		return out
	}
	rules := func(rs []Rule) {
		for _, r := range rs {
			fmt.Fprintf(&b, "  rule any=%v key=%q pods=%v blocks=%v peers=%v anyport=%v ports=%v named=%v\n",
				r.AnyPeer, r.PeerKey, keys(r.Pods), r.Blocks, r.Peers, r.AnyPort, r.Ports, r.Named)
		}
	}
	for _, p := range m.Policies {
		fmt.Fprintf(&b, "%s %s in=%v out=%v problems=%q selected=%v\n", p.Key(), p.ID, p.Ingress, p.Egress, p.Problems, keys(p.Selected))
		rules(p.IngressRules)
		b.WriteString(" egress\n")
		rules(p.EgressRules)
	}
	var pods []string
	for key := range m.pods {
		pods = append(pods, key)
	}
	sort.Strings(pods)
	names := func(ps []*Policy) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Key())
		}
		return out
	}
	for _, key := range pods {
		in, out := m.PoliciesFor(key)
		fmt.Fprintf(&b, "pod %s isolated by ingress %v egress %v\n", key, names(in), names(out))
	}
	return b.String()
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got  %s\n want %s", i+1, gl, wl)
		}
	}
	return "(same lines)"
}

// BenchmarkIncremental: one policy created or deleted in a cluster of
// 1,000 pods and 500 policies, as a node's sync loop compiles, programs and
// renders it (what BenchmarkCompile does from scratch).
func BenchmarkIncremental(b *testing.B) {
	c, locals := benchCluster(1000, 500, 20)
	var x Compiler
	var rd nft.Renderer
	rd.Render(x.Program(x.Compile(c), locals, false))
	extra := pol("bench-0", "extra", ingressOnly(sel("app", "app-1")))
	base := c.Policies
	i := 0
	for b.Loop() {
		cc := *c
		if i%2 == 0 {
			cc.Policies = append(slices.Clone(base), extra)
		}
		i++
		rd.Render(x.Program(x.Compile(&cc), locals, false))
	}
}

// TestProgramLocalsChange: a local attachment gone while the policy still
// isolates another local pod: the named-port elements resolved on the gone
// pod go with it (the policy and its fill are the same as before).
func TestProgramLocalsChange(t *testing.T) {
	c := testCluster(pol("x", "p", ingressOnly(sel(), networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("http"))}})))
	both := []Local{
		{Veth: "bri1", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Namespace: "x", Name: "a"},
		{Veth: "bri2", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, Namespace: "x", Name: "b"},
	}
	var x Compiler
	var rd nft.Renderer
	for i, locals := range [][]Local{both, both[1:], both} {
		got := rd.Render(x.Program(x.Compile(c), locals, false)).Text()
		if want := nft.Render(Compile(c).Program(locals, false)).Text(); got != want {
			t.Fatalf("step %d: incremental table differs from a full render:\n%s", i, firstDiff(got, want))
		}
	}
}
