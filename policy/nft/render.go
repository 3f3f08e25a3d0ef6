package nft

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Chain priorities: anti-spoofing before conntrack (raw, -300), so that a
// spoofed packet never matches an established flow; policy just before
// the filter priority (0) where iptables' chains run.
const (
	PrioritySpoof   = -300
	PriorityEgress  = -10
	PriorityIngress = -5
)

// Counter names (`nft list counters table inet brindle`).
const (
	CounterSpoofed  = "spoofed"        // from a host veth, not from its pod's addresses
	CounterNotReady = "not_ready"      // to a pod whose endpoint is not in the table yet
	CounterTunnel   = "foreign_tunnel" // VXLAN/IPIP from a host that is not a node
)

// Log prefixes of sampled drops (nflog); the reader tells them apart.
const (
	LogSpoof   = "brindle:spoof:"
	LogIngress = "brindle:ingress:"
	LogEgress  = "brindle:egress:"
	LogTunnel  = "brindle:tunnel:"
)

// slotStep is the granularity of the dispatch maps: a pod selected by n
// policies in a direction needs n of them; the table has a multiple of
// slotStep, so that only a rare pod with more policies than ever rewrites
// the dispatch chain.
const slotStep = 4

func jumpTo(chain string) *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

// PolicyChain names a policy's chain for one direction.
func PolicyChain(id string, ingress bool) string {
	if ingress {
		return "pi_" + id
	}
	return "pe_" + id
}

func ruleSet(id string, ingress bool, k int, what string) string {
	d := "_e"
	if ingress {
		d = "_i"
	}
	return "p" + id + d + strconv.Itoa(k) + "_" + what
}

// Render computes the table for p. Pure: the same Program gives the same
// Ruleset.
func Render(p *Program) *Ruleset {
	rs := &Ruleset{Sets: map[string]*Set{}, Chains: map[string]*Chain{},
		Counters: []string{CounterNotReady, CounterSpoofed, CounterTunnel}}
	if p.VXLANPort == 0 {
		p.VXLANPort = 4789
	}
	if p.VXLANVNI == 0 {
		p.VXLANVNI = 4096
	}
	if p.LogRate == 0 {
		p.LogRate = 10
	}
	set := func(name string, k SetKind, es []Elem) {
		rs.Sets[name] = &Set{Name: name, Kind: k, Elems: elements(es)}
	}
	chain := func(c *Chain) { rs.Chains[c.Name] = c }

	// Endpoints, their addresses, isolation and dispatch.
	var eps4, eps6, self4, self6, niso4, niso6, eiso4, eiso6 []Elem
	n := p.Slots()
	ingSlots, egrSlots := n[0], n[1]
	// Dispatch only to chains the table has (a pod naming a policy that
	// is not there stays isolated: a deny, never an open door).
	has := map[string]bool{}
	for _, pol := range p.Policies {
		has[PolicyChain(pol.ID, true)] = pol.Ingress != nil
		has[PolicyChain(pol.ID, false)] = pol.Egress != nil
	}
	slots := map[string][]Elem{}
	for _, e := range p.Endpoints {
		for _, a := range e.Addrs {
			v6 := a.Is6()
			fam := map[bool]string{false: "4", true: "6"}[v6]
			if v6 {
				eps6, self6 = append(eps6, endpointElem(e.Veth, a)), append(self6, pairElem(a, a))
			} else {
				eps4, self4 = append(eps4, endpointElem(e.Veth, a)), append(self4, pairElem(a, a))
			}
			if len(e.Ingress) > 0 {
				if v6 {
					niso6 = append(niso6, addrElem(a))
				} else {
					niso4 = append(niso4, addrElem(a))
				}
			}
			if len(e.Egress) > 0 {
				if v6 {
					eiso6 = append(eiso6, addrElem(a))
				} else {
					eiso4 = append(eiso4, addrElem(a))
				}
			}
			for i, id := range e.Ingress {
				if m := fmt.Sprintf("ing%s_%d", fam, i); has[PolicyChain(id, true)] {
					slots[m] = append(slots[m], vmapElem(a, PolicyChain(id, true)))
				}
			}
			for i, id := range e.Egress {
				if m := fmt.Sprintf("egr%s_%d", fam, i); has[PolicyChain(id, false)] {
					slots[m] = append(slots[m], vmapElem(a, PolicyChain(id, false)))
				}
			}
		}
	}
	set("eps4", KindEndpoint4, eps4)
	set("eps6", KindEndpoint6, eps6)
	set("self4", KindPair4, self4)
	set("self6", KindPair6, self6)
	set("ing_iso4", KindCounted4, niso4)
	set("ing_iso6", KindCounted6, niso6)
	set("egr_iso4", KindCounted4, eiso4)
	set("egr_iso6", KindCounted6, eiso6)
	for i := range ingSlots {
		set(fmt.Sprintf("ing4_%d", i), KindVmap4, slots[fmt.Sprintf("ing4_%d", i)])
		set(fmt.Sprintf("ing6_%d", i), KindVmap6, slots[fmt.Sprintf("ing6_%d", i)])
	}
	for i := range egrSlots {
		set(fmt.Sprintf("egr4_%d", i), KindVmap4, slots[fmt.Sprintf("egr4_%d", i)])
		set(fmt.Sprintf("egr6_%d", i), KindVmap6, slots[fmt.Sprintf("egr6_%d", i)])
	}
	var nodes4, nodes6 []Elem
	for _, a := range p.Nodes {
		if a.Is4() {
			nodes4 = append(nodes4, addrElem(a))
		} else {
			nodes6 = append(nodes6, addrElem(a))
		}
	}
	set("nodes4", KindAddr4, nodes4)
	set("nodes6", KindAddr6, nodes6)

	chain(prerouting())
	chain(antispoof(p))
	chain(underlay(p))
	chain(inputChain(p))
	chain(baseForward("forward_egress", PriorityEgress, true))
	chain(baseForward("forward_ingress", PriorityIngress, false))
	chain(dispatch(p, "egress", false, egrSlots))
	chain(dispatch(p, "ingress", true, ingSlots))
	for name, ranges := range p.PeerSets {
		v4, v6 := SplitFamilies(ranges)
		set(name+"4", KindRange4, rangeElems(v4))
		set(name+"6", KindRange6, rangeElems(v6))
	}
	for _, pol := range p.Policies {
		if pol.Ingress != nil {
			chain(policyChain(rs, pol, true))
		}
		if pol.Egress != nil {
			chain(policyChain(rs, pol, false))
		}
	}
	return rs
}

