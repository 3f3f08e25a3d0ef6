package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
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
// Ruleset. It is a fresh Renderer's first render.
func Render(p *Program) *Ruleset { return new(Renderer).Render(p) }

// Render computes the table for p, reusing the sets and chains of what
// did not change since the last call (Renderer): the result is Render's.
func (rd *Renderer) Render(p *Program) *Ruleset {
	rs := &Ruleset{Sets: make(map[string]*Set, 2*len(p.Policies)+64), Chains: make(map[string]*Chain, len(p.Policies)+16),
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

	n := p.Slots()
	ingSlots, egrSlots := n[0], n[1]
	for _, s := range rd.endpointSets(p, n) {
		rs.Sets[s.Name] = s
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
	for _, s := range rd.peerSets(p.PeerSets) {
		rs.Sets[s.Name] = s
	}
	for _, s := range rd.policySets(p.Policies) {
		rs.Sets[s.Name] = s
	}
	for _, pol := range p.Policies {
		for _, c := range rd.rendered[pol.ID].chains {
			chain(c)
		}
	}
	return rs
}

// setInput is what one of the endpoint sets and maps is made of: an item
// per element (a host veth and address, an address, an address and the
// policy to jump to).
type setInput struct {
	name    string
	kind    SetKind
	ingress bool // a dispatch map's direction
	items   []setItem
}

type setItem struct {
	veth string
	a    netip.Addr
	id   string // the policy a dispatch element jumps to
}

func (in *setInput) build() *Set {
	es := make([]Elem, 0, len(in.items))
	for _, it := range in.items {
		switch in.kind {
		case KindEndpoint4, KindEndpoint6:
			es = append(es, endpointElem(it.veth, it.a))
		case KindPair4, KindPair6:
			es = append(es, pairElem(it.a, it.a))
		case KindVmap4, KindVmap6:
			es = append(es, vmapElem(it.a, PolicyChain(it.id, in.ingress)))
		default:
			es = append(es, addrElem(it.a))
		}
	}
	return &Set{Name: in.name, Kind: in.kind, Elems: elements(es)}
}

// endpointInputs are the inputs of the sets and maps made from the
// endpoints: addresses, isolation and dispatch (n slots per direction).
func endpointInputs(p *Program, n [2]int, has map[string][2]bool) []*setInput {
	in := func(name string, k SetKind) *setInput { return &setInput{name: name, kind: k} }
	eps := [2]*setInput{in("eps4", KindEndpoint4), in("eps6", KindEndpoint6)}
	self := [2]*setInput{in("self4", KindPair4), in("self6", KindPair6)}
	ingIso := [2]*setInput{in("ing_iso4", KindCounted4), in("ing_iso6", KindCounted6)}
	egrIso := [2]*setInput{in("egr_iso4", KindCounted4), in("egr_iso6", KindCounted6)}
	var ingSlot, egrSlot [2][]*setInput
	for i := range n[0] {
		for f, k := range [2]SetKind{KindVmap4, KindVmap6} {
			ingSlot[f] = append(ingSlot[f], &setInput{name: fmt.Sprintf("ing%d_%d", 4+2*f, i), kind: k, ingress: true})
		}
	}
	for i := range n[1] {
		for f, k := range [2]SetKind{KindVmap4, KindVmap6} {
			egrSlot[f] = append(egrSlot[f], &setInput{name: fmt.Sprintf("egr%d_%d", 4+2*f, i), kind: k})
		}
	}
	for _, e := range p.Endpoints {
		for _, a := range e.Addrs {
			f := 0
			if a.Is6() {
				f = 1
			}
			eps[f].items = append(eps[f].items, setItem{veth: e.Veth, a: a})
			self[f].items = append(self[f].items, setItem{a: a})
			if len(e.Ingress) > 0 {
				ingIso[f].items = append(ingIso[f].items, setItem{a: a})
			}
			if len(e.Egress) > 0 {
				egrIso[f].items = append(egrIso[f].items, setItem{a: a})
			}
			// Dispatch only to chains the table has (a pod naming a
			// policy that is not there stays isolated: a deny, never an
			// open door).
			for i, id := range e.Ingress {
				if i < n[0] && has[id][0] {
					ingSlot[f][i].items = append(ingSlot[f][i].items, setItem{a: a, id: id})
				}
			}
			for i, id := range e.Egress {
				if i < n[1] && has[id][1] {
					egrSlot[f][i].items = append(egrSlot[f][i].items, setItem{a: a, id: id})
				}
			}
		}
	}
	out := []*setInput{eps[0], eps[1], self[0], self[1], ingIso[0], ingIso[1], egrIso[0], egrIso[1]}
	for f := range 2 {
		out = append(out, ingSlot[f]...)
		out = append(out, egrSlot[f]...)
	}
	return out
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
func policyChain(pol Policy, ingress bool) (*Chain, []*Set) {
	var sets []*Set
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
			sets = append(sets, &Set{Name: peerSet + "4", Kind: KindRange4, Elems: rangeElems(peers4)},
				&Set{Name: peerSet + "6", Kind: KindRange6, Elems: rangeElems(peers6)})
		}
		if len(r.Ports) > 0 {
			var es []Elem
			for _, pr := range r.Ports {
				es = append(es, portsElem(pr))
			}
			sets = append(sets, &Set{Name: ruleSet(pol.ID, ingress, k, "ports"), Kind: KindPorts, Elems: elements(es)})
		}
		if r.NamedPorts {
			sets = append(sets, &Set{Name: ruleSet(pol.ID, ingress, k, "named4"), Kind: KindNamed4, Elems: namedElems(n4)},
				&Set{Name: ruleSet(pol.ID, ingress, k, "named6"), Kind: KindNamed6, Elems: namedElems(n6)})
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
	return c, sets
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
