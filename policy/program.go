package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"sort"

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
	prog := &nft.Program{}
	here := map[string]bool{} // policies isolating a local pod
	for _, l := range locals {
		key := l.Namespace + "/" + l.Name
		pod, known := m.pods[key]
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
	local := map[*Pod]bool{}
	for _, l := range locals {
		if p, ok := m.pods[l.Namespace+"/"+l.Name]; ok {
			local[p] = true
		}
	}
	rc := &rangeCache{byPods: map[rangeKey][]nft.Range{}, shared: map[string][]nft.Range{}}
	for _, p := range m.Policies {
		np := nft.Policy{ID: p.ID, Name: p.Key()}
		fill := here[p.ID]
		if p.Ingress {
			np.Ingress = []nft.Rule{}
			for _, r := range p.IngressRules {
				var named []*Pod
				for _, s := range p.Selected {
					if local[s] {
						named = append(named, s)
					}
				}
				np.Ingress = append(np.Ingress, rc.nftRule(r, fill, named))
			}
		}
		if p.Egress {
			np.Egress = []nft.Rule{}
			for _, r := range p.EgressRules {
				named := r.Pods
				if r.AnyPeer {
					named = m.allPods()
				}
				np.Egress = append(np.Egress, rc.nftRule(r, fill, named))
			}
		}
		prog.Policies = append(prog.Policies, np)
	}
	prog.PeerSets = rc.shared
	return prog
}

// nftRule converts a rule; the pod-dependent elements only when fill.
// named are the pods whose named ports the rule's names resolve on (the
// destination pods).
func (rc *rangeCache) nftRule(r Rule, fill bool, named []*Pod) nft.Rule {
	out := nft.Rule{AnyPeer: r.AnyPeer, Ports: r.Ports, NamedPorts: len(r.Named) > 0}
	if r.PeerKey != "" {
		out.PeerSet = peerSetName(r.PeerKey)
		if _, ok := rc.shared[out.PeerSet]; !ok {
			rc.shared[out.PeerSet] = nil // the set exists, empty unless filled
		}
	}
	if !fill {
		return out
	}
	switch {
	case r.AnyPeer:
	case r.PeerKey != "":
		if rc.shared[out.PeerSet] == nil {
			rc.shared[out.PeerSet] = rc.ranges(r.Pods)
		}
	default:
		out.Peers = nft.Normalize(append(append([]nft.Range(nil), r.Blocks...), rc.ranges(r.Pods)...))
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

// rangeCache keeps the address ranges of peer pod lists, which the
// compiler shares between rules written alike: each is sorted and merged
// once per program. shared are the program's shared peer sets.
type rangeCache struct {
	byPods map[rangeKey][]nft.Range
	shared map[string][]nft.Range
}

type rangeKey struct {
	first *Pod
	n     int
}

func (rc *rangeCache) ranges(pods []*Pod) []nft.Range {
	if len(pods) == 0 {
		return nil
	}
	k := rangeKey{pods[0], len(pods)}
	if r, ok := rc.byPods[k]; ok {
		return r
	}
	var rs []nft.Range
	for _, p := range pods {
		for _, a := range p.Addrs {
			rs = append(rs, nft.AddrRange(a))
		}
	}
	rs = nft.Normalize(rs)
	rc.byPods[k] = rs
	return rs
}

// peerSetName names the shared set of a peer selector: stable while the
// policies that write it exist, whatever pods it selects.
func peerSetName(key string) string {
	h := sha256.Sum256([]byte(key))
	return "peer_" + hex.EncodeToString(h[:6])
}