func roundUp(n int) int { return (n + slotStep - 1) / slotStep * slotStep }

func base(name string, hook *nftables.ChainHook, prio int32, rules ...*rule) *Chain {
	return &Chain{Name: name, Hook: hook, Priority: prio, Rules: rules}
}

func prerouting() *Chain {
	return base("prerouting", nftables.ChainHookPrerouting, PrioritySpoof,
		newRule().ifname(true, true, VethPattern).jump("antispoof"))
}

// antispoof: a packet from a host veth carries its pod's address, or is
// IPv6 neighbour discovery (link-local or unspecified source, ICMPv6).
func antispoof(p *Program) *Chain {
	c := &Chain{Name: "antispoof", Rules: []*rule{
		newRule().nfproto(false).lookup(false, "eps4", false, false, fIIFName, fSaddr).verdict(expr.VerdictReturn),
		newRule().nfproto(true).lookup(true, "eps6", false, false, fIIFName, fSaddr).verdict(expr.VerdictReturn),
		newRule().nfproto(true).v6SaddrPrefix("ip6 saddr fe80::/10", []byte{0xfe, 0x80}, 10).l4proto(58, "ipv6-icmp").verdict(expr.VerdictReturn),
		newRule().nfproto(true).v6SaddrPrefix("ip6 saddr ::", nil, 128).l4proto(58, "ipv6-icmp").verdict(expr.VerdictReturn),
	}}
	if p.LogGroup != 0 {
		c.Rules = append(c.Rules, newRule().logSampled(p.LogRate, p.LogGroup, LogSpoof))
	}
	c.Rules = append(c.Rules, newRule().counterObj(CounterSpoofed).verdict(expr.VerdictDrop))
	return c
}

// underlay drops tunnel packets whose outer source is not a node.
func underlay(p *Program) *Chain {
	c := &Chain{Name: "underlay", Rules: []*rule{
		newRule().nfproto(false).lookup(false, "nodes4", false, false, fSaddr).verdict(expr.VerdictReturn),
		newRule().nfproto(true).lookup(true, "nodes6", false, false, fSaddr).verdict(expr.VerdictReturn),
	}}
	if p.LogGroup != 0 {
		c.Rules = append(c.Rules, newRule().logSampled(p.LogRate, p.LogGroup, LogTunnel))
	}
	c.Rules = append(c.Rules, newRule().counterObj(CounterTunnel).verdict(expr.VerdictDrop))
	return c
}

