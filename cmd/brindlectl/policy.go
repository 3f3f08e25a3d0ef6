package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/policy"
	"github.com/brindle-net/brindle/policy/enforcer"
	"github.com/brindle-net/brindle/policy/nft"
)

func init() {
	register("", func(*app) *cobra.Command {
		return newGroup("policy", "NetworkPolicy as brindle enforces it: what selects a pod, would a packet pass")
	})
	register("policy", newPolicyShowCmd)
	register("policy", newPolicyTestCmd)
	policiesFor = podPolicies
}

// policyFlags reach the Kubernetes API (and, for drops, a node's brindled).
type policyFlags struct {
	kubeconfig, brindled, nodenameFile string
}

func (p *policyFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&p.kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
}

// model lists Pods, Namespaces and NetworkPolicies and compiles them the
// way every node does (policy.Compile on enforcer.ClusterOf).
func (p *policyFlags) model(ctx context.Context) (*policy.Model, error) {
	cfg, err := kubeConfig(p.kubeconfig)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	pols, err := cs.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list networkpolicies: %w", err)
	}
	return policy.Compile(enforcer.ClusterOf(pods.Items, nss.Items, pols.Items)), nil
}

func kubeConfig(path string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err == nil {
		return cfg, nil
	}
	if in, ierr := rest.InClusterConfig(); ierr == nil {
		return in, nil
	}
	return nil, fmt.Errorf("kubernetes client config (--kubeconfig): %w", err)
}

// policyView is `policy show`'s answer.
type policyView struct {
	Pod      string             `json:"pod"`
	Node     string             `json:"node"`
	Addrs    []string           `json:"addresses"`
	Ingress  []policyRuleView   `json:"ingress"`
	Egress   []policyRuleView   `json:"egress"`
	Isolated map[string]bool    `json:"isolated"`
	Drops    []enforcer.PodDrop `json:"drops,omitempty"`
	DropNote string             `json:"dropNote,omitempty"`
	Problems []string           `json:"problems,omitempty"`
}

type policyRuleView struct {
	Policy string   `json:"policy"`
	Rule   int      `json:"rule"`
	Peers  []string `json:"peers"`
	Pods   int      `json:"peerPods"`
	Ports  []string `json:"ports"`
}

