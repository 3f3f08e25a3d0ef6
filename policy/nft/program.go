// Package nft keeps brindle's filter table, `table inet brindle`, equal to a
// Program: what one node enforces. The table holds
//
//   - anti-spoofing on the host veths (a pod sends only from its own
//     addresses, IPv4 and IPv6, whatever the rp_filter sysctls say),
//   - the first-packet guard (traffic to or from a host veth whose endpoint
//     is not in the table yet is dropped: a new pod starts in default deny),
//   - NetworkPolicy: a chain per policy and direction, reached through
//     verdict maps keyed by the local pod's address, matching peers and
//     ports through sets, so that pod and label churn rewrites set and map
//     elements, never chains,
//   - the underlay guard (VXLAN and IPIP from hosts that are not cluster
//     nodes are dropped),
//   - and, on hosts where another table's forward chain has policy drop
//     (Docker), one accept rule for brindle's interfaces at the top of that
//     chain (an accept in brindle's own table cannot overrule another
//     table's drop: netfilter runs every base chain of a hook).
//
// The package renders a Program into a Ruleset (pure, unit-tested against
// the nft text) and writes it through netlink (github.com/google/nftables,
// no nft binary) in one atomic transaction per sync.
package nft

import (
	"net/netip"
)

// TableName is brindle's filter table, family inet: `nft list table inet brindle`.
const TableName = "brindle"

// VethPattern matches brindle's host veths (conf.VethPrefix) in nft syntax.
const VethPattern = "bri*"

// Protocol numbers policy ports can name.
const (
	ProtoTCP  = 6
	ProtoUDP  = 17
	ProtoSCTP = 132
)

// Program is what the filter table enforces on one node.
type Program struct {
	// Endpoints are the node's pods, by host veth.
	Endpoints []Endpoint
	// Nodes are the underlay addresses of every cluster node: tunnel
	// packets (VXLAN VNI VXLANVNI, IPIP) from any other source are dropped.
	Nodes []netip.Addr
	// PeerSets are the shared peer sets: name -> the addresses (empty
	// when no rule using it isolates a pod here).
	PeerSets map[string][]Range
	// Policies are the NetworkPolicies, all of the cluster's: their chains
	// exist whether or not they select a pod here, so that a pod or label
	// change never adds or removes a chain.
	Policies []Policy
	// VXLANPort and VXLANVNI identify brindle's VXLAN (default 4789, 4096).
	VXLANPort uint16
	VXLANVNI  uint32
	// LogGroup is the nflog group sampled drops are logged to (0: no
	// logging); LogRate caps them, per second and kind.
	LogGroup uint16
	LogRate  uint32
	// MinSlots keeps at least this many dispatch maps per direction
	// (ingress, egress): the caller passes the most it has needed, so that
	// a pod losing policies does not rewrite the dispatch chains back and
	// forth.
	MinSlots [2]int
}

// Slots is the number of dispatch maps per direction (ingress, egress)
// Render makes for p.
func (p *Program) Slots() [2]int {
	if len(p.Policies) == 0 && p.MinSlots == [2]int{} {
		return [2]int{}
	}
	n := p.MinSlots
	for _, e := range p.Endpoints {
		n[0], n[1] = max(n[0], len(e.Ingress)), max(n[1], len(e.Egress))
	}
	return [2]int{roundUp(max(n[0], 1)), roundUp(max(n[1], 1))}
}

// Endpoint is one local pod attachment.
type Endpoint struct {
	// Veth is the host-side interface.
	Veth string
	// Addrs are the pod's own addresses: the only sources accepted from
	// Veth, the only destinations forwarded to it.
	Addrs []netip.Addr
	// Name identifies the pod in counters and logs (namespace/pod).
	Name string
	// Ingress and Egress list the IDs of the policies that isolate the
	// pod in each direction, in evaluation order; empty: not isolated.
	Ingress, Egress []string
}

// Policy is one compiled NetworkPolicy.
type Policy struct {
	// ID names the policy's chains and sets: short, stable and unique.
	ID string
	// Name is namespace/name, written into the rules' comments.
	Name string
	// Ingress and Egress are the rules of each direction the policy
	// isolates (nil when it does not; empty when it allows nothing).
	Ingress, Egress []Rule
	// Rev, when not 0, identifies this value: a Renderer given a Policy
	// whose ID and Rev it rendered before reuses those chains and sets.
	// Whoever sets it gives every different value a different Rev.
	Rev uint64
}

// Rule is one ingress or egress rule: traffic matching a peer and a port
// is allowed. Its shape (which matches its nft rules carry) depends on the
// policy alone; the elements depend on pods and may be empty.
type Rule struct {
	// AnyPeer: the rule names no peers (from/to empty), every address
	// matches. Otherwise Peers are the allowed remote addresses (pods
	// selected, ipBlocks less their excepts); empty matches nothing.
	AnyPeer bool
	Peers   []Range
	// PeerSet, when set, names a shared peer set (Program.PeerSets) that
	// the rule matches instead of Peers: rules written alike in many
	// policies share one set.
	PeerSet string
	// Ports lists numeric ports; NamedPorts says the rule also names ports
	// by name, which Named resolves per pod: the destination pod's
	// address, protocol and port. A rule with neither allows every port
	// and protocol.
	Ports      []PortRange
	NamedPorts bool
	Named      []NamedPort
}

// AnyPort reports whether r allows every port and protocol.
func (r Rule) AnyPort() bool { return len(r.Ports) == 0 && !r.NamedPorts }

// PortRange is a protocol's ports First..Last (both included).
type PortRange struct {
	Proto       uint8
	First, Last uint16
}

// NamedPort is a named port resolved on one pod.
type NamedPort struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}
