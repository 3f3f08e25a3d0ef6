package enforcer_test

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/brindle-net/brindle/internal/kubetest"
)

func policy(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func selector(kv ...string) metav1.LabelSelector {
	s := metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

// TestPolicyLifecycle: NetworkPolicies created, changed and deleted in the
// real apiserver are enforced on the node — pod selector, named port,
// namespace selector, a label change, deletion — each within a second.
func TestPolicyLifecycle(t *testing.T) {
	s := apiserver(t)
	cs := s.Client(t)
	ctx := t.Context()
	namespace(t, cs, "life-x", map[string]string{"team": "x"})
	namespace(t, cs, "life-y", map[string]string{"team": "y"})
	n := newNode(t, cs, "10.77.1.0/24")
	a := n.createPod("life-x", "a", map[string]string{"app": "a"})
	b := n.createPod("life-x", "b", map[string]string{"app": "b"})
	c := n.createPod("life-y", "c", map[string]string{"app": "c"})
	for _, p := range []*pod{a, b, c} {
		n.attach(p)
	}
	expect(t, b, a, true, settle)
	expect(t, c, a, true, settle)

	pols := cs.NetworkingV1().NetworkPolicies("life-x")
	tcp := intstrPort("http")
	p := policy("life-x", "a-from-b", networkingv1.NetworkPolicySpec{PodSelector: selector("app", "a"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: ptr(selector("app", "b"))}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: &tcp}},
		}}})
	if _, err := pols.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	took := expect(t, c, a, false, settle)
	expect(t, b, a, true, settle)
	t.Logf("policy created -> enforced in %s", took)

	p.Spec.Ingress[0].From = append(p.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{NamespaceSelector: ptr(selector("team", "y"))})
	if _, err := pols.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, c, a, true, settle)

	// A label change: b is no longer app=b, so no longer allowed.
	po, _ := cs.CoreV1().Pods("life-x").Get(ctx, "b", metav1.GetOptions{})
	po.Labels["app"] = "z"
	if _, err := cs.CoreV1().Pods("life-x").Update(ctx, po, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, b, a, false, settle)
	expect(t, a, b, true, settle)

	if err := pols.Delete(ctx, "a-from-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, b, a, true, settle)
	if st := n.e.Status(); !st.Synced || st.Error != "" {
		t.Errorf("status %+v", st)
	}
	if why := n.e.Ready(); len(why) != 0 {
		t.Errorf("not ready: %v", why)
	}
	for _, d := range n.e.Drops("") {
		t.Logf("drop: %s pod=%q", d.Drop, d.Pod)
	}
	drops := n.e.Drops("life-x/a")
	if len(drops) == 0 || drops[0].Kind != "ingress" || drops[0].Port != 80 {
		t.Errorf("sampled drops of life-x/a: %+v, want ingress drops to port 80", drops)
	}
}

// TestFirstPacket: a pod that policy isolates is never reachable by what
// the policy denies, not even by the first packet after ADD returns; and a
// pod whose Pod the node does not know yet stays in default deny, ADD
// waiting for it (up to the plugin's bound) and returning.
func TestFirstPacket(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIP: needs nft")
	}
	s := apiserver(t)
	cs := s.Client(t)
	ctx := t.Context()
	namespace(t, cs, "first", nil)
	n := newNode(t, cs, "10.77.2.0/24")
	client := n.createPod("first", "client", map[string]string{"app": "client"})
	n.attach(client)
	deny := policy("first", "deny-to-server", networkingv1.NetworkPolicySpec{PodSelector: selector("app", "server"),
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}})
	if _, err := cs.NetworkingV1().NetworkPolicies("first").Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitPolicy("first", "deny-to-server") // the policy is known before the pod comes
	for i := range 5 {
		srv := n.createPod("first", "server-"+string(rune('a'+i)), map[string]string{"app": "server"})
		n.attach(srv) // returns once the table holds the endpoint
		if reach(client, srv) {
			t.Fatalf("%s reachable right after ADD, though a policy denies all ingress to it", srv.name)
		}
	}

	// No Pod object: the attachment is never admitted.
	ghost := &pod{ns: "first", name: "ghost"}
	start := time.Now()
	n.attachNoPod(ghost)
	waited := time.Since(start)
	if waited < 4*time.Second {
		t.Errorf("ADD of a pod the node does not know returned after %s, want it to wait for brindled (5s)", waited)
	}
	if reach(client, ghost) || reach(ghost, client) {
		t.Fatal("a pod unknown to the API is reachable or can send")
	}
	t.Logf("ADD of an unknown pod waited %s and left it in default deny", waited)
}