// inputChain: tunnel packets for this host pass the underlay guard; pods'
// new connections to the host itself pass their egress policy.
func inputChain(p *Program) *Chain {
	vni := binary.BigEndian.AppendUint32(nil, p.VXLANVNI)[1:]
	return base("input", nftables.ChainHookInput, PriorityEgress,
		newRule().ctEstablished().verdict(expr.VerdictAccept),
		newRule().l4proto(ProtoUDP, "").
			payloadEq(fmt.Sprintf("udp dport %d", p.VXLANPort), expr.PayloadBaseTransportHeader, 2, binary.BigEndian.AppendUint16(nil, p.VXLANPort)).
			payloadEq(fmt.Sprintf("@th,96,24 %#x", p.VXLANVNI), expr.PayloadBaseTransportHeader, 12, vni).jump("underlay"),
		newRule().nfprotoText(false).l4proto(4, "ipencap").jump("underlay"),
		newRule().ifname(true, false, VethPattern).verdict(expr.VerdictAccept),
		newRule().jump("egress"))
}

// baseForward is a forward base chain for one direction. Two base chains,
// so that an accept by the egress side (which ends only its own base
// chain) still leaves the packet to the ingress side.
func baseForward(name string, prio int32, egress bool) *Chain {
	c := base(name, nftables.ChainHookForward, prio, newRule().ctEstablished().verdict(expr.VerdictAccept))
	if egress {
		c.Rules = append(c.Rules,
			newRule().ifname(true, false, VethPattern).verdict(expr.VerdictAccept),
			newRule().jump("egress"))
		return c
	}
	c.Rules = append(c.Rules,
		newRule().ifname(false, false, VethPattern).verdict(expr.VerdictAccept),
		newRule().jump("ingress"))
	return c
}

// dispatch is the egress or ingress chain: the first-packet guard
// (ingress), a pod's traffic with itself, pods no policy isolates, then
// each policy isolating the pod (through the slot maps), and the drop,
// counted per pod.
func dispatch(p *Program, name string, ingress bool, slots int) *Chain {
	c := &Chain{Name: name}
	pod, dir, logp := fSaddr, "egr", LogEgress
	if ingress {
		pod, dir, logp = fDaddr, "ing", LogIngress
	}
	for _, v6 := range []bool{false, true} {
		fam := map[bool]string{false: "4", true: "6"}[v6]
		if ingress {
			c.Rules = append(c.Rules, newRule().nfproto(v6).lookup(v6, "eps"+fam, true, false, fOIFName, fDaddr).counterObj(CounterNotReady).verdict(expr.VerdictDrop))
		}
		c.Rules = append(c.Rules,
			newRule().nfproto(v6).lookup(v6, "self"+fam, false, false, fSaddr, fDaddr).verdict(expr.VerdictAccept),
			newRule().nfproto(v6).lookup(v6, dir+"_iso"+fam, true, false, pod).verdict(expr.VerdictAccept))
	}
	for _, v6 := range []bool{false, true} {
		fam := map[bool]string{false: "4", true: "6"}[v6]
		for i := range slots {
			c.Rules = append(c.Rules, newRule().nfproto(v6).lookup(v6, fmt.Sprintf("%s%s_%d", dir, fam, i), false, true, pod))
		}
	}
	if p.LogGroup != 0 {
		c.Rules = append(c.Rules, newRule().logSampled(p.LogRate, p.LogGroup, logp))
	}
	for _, v6 := range []bool{false, true} {
		fam := map[bool]string{false: "4", true: "6"}[v6]
		c.Rules = append(c.Rules, newRule().nfproto(v6).lookup(v6, dir+"_iso"+fam, false, false, pod).verdict(expr.VerdictDrop))
	}
	return c
}