func newPolicyShowCmd(a *app) *cobra.Command {
	var pf policyFlags
	var o outputFlag
	c := &cobra.Command{
		Use:   "show NAMESPACE/POD",
		Short: "the policies selecting a pod, the peers and ports each allows, and its recent drops",
		Long: "show lists, for each direction, the NetworkPolicies that select the pod (a pod no policy selects is open in that direction) " +
			"and what each of their rules allows, compiled as the nodes compile them; and the pod's recent sampled drops, from its node's brindled " +
			"(--brindled, by default this node's when the pod runs here).",
		Args: exactArgs(1, "NAMESPACE/POD"),
		RunE: func(c *cobra.Command, args []string) error {
			ns, name, err := splitPod(c, args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
			defer cancel()
			m, err := pf.model(ctx)
			if err != nil {
				return err
			}
			pod, ok := m.Pod(ns + "/" + name)
			if !ok {
				return fmt.Errorf("pod %s/%s: not found (or it has ended)", ns, name)
			}
			v := showPod(m, pod)
			v.Drops, v.DropNote = pf.drops(ctx, pod)
			return o.print(a.out, v, func(t *table) { v.table(t) })
		},
	}
	pf.add(c)
	c.Flags().StringVar(&pf.brindled, "brindled", "", "the pod's node's brindled health address for its drops (default http://127.0.0.1:9099 when the pod runs on this node)")
	c.Flags().StringVar(&pf.nodenameFile, "nodename-file", conf.DefaultNodenameFile, "this node's name, written by brindled")
	o.add(c, "table")
	return c
}

func showPod(m *policy.Model, pod *policy.Pod) policyView {
	v := policyView{Pod: pod.Key(), Node: pod.Node, Isolated: map[string]bool{}}
	for _, a := range pod.Addrs {
		v.Addrs = append(v.Addrs, a.String())
	}
	in, out := m.PoliciesFor(pod.Key())
	v.Isolated["ingress"], v.Isolated["egress"] = len(in) > 0, len(out) > 0
	rules := func(pols []*policy.Policy, ingress bool) []policyRuleView {
		var rv []policyRuleView
		for _, p := range pols {
			v.Problems = append(v.Problems, p.Problems...)
			rs := p.EgressRules
			if ingress {
				rs = p.IngressRules
			}
			if len(rs) == 0 {
				rv = append(rv, policyRuleView{Policy: p.Key(), Rule: -1})
			}
			for k, r := range rs {
				x := policyRuleView{Policy: p.Key(), Rule: k, Peers: r.Peers, Pods: len(r.Pods), Ports: portsText(r)}
				if r.AnyPeer {
					x.Peers = []string{"any"}
				}
				rv = append(rv, x)
			}
		}
		return rv
	}
	v.Ingress, v.Egress = rules(in, true), rules(out, false)
	return v
}

func portsText(r policy.Rule) []string {
	if r.AnyPort {
		return []string{"any"}
	}
	var out []string
	for _, p := range r.Ports {
		s := fmt.Sprintf("%d/%s", p.First, protoText(p.Proto))
		switch {
		case p.First == 0 && p.Last == 65535:
			s = "all/" + protoText(p.Proto)
		case p.Last != p.First:
			s = fmt.Sprintf("%d-%d/%s", p.First, p.Last, protoText(p.Proto))
		}
		out = append(out, s)
	}
	for _, n := range r.Named {
		out = append(out, n.Name+"/"+protoText(n.Proto))
	}
	return out
}

func protoText(p uint8) string { return strings.ToUpper(nft.ProtoName(p)) }

func (v policyView) table(t *table) {
	t.header("DIRECTION", "POLICY", "RULE", "PEERS", "PORTS", "|", "PEER PODS")
	for _, dir := range []struct {
		name  string
		rules []policyRuleView
	}{{"ingress", v.Ingress}, {"egress", v.Egress}} {
		if !v.Isolated[dir.name] {
			t.row(dir.name, "(none: open)", "", "", "", "")
			continue
		}
		for _, r := range dir.rules {
			if r.Rule < 0 {
				t.row(dir.name, r.Policy, "-", "nothing (denies all)", "", "")
				continue
			}
			t.row(dir.name, r.Policy, strconv.Itoa(r.Rule), strings.Join(r.Peers, "; "), strings.Join(r.Ports, ","), strconv.Itoa(r.Pods))
		}
	}
	t.flush()
	fmt.Fprintf(t.tw, "\npod %s on %s, addresses %s\n", v.Pod, v.Node, strings.Join(v.Addrs, ", "))
	for _, p := range v.Problems {
		fmt.Fprintf(t.tw, "problem: %s\n", p)
	}
	if v.DropNote != "" {
		fmt.Fprintf(t.tw, "drops: %s\n", v.DropNote)
	} else {
		fmt.Fprintf(t.tw, "recent drops (sampled): %d\n", len(v.Drops))
		for _, d := range v.Drops {
			fmt.Fprintf(t.tw, "  %s\n", d.Drop)
		}
	}
}

// drops asks the pod's node's brindled for the pod's recent drops.
func (p *policyFlags) drops(ctx context.Context, pod *policy.Pod) ([]enforcer.PodDrop, string) {
	url := p.brindled
	if url == "" {
		b, _ := os.ReadFile(p.nodenameFile)
		if strings.TrimSpace(string(b)) != pod.Node {
			return nil, fmt.Sprintf("the pod runs on %s: run this there, or give --brindled http://ADDRESS:9099", pod.Node)
		}
		url = "http://127.0.0.1:9099"
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(url, "/")+"/policy/drops?pod="+pod.Key(), nil)
	res, err := (&http.Client{Timeout: 3 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Sprintf("brindled at %s: %v", url, err)
	}
	defer res.Body.Close()
	var out []enforcer.PodDrop
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return nil, fmt.Sprintf("brindled at %s: %v", url, err)
	}
	return out, ""
}

// testView is `policy test`'s answer.
type testView struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Port    string `json:"port"`
	Allowed bool   `json:"allowed"`
	Egress  string `json:"egress"`
	Ingress string `json:"ingress"`
}

