// Package policy compiles Kubernetes NetworkPolicies (networking.k8s.io/v1)
// into a model: for every policy the pods it selects and, per rule, the
// peers and ports it allows. The same model answers "would this packet be
// allowed, and by which policy" (Evaluate: `brindlectl policy test`, the
// conntrack flush) and becomes one node's nftables program (Program:
// policy/nft writes it). It is pure: no API calls, no kernel.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/brindle-net/brindle/policy/nft"
)

// Pod is what the compiler needs to know of a pod.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	// Addrs are the pod's addresses (status.podIPs, or for a pod of this
	// node what its host veth's routes say).
	Addrs []netip.Addr
	// Ports are the pod's named container ports.
	Ports []ContainerPort
	Node  string
	// HostNetwork pods share their node's address: no policy selects them
	// and no pod or namespace selector picks them as peers.
	HostNetwork bool
}

// Key is namespace/name.
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// ContainerPort is a named container port.
type ContainerPort struct {
	Name  string
	Proto uint8
	Port  uint16
}

// Namespace is a namespace's name and labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Cluster is the compiler's input: the API objects, already reduced to what
// matters (terminated pods left out).
type Cluster struct {
	Pods       []*Pod
	Namespaces []*Namespace
	Policies   []*networkingv1.NetworkPolicy
}

// Model is the compiled cluster.
type Model struct {
	// Policies, sorted by namespace/name.
	Policies []*Policy
	pods     map[string]*Pod
	byAddr   map[netip.Addr]*Pod
	ingress  map[string][]*Policy // pod key -> policies isolating it for ingress
	egress   map[string][]*Policy
	// rev is the Compiler's count of compiles in which pods changed.
	rev uint64
}

// Policy is one compiled NetworkPolicy.
type Policy struct {
	Namespace, Name string
	// ID names its nftables chains and sets.
	ID string
	// Ingress and Egress say which directions it isolates.
	Ingress, Egress bool
	// Selected are the pods it applies to.
	Selected []*Pod
	// IngressRules and EgressRules are its rules, in order.
	IngressRules, EgressRules []Rule
	// Problems are parts of the spec that could not be used (an invalid
	// selector matches nothing), for logs and `policy show`.
	Problems []string
	key      string // namespace/name, made once
}

// Key is namespace/name.
func (p *Policy) Key() string {
	if p.key != "" {
		return p.key
	}
	return p.Namespace + "/" + p.Name
}

// Rule is one compiled ingress or egress rule.
type Rule struct {
	// AnyPeer: the rule lists no peers; every address matches.
	AnyPeer bool
	// Pods are the peer pods its selectors match (pods with addresses).
	Pods []*Pod
	// PeerKey, for a rule whose only peer is one pod/namespace selector,
	// identifies that selector: rules written alike share one set.
	PeerKey string
	// Blocks are its ipBlocks, less their excepts.
	Blocks []nft.Range
	// Peers describes each peer as written, for `policy show`.
	Peers []string
	// AnyPort: the rule lists no ports; every port and protocol matches.
	AnyPort bool
	Ports   []nft.PortRange
	Named   []NamedRef
}

// NamedRef is a port named in a rule.
type NamedRef struct {
	Proto uint8
	Name  string
}

// PolicyID is the stable short ID of policy namespace/name.
func PolicyID(namespace, name string) string {
	h := sha256.Sum256([]byte(namespace + "/" + name))
	return hex.EncodeToString(h[:6])
}

// Pod returns the pod namespace/name, if the model has it.
func (m *Model) Pod(key string) (*Pod, bool) {
	p, ok := m.pods[key]
	return p, ok
}

// PodByAddr returns the pod that has address a.
func (m *Model) PodByAddr(a netip.Addr) (*Pod, bool) {
	p, ok := m.byAddr[a]
	return p, ok
}

// PoliciesFor returns the policies isolating pod key for ingress and for
// egress, in evaluation order.
func (m *Model) PoliciesFor(key string) (ingress, egress []*Policy) {
	return m.ingress[key], m.egress[key]
}

// Policy returns policy namespace/name.
func (m *Model) Policy(key string) (*Policy, bool) {
	i := sort.Search(len(m.Policies), func(i int) bool { return m.Policies[i].Key() >= key })
	if i < len(m.Policies) && m.Policies[i].Key() == key {
		return m.Policies[i], true
	}
	return nil, false
}
