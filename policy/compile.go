package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/brindle-net/brindle/policy/nft"
)

// Compile builds the model of c. Policies are evaluated as the API
// defines them: a pod selected by no policy of a direction is open in that
// direction; several policies selecting a pod allow the union of what each
// allows; a policy with policyTypes Ingress (or Egress) and no rules of
// that direction denies it all. It is a fresh Compiler's first compile:
// a sync loop keeps one Compiler instead, which does again only what
// changed.
func Compile(c *Cluster) *Model { return new(Compiler).Compile(c) }

type compiler struct {
	byNS     map[string][]*Pod
	nsLabels map[string]labels.Set
	nsNames  []string
	peers    map[string][]*Pod // by peerKey
	// sels says, per peerKey, which pods the selection may hold: a
	// changed pod that fits invalidates it (Compiler).
	sels map[string]peerSel
	// used and sel record the policy being compiled: the peer selections
	// its rules use and its pod selector.
	used []string
	sel  matcher
}

// peerSel is what a peer selection looks at: pods of these namespaces
// that podSel matches.
type peerSel struct {
	namespaces map[string]bool
	byNSSel    bool // chosen by a namespace selector (changes with namespaces)
	podSel     matcher
}

// peerKey identifies a pod/namespace selector peer of a policy in ns.
func peerKey(ns string, peer *networkingv1.NetworkPolicyPeer) string {
	b, _ := json.Marshal(peer)
	if peer.NamespaceSelector == nil {
		return ns + "\x00" + string(b)
	}
	return string(b)
}

func (cc *compiler) policy(np *networkingv1.NetworkPolicy) *Policy {
	p := &Policy{Namespace: np.Namespace, Name: np.Name, ID: PolicyID(np.Namespace, np.Name), key: np.Namespace + "/" + np.Name}
	spec := &np.Spec
	if len(spec.PolicyTypes) == 0 {
		p.Ingress, p.Egress = true, len(spec.Egress) > 0
	}
	for _, t := range spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			p.Ingress = true
		case networkingv1.PolicyTypeEgress:
			p.Egress = true
		}
	}
	sel, err := selector(&spec.PodSelector)
	cc.sel = sel
	if err != nil {
		p.Problems = append(p.Problems, fmt.Sprintf("spec.podSelector: %v (selects no pod)", err))
	}
	if sel != nil {
		for _, pod := range cc.byNS[np.Namespace] {
			if matches(sel, pod.Labels) {
				p.Selected = append(p.Selected, pod)
			}
		}
	}
	if p.Ingress {
		p.IngressRules = []Rule{}
		for i, r := range spec.Ingress {
			p.IngressRules = append(p.IngressRules, cc.rule(p, fmt.Sprintf("spec.ingress[%d]", i), np.Namespace, r.From, r.Ports))
		}
	}
	if p.Egress {
		p.EgressRules = []Rule{}
		for i, r := range spec.Egress {
			p.EgressRules = append(p.EgressRules, cc.rule(p, fmt.Sprintf("spec.egress[%d]", i), np.Namespace, r.To, r.Ports))
		}
	}
	return p
}

