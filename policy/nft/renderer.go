package nft

import (
	"slices"
)

// Renderer renders a node's Programs one after the other (the sync loop)
// and reuses what did not change since the last one: the chains and sets
// of every policy whose ID and Rev it rendered before, the shared peer
// sets whose ranges are the same, and the endpoint sets and maps when the
// endpoints, the slots and the policies they dispatch to are the same.
// What it returns is what Render returns for the same Program
// (TestRendererMatchesRender); the reused Chain and Set values are the
// same pointers as last time, which is how Writer's diff skips them
// without comparing their contents. A Renderer is used by one goroutine.
type Renderer struct {
	rendered map[string]renderedPolicy // by policy ID
	peers    map[string]renderedPeer   // by shared set name
	eps      map[string]renderedInput  // endpoint sets and maps, by name
}

type renderedPolicy struct {
	rev    uint64
	chains []*Chain
	sets   []*Set
}

type renderedPeer struct {
	ranges []Range // a copy: the caller may reuse its slice
	sets   []*Set
}

type renderedInput struct {
	kind  SetKind
	items []setItem
	set   *Set
}

// policySets renders (or takes from last time) every policy's chains and
// sets, keeps them in rd.rendered, and returns the sets.
func (rd *Renderer) policySets(pols []Policy) []*Set {
	next := make(map[string]renderedPolicy, len(pols))
	var sets []*Set
	for _, pol := range pols {
		r, ok := rd.rendered[pol.ID]
		if !ok || pol.Rev == 0 || r.rev != pol.Rev {
			r = renderedPolicy{rev: pol.Rev}
			if pol.Ingress != nil {
				c, s := policyChain(pol, true)
				r.chains, r.sets = append(r.chains, c), append(r.sets, s...)
			}
			if pol.Egress != nil {
				c, s := policyChain(pol, false)
				r.chains, r.sets = append(r.chains, c), append(r.sets, s...)
			}
		}
		next[pol.ID] = r
		sets = append(sets, r.sets...)
	}
	rd.rendered = next
	return sets
}

// peerSets renders the shared peer sets (two each: IPv4, IPv6).
func (rd *Renderer) peerSets(ps map[string][]Range) []*Set {
	next := make(map[string]renderedPeer, len(ps))
	var sets []*Set
	for name, ranges := range ps {
		r, ok := rd.peers[name]
		if !ok || !slices.Equal(r.ranges, ranges) {
			v4, v6 := SplitFamilies(ranges)
			r = renderedPeer{ranges: slices.Clone(ranges), sets: []*Set{
				{Name: name + "4", Kind: KindRange4, Elems: rangeElems(v4)},
				{Name: name + "6", Kind: KindRange6, Elems: rangeElems(v6)}}}
		}
		next[name] = r
		sets = append(sets, r.sets...)
	}
	rd.peers = next
	return sets
}

// endpointSets renders the endpoint sets and maps; each is made again
// only when what it is made of changed.
func (rd *Renderer) endpointSets(p *Program, slots [2]int) []*Set {
	has := make(map[string][2]bool, len(p.Policies))
	for _, pol := range p.Policies {
		has[pol.ID] = [2]bool{pol.Ingress != nil, pol.Egress != nil}
	}
	ins := endpointInputs(p, slots, has)
	next := make(map[string]renderedInput, len(ins))
	out := make([]*Set, 0, len(ins))
	for _, in := range ins {
		r, ok := rd.eps[in.name]
		if !ok || r.kind != in.kind || !slices.Equal(r.items, in.items) {
			r = renderedInput{kind: in.kind, items: in.items, set: in.build()}
		}
		next[in.name] = r
		out = append(out, r.set)
	}
	rd.eps = next
	return out
}