// policyChain holds a policy's rules for one direction; each accepts what
// it allows. The compiler leaves the peer and named-port elements empty
// when the policy isolates no pod of this node (the chain is reached only
// then).
func policyChain(rs *Ruleset, pol Policy, ingress bool) *Chain {
	rules := pol.Egress
	peer := fDaddr
	if ingress {
		rules, peer = pol.Ingress, fSaddr
	}
	c := &Chain{Name: PolicyChain(pol.ID, ingress)}
	dir := "egress"
	if ingress {
		dir = "ingress"
	}
	// The rules depend on the policy's shape alone: built once, reused by
	// every sync until the policy changes.
	shape := shapeOf(pol, ingress, rules)
	cached, haveRules := ruleCache.Load(shape)
	if haveRules {
		c.Rules = cached.([]*rule)
	}
	for k, r := range rules {
		peers4, peers6 := SplitFamilies(r.Peers)
		var n4, n6 []NamedPort
		for _, n := range r.Named {
			if n.Addr.Is4() {
				n4 = append(n4, n)
			} else {
				n6 = append(n6, n)
			}
		}
		peerSet := ruleSet(pol.ID, ingress, k, "peers")
		switch {
		case r.AnyPeer:
		case r.PeerSet != "":
			peerSet = r.PeerSet
		default:
			rs.Sets[peerSet+"4"] = &Set{Name: peerSet + "4", Kind: KindRange4, Elems: rangeElems(peers4)}
			rs.Sets[peerSet+"6"] = &Set{Name: peerSet + "6", Kind: KindRange6, Elems: rangeElems(peers6)}
		}
		if len(r.Ports) > 0 {
			var es []Elem
			for _, pr := range r.Ports {
				es = append(es, portsElem(pr))
			}
			rs.Sets[ruleSet(pol.ID, ingress, k, "ports")] = &Set{Name: ruleSet(pol.ID, ingress, k, "ports"), Kind: KindPorts, Elems: elements(es)}
		}
		if r.NamedPorts {
			rs.Sets[ruleSet(pol.ID, ingress, k, "named4")] = &Set{Name: ruleSet(pol.ID, ingress, k, "named4"), Kind: KindNamed4, Elems: namedElems(n4)}
			rs.Sets[ruleSet(pol.ID, ingress, k, "named6")] = &Set{Name: ruleSet(pol.ID, ingress, k, "named6"), Kind: KindNamed6, Elems: namedElems(n6)}
		}
		note := fmt.Sprintf("%s %s[%d]", pol.Name, dir, k)
		if haveRules {
			continue
		}
		if r.AnyPeer {
			// No address match: one rule serves both families.
			if r.AnyPort() {
				c.Rules = append(c.Rules, newRule().verdict(expr.VerdictAccept).comment(note))
			}
			if len(r.Ports) > 0 {
				c.Rules = append(c.Rules, newRule().lookup(false, ruleSet(pol.ID, ingress, k, "ports"), false, false, fL4Proto, fDport).verdict(expr.VerdictAccept).comment(note))
			}
		}
		for _, v6 := range []bool{false, true} {
			fam := map[bool]string{false: "4", true: "6"}[v6]
			if r.AnyPeer && !r.NamedPorts {
				continue
			}
			head := func() *rule {
				x := newRule().nfproto(v6)
				if !r.AnyPeer {
					x.lookup(v6, peerSet+fam, false, false, peer)
				}
				return x
			}
			if !r.AnyPeer && r.AnyPort() {
				c.Rules = append(c.Rules, head().verdict(expr.VerdictAccept).comment(note))
			}
			if !r.AnyPeer && len(r.Ports) > 0 {
				c.Rules = append(c.Rules, head().lookup(v6, ruleSet(pol.ID, ingress, k, "ports"), false, false, fL4Proto, fDport).verdict(expr.VerdictAccept).comment(note))
			}
			if r.NamedPorts {
				c.Rules = append(c.Rules, head().lookup(v6, ruleSet(pol.ID, ingress, k, "named"+fam), false, false, fDaddr, fL4Proto, fDport).verdict(expr.VerdictAccept).comment(note))
			}
		}
	}
	if !haveRules {
		if ruleCacheSize.Add(1) > 100000 {
			ruleCache.Clear()
			ruleCacheSize.Store(0)
		}
		ruleCache.Store(shape, c.Rules)
	}
	return c
}

// ruleCache holds the rules of policy chains by shape (rules are never
// changed once built); cleared when it grows large.
var (
	ruleCache     sync.Map
	ruleCacheSize atomic.Int64
)

// shapeOf is what a policy chain's rules depend on.
func shapeOf(pol Policy, ingress bool, rules []Rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\x00%s\x00%v", pol.ID, pol.Name, ingress)
	for _, r := range rules {
		fmt.Fprintf(&b, "\x00%v%v%v%s", r.AnyPeer, len(r.Ports) > 0, r.NamedPorts, r.PeerSet)
	}
	return b.String()
}

func rangeElems(rs []Range) []Elem {
	n := Normalize(rs) // sorted and merged: no duplicates
	es := make([]Elem, 0, len(n))
	for _, r := range n {
		es = append(es, rangeElem(r))
	}
	return es
}

func namedElems(ns []NamedPort) []Elem {
	var es []Elem
	for _, n := range ns {
		es = append(es, namedElem(n))
	}
	return elements(es)
}
