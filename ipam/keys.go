package ipam

import (
	"net/netip"
	"strings"
)

// Keys relative to Prefix, exactly as DESIGN.md lists them.
const (
	poolsPrefix    = "ippools/"
	blocksPrefix   = "ipam/blocks/"
	affinityPrefix = "ipam/affinity/"
	handlesPrefix  = "ipam/handles/"
	configKey      = "ipam/config"
	nodesPrefix    = "nodes/"
	endpointPrefix = "endpoints/"
	// reservationsPrefix holds IPReservations, next to the pools they
	// carve addresses out of.
	reservationsPrefix = "ipreservations/"
	// serviceCIDRsKey holds the Service CIDRs read from Kubernetes.
	serviceCIDRsKey = "kubernetes/servicecidrs"
)

// cidrKey writes a prefix with "-" for "/", so it is one key segment.
func cidrKey(p netip.Prefix) string { return strings.ReplaceAll(p.String(), "/", "-") }

func parseCIDRKey(s string) (netip.Prefix, error) {
	i := strings.LastIndex(s, "-")
	if i < 0 {
		return netip.ParsePrefix(s)
	}
	return netip.ParsePrefix(s[:i] + "/" + s[i+1:])
}

func poolKey(name string) string        { return poolsPrefix + name }
func reservationKey(name string) string { return reservationsPrefix + name }
func blockKey(p netip.Prefix) string    { return blocksPrefix + cidrKey(p) }
func affinityKey(node string, p netip.Prefix) string {
	return affinityPrefix + node + "/" + cidrKey(p)
}
func nodeAffinityPrefix(node string) string { return affinityPrefix + node + "/" }
func handleKey(id string) string            { return handlesPrefix + id }
func nodeKey(node string) string            { return nodesPrefix + node }
func endpointKey(node, id string) string    { return endpointPrefix + node + "/" + id }

// NodeClaimKey is the full key of a node's name claim: written by its
// brindled on a lease it keeps alive while it runs (bgpd.NameClaim), read
// by the Kubernetes controller before it releases a deleted Node.
func NodeClaimKey(node string) string { return Prefix + "nodeclaims/" + node }
