package policy

import (
	"maps"
	"net/netip"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Compiler compiles a cluster again and again (a node's sync loop), doing
// again only what a change touches: the policies that changed, and those
// whose selected pods or peers a changed pod or namespace may enter or
// leave. The rest of the model, and the pod selections peers share, are
// kept. A policy change therefore costs that policy, not the cluster.
// Its models are Compile's for the same cluster (TestCompilerMatchesCompile,
// on sequences of changes).
//
// Objects are told apart by pointer: a changed Pod or NetworkPolicy must
// be a new object (an informer's store holds a new one after every
// update), and an object once passed must not be modified afterwards.
// Namespaces are compared by labels.
type Compiler struct {
	pods     map[string]*Pod // the last cluster's, by key
	nsLabels map[string]labels.Set
	policies map[*networkingv1.NetworkPolicy]*compiled
	peers    map[string][]*Pod
	sels     map[string]peerSel
	// rev counts the compiles in which pods changed; Program's cache
	// depends on it where a rule reaches every pod.
	rev uint64
	// ingress and egress are the last model's maps of isolating policies.
	ingress, egress map[string][]*Policy
	// progs is Program's per-policy cache (program.go).
	progs map[*Policy]*progEntry
	// peerRanges caches the address ranges of shared peer sets by their
	// pod list.
	peerRanges map[string]rangesEntry
}

// compiled is one policy as compiled, with what it depends on.
type compiled struct {
	p    *Policy
	sel  matcher  // its pod selector (nil: selects nothing)
	used []string // the peer selections its rules use
}

// Compile builds the model of c, reusing what the changes since the last
// call leave as it was.
func (x *Compiler) Compile(c *Cluster) *Model {
	m := &Model{pods: make(map[string]*Pod, len(c.Pods)), byAddr: make(map[netip.Addr]*Pod, len(c.Pods)),
		ingress: map[string][]*Policy{}, egress: map[string][]*Policy{}}
	byNS := map[string][]*Pod{}
	for _, p := range c.Pods {
		m.pods[p.Key()] = p
		if p.HostNetwork {
			continue
		}
		byNS[p.Namespace] = append(byNS[p.Namespace], p)
		for _, a := range p.Addrs {
			m.byAddr[a] = p
		}
	}
	nsLabels := make(map[string]labels.Set, len(c.Namespaces))
	nsNames := make([]string, 0, len(c.Namespaces))
	for _, n := range c.Namespaces {
		nsLabels[n.Name] = n.Labels
		nsNames = append(nsNames, n.Name)
	}
	sort.Strings(nsNames)

	first := x.policies == nil
	changed := x.changedPods(m.pods)
	if first || len(changed) > 0 {
		x.rev++
	}
	m.rev = x.rev
	nsChanged := first || !maps.EqualFunc(x.nsLabels, nsLabels, func(a, b labels.Set) bool { return maps.Equal(a, b) })
	if first {
		x.peers, x.sels = map[string][]*Pod{}, map[string]peerSel{}
	}
	// Peer selections a change may alter are selected again, on demand.
	gone := map[string]bool{}
	for key, s := range x.sels {
		if (nsChanged && s.byNSSel) || s.holdsAny(changed) {
			gone[key] = true
			delete(x.peers, key)
			delete(x.sels, key)
		}
	}
	cc := &compiler{byNS: byNS, nsLabels: nsLabels, nsNames: nsNames, peers: x.peers, sels: x.sels}
	next := make(map[*networkingv1.NetworkPolicy]*compiled, len(c.Policies))
	used := map[string]bool{}
	for _, np := range c.Policies {
		cp, ok := x.policies[np]
		if !ok || cp.affected(changed, gone) {
			cc.used, cc.sel = nil, nil
			cp = &compiled{p: cc.policy(np)}
			cp.sel, cp.used = cc.sel, cc.used
		}
		next[np] = cp
		for _, k := range cp.used {
			used[k] = true
		}
		m.Policies = append(m.Policies, cp.p)
	}
	// Selections no policy uses any more are dropped.
	for key := range x.sels {
		if !used[key] {
			delete(x.peers, key)
			delete(x.sels, key)
		}
	}
	old := x.policies
	x.pods, x.nsLabels, x.policies = m.pods, nsLabels, next

	sort.Slice(m.Policies, func(i, j int) bool { return m.Policies[i].Key() < m.Policies[j].Key() })
	m.ingress, m.egress = x.isolating(m.Policies, old)
	return m
}

// isolating maps each pod to the policies isolating it per direction, in
// the model's order. Only the pods selected by a policy that came or went
// (old: last compile's policies) get new lists; the other lists are last
// time's (never modified: a model is read while the next is made).
func (x *Compiler) isolating(pols []*Policy, old map[*networkingv1.NetworkPolicy]*compiled) (ingress, egress map[string][]*Policy) {
	if x.ingress == nil {
		ingress, egress = map[string][]*Policy{}, map[string][]*Policy{}
		for _, p := range pols {
			for _, pod := range p.Selected {
				key := pod.Key()
				if p.Ingress {
					ingress[key] = append(ingress[key], p)
				}
				if p.Egress {
					egress[key] = append(egress[key], p)
				}
			}
		}
		x.ingress, x.egress = ingress, egress
		return ingress, egress
	}
	now := make(map[*Policy]bool, len(pols))
	for _, p := range pols {
		now[p] = true
	}
	removed := map[*Policy]bool{}
	was := make(map[*Policy]bool, len(old))
	dirty := map[string]bool{}
	for _, cp := range old {
		was[cp.p] = true
		if !now[cp.p] {
			removed[cp.p] = true
			for _, pod := range cp.p.Selected {
				dirty[pod.Key()] = true
			}
		}
	}
	added := map[string][]*Policy{} // pod key -> policies new since last time selecting it
	for _, p := range pols {
		if !was[p] {
			for _, pod := range p.Selected {
				key := pod.Key()
				dirty[key] = true
				added[key] = append(added[key], p)
			}
		}
	}
	if len(dirty) == 0 {
		return x.ingress, x.egress
	}
	ingress, egress = maps.Clone(x.ingress), maps.Clone(x.egress)
	update := func(m map[string][]*Policy, key string, ingress bool) {
		var list []*Policy
		for _, p := range m[key] {
			if !removed[p] {
				list = append(list, p)
			}
		}
		for _, p := range added[key] {
			if (ingress && p.Ingress) || (!ingress && p.Egress) {
				list = append(list, p)
			}
		}
		if len(list) == 0 {
			delete(m, key)
			return
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Key() < list[j].Key() })
		m[key] = list
	}
	for key := range dirty {
		update(ingress, key, true)
		update(egress, key, false)
	}
	x.ingress, x.egress = ingress, egress
	return ingress, egress
}

// changedPods lists the versions, old and new, of every pod added,
// removed or changed since the last compile (hostNetwork versions left
// out: no selector picks them).
func (x *Compiler) changedPods(now map[string]*Pod) []*Pod {
	var out []*Pod
	add := func(p *Pod) {
		if !p.HostNetwork {
			out = append(out, p)
		}
	}
	for key, p := range now {
		if old, ok := x.pods[key]; !ok {
			add(p)
		} else if old != p {
			add(old)
			add(p)
		}
	}
	for key, old := range x.pods {
		if _, ok := now[key]; !ok {
			add(old)
		}
	}
	return out
}

// holdsAny reports whether one of pods fits the selection (it may have
// entered or left it).
func (s peerSel) holdsAny(pods []*Pod) bool {
	for _, p := range pods {
		if s.namespaces[p.Namespace] && matches(s.podSel, p.Labels) {
			return true
		}
	}
	return false
}

// affected reports whether the compiled policy may differ now: a changed
// pod fits its pod selector, or a peer selection it uses is gone.
func (cp *compiled) affected(changed []*Pod, gone map[string]bool) bool {
	for _, k := range cp.used {
		if gone[k] {
			return true
		}
	}
	if cp.sel == nil {
		return false
	}
	for _, p := range changed {
		if p.Namespace == cp.p.Namespace && matches(cp.sel, p.Labels) {
			return true
		}
	}
	return false
}