func (cc *compiler) rule(p *Policy, field, ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) Rule {
	r := Rule{AnyPeer: len(peers) == 0, AnyPort: len(ports) == 0}
	seen := map[*Pod]bool{}
	for i, peer := range peers {
		f := fmt.Sprintf("%s.peers[%d]", field, i)
		if b := peer.IPBlock; b != nil {
			r.Peers = append(r.Peers, describeBlock(b))
			blocks, err := ipBlock(b)
			if err != nil {
				p.Problems = append(p.Problems, fmt.Sprintf("%s.ipBlock: %v (matches nothing)", f, err))
			}
			r.Blocks = append(r.Blocks, blocks...)
			continue
		}
		r.Peers = append(r.Peers, describePeer(ns, &peer))
		namespaces := []string{ns}
		if peer.NamespaceSelector != nil {
			nsSel, err := selector(peer.NamespaceSelector)
			if err != nil {
				p.Problems = append(p.Problems, fmt.Sprintf("%s.namespaceSelector: %v (matches nothing)", f, err))
				continue
			}
			namespaces = namespaces[:0]
			for _, n := range cc.nsNames {
				if matches(nsSel, cc.nsLabels[n]) {
					namespaces = append(namespaces, n)
				}
			}
		}
		var podSel matcher = labels.Everything()
		if peer.PodSelector != nil {
			s, err := selector(peer.PodSelector)
			if err != nil {
				p.Problems = append(p.Problems, fmt.Sprintf("%s.podSelector: %v (matches nothing)", f, err))
				continue
			}
			podSel = s
		}
		// Peers written alike (all pods of all namespaces, a team's
		// namespaces…) are selected once per compile and shared.
		key := peerKey(ns, &peer)
		cc.used = append(cc.used, key)
		pods, ok := cc.peers[key]
		if !ok {
			in := make(map[string]bool, len(namespaces))
			for _, n := range namespaces {
				in[n] = true
				for _, pod := range cc.byNS[n] {
					if len(pod.Addrs) > 0 && matches(podSel, pod.Labels) {
						pods = append(pods, pod)
					}
				}
			}
			cc.peers[key] = pods
			cc.sels[key] = peerSel{namespaces: in, byNSSel: peer.NamespaceSelector != nil, podSel: podSel}
		}
		if len(peers) == 1 {
			r.Pods, r.PeerKey = pods, key
			break
		}
		for _, pod := range pods {
			if !seen[pod] {
				seen[pod] = true
				r.Pods = append(r.Pods, pod)
			}
		}
	}
	for i, port := range ports {
		proto, err := protoNumber(port.Protocol)
		if err != nil {
			p.Problems = append(p.Problems, fmt.Sprintf("%s.ports[%d].protocol: %v (matches nothing)", field, i, err))
			continue
		}
		switch {
		case port.Port == nil:
			r.Ports = append(r.Ports, nft.PortRange{Proto: proto, First: 0, Last: 65535})
		case port.Port.Type == 0: // a number
			first := port.Port.IntVal
			last := first
			if port.EndPort != nil {
				last = *port.EndPort
			}
			if first < 0 || first > 65535 || last < first || last > 65535 {
				p.Problems = append(p.Problems, fmt.Sprintf("%s.ports[%d]: port %d endPort %d out of range (matches nothing)", field, i, first, last))
				continue
			}
			r.Ports = append(r.Ports, nft.PortRange{Proto: proto, First: uint16(first), Last: uint16(last)})
		default:
			r.Named = append(r.Named, NamedRef{Proto: proto, Name: port.Port.StrVal})
		}
	}
	return r
}

// selector converts a label selector; nil (absent) is handled by callers.
// A selector of matchLabels only (most of them) is matched directly, which
// spares building and validating a labels.Selector on every compile.
func selector(s *metav1.LabelSelector) (matcher, error) {
	if len(s.MatchExpressions) == 0 {
		return mapMatcher(s.MatchLabels), nil
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return nil, err
	}
	return sel, nil
}

// matcher is a compiled label selector.
type matcher interface{ Matches(labels.Labels) bool }

// mapMatcher matches labels that include all of its own.
type mapMatcher map[string]string

// Matches implements matcher.
func (m mapMatcher) Matches(l labels.Labels) bool {
	if set, ok := l.(labels.Set); ok {
		return m.matchMap(set)
	}
	for k, v := range m {
		if !l.Has(k) || l.Get(k) != v {
			return false
		}
	}
	return true
}

func (m mapMatcher) matchMap(l map[string]string) bool {
	for k, v := range m {
		if got, ok := l[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// matches applies a matcher to a pod's or namespace's labels, without
// the interface conversion for the common matchLabels case.
func matches(m matcher, l map[string]string) bool {
	if mm, ok := m.(mapMatcher); ok {
		return mm.matchMap(l)
	}
	return m.Matches(labels.Set(l))
}

func protoNumber(p *corev1.Protocol) (uint8, error) {
	if p == nil {
		return nft.ProtoTCP, nil
	}
	switch *p {
	case corev1.ProtocolTCP:
		return nft.ProtoTCP, nil
	case corev1.ProtocolUDP:
		return nft.ProtoUDP, nil
	case corev1.ProtocolSCTP:
		return nft.ProtoSCTP, nil
	}
	return 0, fmt.Errorf("%q is not TCP, UDP or SCTP", *p)
}

// ipBlock is the block's CIDR less its excepts.
func ipBlock(b *networkingv1.IPBlock) ([]nft.Range, error) {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("cidr %q: %w", b.CIDR, err)
	}
	var holes []nft.Range
	for _, e := range b.Except {
		ep, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("except %q: %w", e, err)
		}
		holes = append(holes, nft.PrefixRange(ep))
	}
	return nft.Subtract(nft.PrefixRange(p), holes), nil
}

func describeBlock(b *networkingv1.IPBlock) string {
	s := "ipBlock " + b.CIDR
	if len(b.Except) > 0 {
		s += fmt.Sprintf(" except %v", b.Except)
	}
	return s
}

func describePeer(ns string, peer *networkingv1.NetworkPolicyPeer) string {
	pods := "all pods"
	if peer.PodSelector != nil && !empty(peer.PodSelector) {
		pods = "pods " + metav1.FormatLabelSelector(peer.PodSelector)
	}
	switch {
	case peer.NamespaceSelector == nil:
		return pods + " in namespace " + ns
	case empty(peer.NamespaceSelector):
		return pods + " in all namespaces"
	}
	return pods + " in namespaces " + metav1.FormatLabelSelector(peer.NamespaceSelector)
}

func empty(s *metav1.LabelSelector) bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}
