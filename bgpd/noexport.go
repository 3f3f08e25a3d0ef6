package bgpd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/brindle-net/brindle/conf"
)

// Names of the GoBGP objects behind disableBGPExport: pools whose blocks
// and addresses brindle's own nodes learn, but peers outside the cluster
// (BGPPeer) are never sent.
const (
	noExportSet4   = "brindle-noexport-v4"
	noExportSet6   = "brindle-noexport-v6"
	externalPeers  = "brindle-external-peers"
	exportPolicy   = "brindle-export"
	neverANeighbor = "0.0.0.0/32"
)

// setupExportPolicy installs a global export policy that rejects, toward
// the peers in the external set, every path inside a no-export pool.
// GoBGP judges an export's neighbor condition against the peer the path
// is sent to. An empty neighbor set would match every peer, so the set
// always holds an address no peer has.
func (sp *Speaker) setupExportPolicy(ctx context.Context) error {
	if err := sp.s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_NEIGHBOR, Name: externalPeers, List: []string{neverANeighbor}}}); err != nil {
		return fmt.Errorf("export policy: neighbor set: %w", err)
	}
	policy := &api.Policy{Name: exportPolicy}
	for _, set := range []string{noExportSet4, noExportSet6} {
		if err := sp.s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: set}}); err != nil {
			return fmt.Errorf("export policy: defined set %s: %w", set, err)
		}
		policy.Statements = append(policy.Statements, &api.Statement{
			Name: set + "-reject",
			Conditions: &api.Conditions{
				PrefixSet:   &api.MatchSet{Type: api.MatchSet_ANY, Name: set},
				NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: externalPeers},
			},
			Actions: &api.Actions{RouteAction: api.RouteAction_REJECT},
		})
	}
	if err := sp.s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: policy}); err != nil {
		return fmt.Errorf("export policy: %w", err)
	}
	if err := sp.s.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_EXPORT, Policies: []*api.Policy{{Name: exportPolicy}}, DefaultAction: api.RouteAction_ACCEPT,
	}}); err != nil {
		return fmt.Errorf("export policy: assignment: %w", err)
	}
	return nil
}

// NoExportPrefixes are the CIDRs of the pools with disableBGPExport.
func NoExportPrefixes(pools []conf.IPPool) []netip.Prefix {
	var out []netip.Prefix
	for i := range pools {
		if pools[i].Spec.DisableBGPExport {
			out = append(out, pools[i].Prefix())
		}
	}
	return out
}

// ExternalPeers are the addresses of the sessions with peers outside the
// cluster (BGPPeer), the ones no-export pools are kept from.
func ExternalPeers(peers []PeerSpec) []netip.Addr {
	var out []netip.Addr
	for _, p := range peers {
		if p.Kind == "bgppeer" {
			out = append(out, p.Address)
		}
	}
	return out
}

// SetNoExport makes the no-export pools and the external peers exactly
// these. Call it before SetPeers adds a peer, so that a new session is
// judged by the sets from its first update. GoBGP's soft reset out sends
// what a policy now accepts but never withdraws what it now rejects, so a
// session whose verdicts change (an established external peer when the
// pools change, or a peer that becomes or stops being external) is reset:
// a rare change of configuration, and graceful restart keeps its routes.
func (sp *Speaker) SetNoExport(ctx context.Context, pools []netip.Prefix, peers []netip.Addr) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	pools = slices.Clone(pools)
	peers = slices.Clone(peers)
	slices.SortFunc(pools, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	slices.SortFunc(peers, func(a, b netip.Addr) int { return a.Compare(b) })
	poolsChanged := !slices.Equal(pools, sp.noExport)
	if !poolsChanged && slices.Equal(peers, sp.external) {
		return nil
	}
	var errs []error
	replace := func(t api.DefinedType, name string, old, cur []*api.Prefix, oldList, curList []string) {
		if len(old) > 0 || len(oldList) > 0 {
			if err := sp.s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: t, Name: name, Prefixes: old, List: oldList}}); err != nil {
				errs = append(errs, fmt.Errorf("no-export: clear %s: %w", name, err))
			}
		}
		if len(cur) > 0 || len(curList) > 0 {
			if err := sp.s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: t, Name: name, Prefixes: cur, List: curList}}); err != nil {
				errs = append(errs, fmt.Errorf("no-export: fill %s: %w", name, err))
			}
		}
	}
	for _, fam := range []struct {
		set string
		v6  bool
	}{{noExportSet4, false}, {noExportSet6, true}} {
		replace(api.DefinedType_PREFIX, fam.set, noExportEntries(sp.noExport, fam.v6), noExportEntries(pools, fam.v6), nil, nil)
	}
	// The sentinel stays: only real peers come and go.
	replace(api.DefinedType_NEIGHBOR, externalPeers, nil, nil, hostPrefixes(sp.external), hostPrefixes(peers))
	reset := map[netip.Addr]bool{}
	for _, a := range peers {
		if poolsChanged && len(sp.noExport)+len(pools) > 0 || !slices.Contains(sp.external, a) {
			reset[a] = true
		}
	}
	for _, a := range sp.external {
		if !slices.Contains(peers, a) {
			reset[a] = true
		}
	}
	sp.noExport, sp.external = pools, peers
	for a := range reset {
		if _, ok := sp.peers[a]; !ok {
			continue // not a session yet: it starts under the new sets
		}
		sp.log.Info("resetting session: what may be exported to it changed", "peer", a)
		if err := sp.s.ResetPeer(ctx, &api.ResetPeerRequest{Address: a.String(), Communication: "brindle export policy changed"}); err != nil {
			errs = append(errs, fmt.Errorf("no-export: reset %s: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

func noExportEntries(pools []netip.Prefix, v6 bool) []*api.Prefix {
	var out []*api.Prefix
	for _, p := range pools {
		if p.Addr().Is6() == v6 {
			out = append(out, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Addr().BitLen())})
		}
	}
	return out
}

func hostPrefixes(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, netip.PrefixFrom(a, a.BitLen()).String())
	}
	return out
}