// TestConntrackFlush: a connection that a policy allowed is cut when a new
// policy denies it (its conntrack entry is deleted), and when the policy
// that allowed it is deleted while another still isolates the pod; it
// survives when the flush is off — the behaviour chosen and documented in docs/policy.md.
func TestConntrackFlush(t *testing.T) {
	s := apiserver(t)
	cs := s.Client(t)
	for _, flush := range []bool{true, false} {
		ns := map[bool]string{true: "ct-flush", false: "ct-keep"}[flush]
		namespace(t, cs, ns, nil)
		n := newNode(t, cs, map[bool]string{true: "10.77.3.0/24", false: "10.77.6.0/24"}[flush])
		if !flush {
			n.halt()
			n.cfg.FlushConntrack = false
			n.start()
		}
		a := n.createPod(ns, "a", map[string]string{"app": "a"})
		b := n.createPod(ns, "b", map[string]string{"app": "b"})
		n.attach(a)
		n.attach(b)
		conn, err := dial(b, a)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if !roundTrip(conn) {
			t.Fatal("the connection does not echo before any policy")
		}
		deny := policy(ns, "deny", networkingv1.NetworkPolicySpec{PodSelector: selector("app", "a"),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}})
		if _, err := cs.NetworkingV1().NetworkPolicies(ns).Create(t.Context(), deny, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		expect(t, b, a, false, settle)
		if flush {
			waitCut(t, conn, "the policy that denies it was created")

			// Removal: a policy that allowed b is deleted while another
			// still isolates a.
			allow := policy(ns, "allow-b", networkingv1.NetworkPolicySpec{PodSelector: selector("app", "a"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: ptr(selector("app", "b"))}}}}})
			if _, err := cs.NetworkingV1().NetworkPolicies(ns).Create(t.Context(), allow, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			expect(t, b, a, true, settle)
			conn2, err := dial(b, a)
			if err != nil {
				t.Fatal(err)
			}
			defer conn2.Close()
			if !roundTrip(conn2) {
				t.Fatal("the connection the allow policy allows does not echo")
			}
			if err := cs.NetworkingV1().NetworkPolicies(ns).Delete(t.Context(), "allow-b", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			expect(t, b, a, false, settle)
			waitCut(t, conn2, "the policy that allowed it was deleted")
			continue
		}
		// Without the flush, nothing cuts it: it still echoes after several
		// of the flush's periods (200 ms).
		time.Sleep(time.Second)
		if !roundTrip(conn) {
			t.Error("with the flush off, the established connection was cut anyway")
		}
	}
}

// TestRestartAndFlush: the table outlives its enforcer (brindled's
// restart): a policy stays enforced while none runs, and the new one
// replaces the table only once its caches have synced. A table deleted
// behind its back (nft flush ruleset in the node) is back within a second.
func TestRestartAndFlush(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIP: needs nft")
	}
	s := apiserver(t)
	cs := s.Client(t)
	ctx := t.Context()
	namespace(t, cs, "rs", nil)
	n := newNode(t, cs, "10.77.4.0/24")
	a := n.createPod("rs", "a", map[string]string{"app": "a"})
	b := n.createPod("rs", "b", map[string]string{"app": "b"})
	c := n.createPod("rs", "c", map[string]string{"app": "c"})
	for _, p := range []*pod{a, b, c} {
		n.attach(p)
	}
	allow := policy("rs", "a-from-b", networkingv1.NetworkPolicySpec{PodSelector: selector("app", "a"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: ptr(selector("app", "b"))}}}}})
	if _, err := cs.NetworkingV1().NetworkPolicies("rs").Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, c, a, false, settle)

	n.halt()
	for range 10 {
		if reach(c, a) || !reachable(b, a) {
			t.Fatal("with the enforcer stopped, the table no longer enforces the policy")
		}
	}
	n.start()
	for i := range 20 {
		if reach(c, a) || !reachable(b, a) {
			t.Fatalf("during the enforcer's restart (probe %d), the policy was not enforced", i)
		}
	}

	out, err := exec.Command("nsenter", "--net="+n.host.NS.Path(), "nft", "flush", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft flush ruleset: %v %s", err, out)
	}
	start := time.Now()
	for {
		out, err := exec.Command("nsenter", "--net="+n.host.NS.Path(), "nft", "list", "table", "inet", "brindle").CombinedOutput()
		if err == nil && strings.Contains(string(out), "pi_") {
			break
		}
		if time.Since(start) > settle {
			t.Fatalf("table inet brindle not back %s after nft flush ruleset", settle)
		}
		time.Sleep(10 * time.Millisecond)
	}
	restored := time.Since(start)
	expect(t, c, a, false, settle)
	expect(t, b, a, true, settle)
	t.Logf("table restored %s after nft flush ruleset", restored)
}

// TestAPIServerOutage: with the apiserver gone, the last rules stay in
// force and keep being enforced. It stops its apiserver: one of its own.
func TestAPIServerOutage(t *testing.T) {
	apiserver(t) // skips without the binaries
	s := kubetest.Start(t)
	cs := s.Client(t)
	ctx := t.Context()
	namespace(t, cs, "out", nil)
	n := newNode(t, cs, "10.77.5.0/24")
	a := n.createPod("out", "a", map[string]string{"app": "a"})
	b := n.createPod("out", "b", map[string]string{"app": "b"})
	n.attach(a)
	n.attach(b)
	deny := policy("out", "deny", networkingv1.NetworkPolicySpec{PodSelector: selector("app", "a"),
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}})
	if _, err := cs.NetworkingV1().NetworkPolicies("out").Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, b, a, false, settle)
	s.Stop()
	n.e.Trigger()
	for range 3 {
		time.Sleep(time.Second)
		if reach(b, a) || !reachable(a, b) {
			t.Fatal("during the apiserver outage the rules changed")
		}
		n.e.Trigger()
	}
	if st := n.e.Status(); st.Error != "" {
		t.Errorf("sync error during the outage: %s", st.Error)
	}
}

// waitCut waits for an established connection to stop echoing: the flush
// runs after the sync, off its path.
func waitCut(t *testing.T, conn net.Conn, after string) {
	t.Helper()
	start, echoed := time.Now(), 0
	for roundTrip(conn) {
		if time.Since(start) > settle {
			t.Fatalf("an established connection still echoes %s after %s", settle, after)
		}
		echoed++
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("established connection cut after %s (%d round trips still echoed before)", after, echoed)
}

func roundTrip(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 4)
	_, err := c.Read(buf)
	return err == nil && string(buf) == "ping"
}

func intstrPort(name string) intstr.IntOrString { return intstr.FromString(name) }

func ptr[T any](v T) *T { return &v }
