package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/brindle-net/brindle/policy/nft"
)

// Local is one pod attachment on this node as the kernel shows it: its
// host veth and the addresses routed to it.
type Local struct {
	Veth  string
	Addrs []netip.Addr
	// Namespace and Name identify the pod: brindle names host veths after
	// them (conf.HostVethName).
	Namespace, Name string
}

// Program is the nftables program of one node: its endpoints (the local
// attachments whose pods the model knows — any other stays in default deny
// until it does), every policy's chains, and the peer and named-port
// elements of the policies that isolate a local pod. admitAll admits
// every local attachment, pod known or not (no Kubernetes: no policy).
func (m *Model) Program(locals []Local, admitAll bool) *nft.Program {
	return new(Compiler).Program(m, locals, admitAll)
}

// Program is Model.Program for m, the latest model this Compiler made. A
// policy's part is built again only when the policy, whether it isolates
// a pod here, or the local pods it selects changed (or, for a rule that
// reaches every pod, any pod); otherwise last time's is reused, Rev and
// all, so that nft.Renderer reuses its chains and sets too.
func (x *Compiler) Program(m *Model, locals []Local, admitAll bool) *nft.Program {
	prog := &nft.Program{}
	here := map[string]bool{} // policies isolating a local pod
	local := map[*Pod]bool{}
	for _, l := range locals {
		key := l.Namespace + "/" + l.Name
		pod, known := m.pods[key]
		if known {
			local[pod] = true
		}
		if !known && !admitAll {
			continue
		}
		ep := nft.Endpoint{Veth: l.Veth, Addrs: l.Addrs, Name: key}
		if l.Namespace == "" {
			ep.Name = l.Veth // outside Kubernetes: the attachment has no pod name
		}
		if known && !pod.HostNetwork {
			for _, p := range m.ingress[key] {
				ep.Ingress = append(ep.Ingress, p.ID)
				here[p.ID] = true
			}
			for _, p := range m.egress[key] {
				ep.Egress = append(ep.Egress, p.ID)
				here[p.ID] = true
			}
		}
		prog.Endpoints = append(prog.Endpoints, ep)
	}
	sort.Slice(prog.Endpoints, func(i, j int) bool { return prog.Endpoints[i].Veth < prog.Endpoints[j].Veth })
	next := make(map[*Policy]*progEntry, len(m.Policies))
	prog.PeerSets = map[string][]nft.Range{}
	for _, p := range m.Policies {
		fill := here[p.ID]
		var localSel []*Pod // named ports of ingress rules resolve on these
		if fill && p.Ingress {
			for _, s := range p.Selected {
				if local[s] {
					localSel = append(localSel, s)
				}
			}
		}
		e := x.progs[p]
		if e == nil || e.fill != fill || !slices.Equal(e.localSel, localSel) || (e.allPods && e.rev != m.rev) {
			e = buildPolicy(m, p, fill, localSel)
		}
		next[p] = e
		prog.Policies = append(prog.Policies, e.np)
		for _, name := range e.peerSets {
			if _, ok := prog.PeerSets[name]; !ok {
				prog.PeerSets[name] = nil // the set exists, empty unless filled
			}
		}
		for _, f := range e.fills {
			if prog.PeerSets[f.name] == nil {
				prog.PeerSets[f.name] = x.sharedRanges(f.name, f.pods)
			}
		}
	}
	x.progs = next
	for name := range x.peerRanges {
		if _, ok := prog.PeerSets[name]; !ok {
			delete(x.peerRanges, name)
		}
	}
	return prog
}

// progEntry is one policy's part of a program, and what it was built from.
type progEntry struct {
	fill     bool
	localSel []*Pod
	// allPods: a rule's elements depend on every pod (rev).
	allPods bool
	rev     uint64
	np      nft.Policy
	// peerSets are the shared sets its rules match; fills those it fills,
	// with the pods to fill them with.
	peerSets []string
	fills    []peerFill
}