func newPolicyTestCmd(a *app) *cobra.Command {
	var pf policyFlags
	var o outputFlag
	c := &cobra.Command{
		Use:   "test FROM TO PORT/PROTO",
		Short: "would a new connection from FROM to TO on PORT/PROTO be allowed, and by which policy",
		Long: "FROM and TO are NAMESPACE/POD or an IP address; PROTO is TCP, UDP or SCTP (default TCP). The answer comes from the " +
			"model the nodes compile into table inet brindle: both the source pod's egress and the destination pod's ingress must allow it. " +
			"Exit status 0 when allowed, 1 when denied.",
		Args: exactArgs(3, "FROM TO PORT/PROTO"),
		RunE: func(c *cobra.Command, args []string) error {
			port, proto, err := parsePortProto(args[2])
			if err != nil {
				return usagef(c, "%v", err)
			}
			ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
			defer cancel()
			m, err := pf.model(ctx)
			if err != nil {
				return err
			}
			src, err := endpointAddr(m, args[0])
			if err != nil {
				return usagef(c, "FROM: %v", err)
			}
			dst, err := endpointAddr(m, args[1])
			if err != nil {
				return usagef(c, "TO: %v", err)
			}
			v := m.Evaluate(src, dst, proto, port)
			tv := testView{From: args[0], To: args[1], Port: args[2], Allowed: v.Allowed, Egress: v.Egress.String(), Ingress: v.Ingress.String()}
			if err := o.print(a.out, tv, func(t *table) {
				verdict := "DENIED"
				if tv.Allowed {
					verdict = "ALLOWED"
				}
				fmt.Fprintf(t.tw, "%s -> %s %s: %s\n  egress (source):       %s\n  ingress (destination): %s\n", tv.From, tv.To, tv.Port, verdict, tv.Egress, tv.Ingress)
			}); err != nil {
				return err
			}
			if !v.Allowed {
				return errRanInCluster{exitFailure}
			}
			return nil
		},
	}
	pf.add(c)
	o.add(c, "table", "table", "json", "yaml")
	return c
}

func parsePortProto(s string) (uint16, uint8, error) {
	ps, protoS, _ := strings.Cut(s, "/")
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("port %q: want a number 0-65535, as PORT or PORT/PROTO", ps)
	}
	switch strings.ToUpper(protoS) {
	case "", "TCP":
		return uint16(port), nft.ProtoTCP, nil
	case "UDP":
		return uint16(port), nft.ProtoUDP, nil
	case "SCTP":
		return uint16(port), nft.ProtoSCTP, nil
	}
	return 0, 0, fmt.Errorf("protocol %q: want TCP, UDP or SCTP", protoS)
}

// endpointAddr is a pod's (first) address, or the address given.
func endpointAddr(m *policy.Model, s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), nil
	}
	if !strings.Contains(s, "/") {
		return netip.Addr{}, fmt.Errorf("%q: want NAMESPACE/POD or an IP address", s)
	}
	p, ok := m.Pod(s)
	if !ok {
		return netip.Addr{}, fmt.Errorf("pod %s: not found (or it has ended)", s)
	}
	if len(p.Addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("pod %s has no address yet", s)
	}
	return p.Addrs[0], nil
}

// podPolicies feeds `brindlectl pod`'s view.
func podPolicies(ctx context.Context, _ *env, namespace, name string) ([]PodPolicy, error) {
	m, err := (&policyFlags{}).model(ctx)
	if err != nil {
		return nil, err
	}
	in, out := m.PoliciesFor(namespace + "/" + name)
	index := map[string]int{}
	var list []PodPolicy
	add := func(p *policy.Policy, ingress bool) {
		i, ok := index[p.Key()]
		if !ok {
			i = len(list)
			index[p.Key()] = i
			list = append(list, PodPolicy{Namespace: p.Namespace, Name: p.Name, Kind: "NetworkPolicy"})
		}
		if ingress {
			list[i].Ingress = true
		} else {
			list[i].Egress = true
		}
	}
	for _, p := range in {
		add(p, true)
	}
	for _, p := range out {
		add(p, false)
	}
	return list, nil
}
