package conf

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// NodeSchema is the version of the node record; readers refuse newer ones.
const NodeSchema = 1

// Node is a node's record at nodes/<name>, written by its brindled at
// start and whenever its addresses change. Addresses carry their prefix
// length: the subnet decides whether a peer is directly reachable.
type Node struct {
	V    int    `json:"v"`
	Name string `json:"name"`
	// IPv4Address is the node's underlay address with its subnet,
	// e.g. "192.0.2.10/24"; its BGP router ID and next hop.
	IPv4Address string `json:"ipv4Address,omitempty"`
	IPv6Address string `json:"ipv6Address,omitempty"`
	// ASNumber overrides the cluster's AS for this node (0: the cluster's).
	ASNumber uint32 `json:"asNumber,omitempty"`
	// RouteReflectorClusterID makes the node a route reflector when the
	// mesh is off; the other nodes become its clients.
	RouteReflectorClusterID string            `json:"routeReflectorClusterID,omitempty"`
	Labels                  map[string]string `json:"labels,omitempty"`
	// TunnelIPv4 and VXLANMAC are published when the node needs a tunnel.
	TunnelIPv4 string `json:"tunnelIPv4,omitempty"`
	VXLANMAC   string `json:"vxlanMAC,omitempty"`
	// KubernetesNode is the Kubernetes Node this record is for, written
	// by brindled when it runs in Kubernetes: the controller removes the
	// record (and releases the node's IPAM) when that Node is deleted.
	KubernetesNode string `json:"kubernetesNode,omitempty"`
	// Registered is when brindled last wrote the record.
	Registered time.Time `json:"registered"`
}

// RouteReflectorLabel, on a node, makes it a route reflector with the
// label's value as cluster ID, as the routeReflectorClusterID field does
// (Calico's model: label the nodes that reflect). It lets a node become a
// reflector through its labels alone (`brindled --labels`, or the
// Kubernetes Node's labels), with the same DaemonSet on every node.
const RouteReflectorLabel = "brindle.net/route-reflector-cluster-id"

// RRClusterID is the node's route-reflector cluster ID: the field, else
// the label; "" for a node that is not a reflector.
func (n *Node) RRClusterID() string {
	if n.RouteReflectorClusterID != "" {
		return n.RouteReflectorClusterID
	}
	return n.Labels[RouteReflectorLabel]
}

// IPv4 returns the node's IPv4 address and subnet; ok is false when it has none.
func (n *Node) IPv4() (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(n.IPv4Address)
	return p, err == nil && p.Addr().Is4()
}

// IPv6 returns the node's IPv6 address and subnet; ok is false when it has none.
func (n *Node) IPv6() (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(n.IPv6Address)
	return p, err == nil && p.Addr().Is6()
}

// AS is the node's AS number in a cluster whose default is clusterAS.
func (n *Node) AS(clusterAS uint32) uint32 {
	if n.ASNumber != 0 {
		return n.ASNumber
	}
	return clusterAS
}

// Validate checks a node record; errors name the field and value.
func (n *Node) Validate() error {
	if n.V > NodeSchema {
		return fmt.Errorf("node %s: schema v%d is newer than this binary (v%d)", n.Name, n.V, NodeSchema)
	}
	if !nameRE.MatchString(n.Name) {
		return fmt.Errorf("name %q: must be lower-case letters, digits, '-' and '.'", n.Name)
	}
	for k, v := range n.Labels {
		if len(k) == 0 || len(k) > 317 || len(v) > 63 {
			return fmt.Errorf("labels: %.40q=%.40q: a key is 1-317 characters (prefix/name), a value at most 63", k, v)
		}
	}
	if n.IPv4Address == "" && n.IPv6Address == "" {
		return fmt.Errorf("node %s: needs ipv4Address or ipv6Address", n.Name)
	}
	if n.IPv4Address != "" {
		if _, ok := n.IPv4(); !ok {
			return fmt.Errorf("ipv4Address %q: want an IPv4 address with prefix length, e.g. 192.0.2.10/24", n.IPv4Address)
		}
	}
	if n.IPv6Address != "" {
		if _, ok := n.IPv6(); !ok {
			return fmt.Errorf("ipv6Address %q: want an IPv6 address with prefix length", n.IPv6Address)
		}
	}
	if n.RouteReflectorClusterID != "" {
		if a, err := netip.ParseAddr(n.RouteReflectorClusterID); err != nil || !a.Is4() {
			return fmt.Errorf("routeReflectorClusterID %q: want a dotted quad, e.g. 224.0.0.1", n.RouteReflectorClusterID)
		}
	}
	if v, ok := n.Labels[RouteReflectorLabel]; ok {
		if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
			return fmt.Errorf("label %s=%q: want a dotted quad, e.g. 224.0.0.1", RouteReflectorLabel, v)
		}
	}
	return nil
}

// UnmarshalNode decodes a stored node record.
func UnmarshalNode(data []byte) (Node, error) {
	var n Node
	if err := json.Unmarshal(data, &n); err != nil {
		return n, fmt.Errorf("decode node: %w", err)
	}
	return n, nil
}
