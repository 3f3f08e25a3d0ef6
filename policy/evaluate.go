package policy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/brindle-net/brindle/policy/nft"
)

// Verdict is the model's answer for one packet: both sides must allow it.
type Verdict struct {
	Allowed bool
	// Egress is the source pod's side, Ingress the destination pod's.
	Egress, Ingress Side
}

// Side is one direction's decision.
type Side struct {
	// Pod is the pod this side concerns ("" for an address that is no
	// pod's: nothing to enforce).
	Pod string
	// Isolated says policies select the pod in this direction; if not,
	// the side allows everything.
	Isolated bool
	Allowed  bool
	// By lists the policy rules that allow the packet
	// (namespace/name ingress[k]); Policies lists those isolating the pod.
	By, Policies []string
}

func (s Side) String() string {
	switch {
	case s.Pod == "":
		return "not a pod: no policy applies"
	case !s.Isolated:
		return s.Pod + ": no policy selects it: allowed"
	case s.Allowed:
		return s.Pod + ": allowed by " + strings.Join(s.By, ", ")
	}
	return s.Pod + ": denied: selected by " + strings.Join(s.Policies, ", ") + ", none allows it"
}

// Evaluate says whether a packet of a new connection from src to dst
// (protocol proto, destination port port) is allowed. A pod's traffic with
// itself is always allowed, as the dataplane does.
func (m *Model) Evaluate(src, dst netip.Addr, proto uint8, port uint16) Verdict {
	srcPod, _ := m.PodByAddr(src)
	dstPod, _ := m.PodByAddr(dst)
	v := Verdict{Egress: Side{Allowed: true}, Ingress: Side{Allowed: true}}
	if srcPod != nil && srcPod == dstPod {
		v.Allowed = true
		v.Egress.Pod, v.Ingress.Pod = srcPod.Key(), dstPod.Key()
		return v
	}
	if srcPod != nil {
		v.Egress = m.side(srcPod, m.egress[srcPod.Key()], false, dst, dstPod, proto, port)
	}
	if dstPod != nil {
		v.Ingress = m.side(dstPod, m.ingress[dstPod.Key()], true, src, dstPod, proto, port)
	}
	v.Allowed = v.Egress.Allowed && v.Ingress.Allowed
	return v
}

// side evaluates the policies isolating pod; peer is the remote address,
// dstPod the destination pod (whose named ports count).
func (m *Model) side(pod *Pod, pols []*Policy, ingress bool, peer netip.Addr, dstPod *Pod, proto uint8, port uint16) Side {
	s := Side{Pod: pod.Key(), Isolated: len(pols) > 0, Allowed: len(pols) == 0}
	dir := "egress"
	if ingress {
		dir = "ingress"
	}
	for _, p := range pols {
		s.Policies = append(s.Policies, p.Key())
		rules := p.EgressRules
		if ingress {
			rules = p.IngressRules
		}
		for k, r := range rules {
			if r.matchesPeer(peer) && r.matchesPort(dstPod, proto, port) {
				s.Allowed = true
				s.By = append(s.By, fmt.Sprintf("%s %s[%d]", p.Key(), dir, k))
			}
		}
	}
	return s
}

func (r *Rule) matchesPeer(a netip.Addr) bool {
	if r.AnyPeer {
		return true
	}
	for _, p := range r.Pods {
		for _, pa := range p.Addrs {
			if pa == a {
				return true
			}
		}
	}
	return nft.Contains(r.Blocks, a)
}

func (r *Rule) matchesPort(dst *Pod, proto uint8, port uint16) bool {
	if r.AnyPort {
		return true
	}
	for _, pr := range r.Ports {
		if pr.Proto == proto && pr.First <= port && port <= pr.Last {
			return true
		}
	}
	if dst == nil {
		return false
	}
	for _, n := range r.Named {
		if n.Proto != proto {
			continue
		}
		for _, cp := range dst.Ports {
			if cp.Name == n.Name && cp.Proto == proto && cp.Port == port {
				return true
			}
		}
	}
	return false
}