type peerFill struct {
	name string
	pods []*Pod
}

// policyRevs numbers the nft.Policy values built, for nft.Renderer.
var policyRevs atomic.Uint64

func buildPolicy(m *Model, p *Policy, fill bool, localSel []*Pod) *progEntry {
	e := &progEntry{fill: fill, localSel: localSel, rev: m.rev}
	np := nft.Policy{ID: p.ID, Name: p.Key(), Rev: policyRevs.Add(1)}
	if p.Ingress {
		np.Ingress = []nft.Rule{}
		for _, r := range p.IngressRules {
			np.Ingress = append(np.Ingress, e.nftRule(r, fill, localSel))
		}
	}
	if p.Egress {
		np.Egress = []nft.Rule{}
		for _, r := range p.EgressRules {
			named := r.Pods
			if r.AnyPeer && fill && len(r.Named) > 0 {
				named, e.allPods = m.allPods(), true
			}
			np.Egress = append(np.Egress, e.nftRule(r, fill, named))
		}
	}
	e.np = np
	return e
}

// nftRule converts a rule; the pod-dependent elements only when fill.
// named are the pods whose named ports the rule's names resolve on (the
// destination pods).
func (e *progEntry) nftRule(r Rule, fill bool, named []*Pod) nft.Rule {
	out := nft.Rule{AnyPeer: r.AnyPeer, Ports: r.Ports, NamedPorts: len(r.Named) > 0}
	if r.PeerKey != "" {
		out.PeerSet = peerSetName(r.PeerKey)
		e.peerSets = append(e.peerSets, out.PeerSet)
	}
	if !fill {
		return out
	}
	switch {
	case r.AnyPeer:
	case r.PeerKey != "":
		e.fills = append(e.fills, peerFill{out.PeerSet, r.Pods})
	default:
		out.Peers = nft.Normalize(append(append([]nft.Range(nil), r.Blocks...), podRanges(r.Pods)...))
	}
	for _, n := range r.Named {
		for _, p := range named {
			for _, cp := range p.Ports {
				if cp.Name != n.Name || cp.Proto != n.Proto {
					continue
				}
				for _, a := range p.Addrs {
					out.Named = append(out.Named, nft.NamedPort{Addr: a, Proto: cp.Proto, Port: cp.Port})
				}
			}
		}
	}
	return out
}

func (m *Model) allPods() []*Pod {
	var out []*Pod
	for _, p := range m.pods {
		if !p.HostNetwork {
			out = append(out, p)
		}
	}
	return out
}

// rangesEntry is a shared peer set's ranges and the pod list they were
// made from (a selection's list is never changed: a new one is made).
type rangesEntry struct {
	pods   []*Pod
	ranges []nft.Range
}

// sharedRanges are the address ranges of a shared peer set's pods, sorted
// and merged once per selection.
func (x *Compiler) sharedRanges(name string, pods []*Pod) []nft.Range {
	if len(pods) == 0 {
		return nil
	}
	if x.peerRanges == nil {
		x.peerRanges = map[string]rangesEntry{}
	}
	// The same backing array (kept alive here) is the same selection.
	if e, ok := x.peerRanges[name]; ok && &e.pods[0] == &pods[0] && len(e.pods) == len(pods) {
		return e.ranges
	}
	rs := podRanges(pods)
	x.peerRanges[name] = rangesEntry{pods, rs}
	return rs
}

func podRanges(pods []*Pod) []nft.Range {
	var rs []nft.Range
	for _, p := range pods {
		for _, a := range p.Addrs {
			rs = append(rs, nft.AddrRange(a))
		}
	}
	return nft.Normalize(rs)
}

// peerSetName names the shared set of a peer selector: stable while the
// policies that write it exist, whatever pods it selects.
func peerSetName(key string) string {
	h := sha256.Sum256([]byte(key))
	return "peer_" + hex.EncodeToString(h[:6])
}
