package bgpd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
)

// Names of the GoBGP objects that hold the import policy. A GoBGP prefix
// set holds one address family, so there is one per family.
const (
	importSet4   = "brindle-pools-v4"
	importSet6   = "brindle-pools-v6"
	importPolicy = "brindle-import"
)

func (r ImportRange) set() string {
	if r.Prefix.Addr().Is4() {
		return importSet4
	}
	return importSet6
}

// ImportRange is a range of prefixes the node accepts from peers: inside
// Prefix, with a length from MinLen to MaxLen.
type ImportRange struct {
	Prefix         netip.Prefix
	MinLen, MaxLen int
}

// Contains reports whether p falls in the range.
func (r ImportRange) Contains(p netip.Prefix) bool {
	return r.Prefix.Addr().Is4() == p.Addr().Is4() && p.Bits() >= r.MinLen && p.Bits() <= r.MaxLen && r.Prefix.Contains(p.Addr()) && p.Bits() >= r.Prefix.Bits()
}

func (r ImportRange) key() string { return fmt.Sprintf("%s/%d-%d", r.Prefix, r.MinLen, r.MaxLen) }

func (r ImportRange) api() *api.Prefix {
	return &api.Prefix{IpPrefix: r.Prefix.String(), MaskLengthMin: uint32(r.MinLen), MaskLengthMax: uint32(r.MaxLen)}
}

// setupImportPolicy installs a global import policy that accepts only the
// prefixes in the brindle-pools set and rejects everything else: a default
// route or another network's prefix from any peer never reaches the RIB.
func (sp *Speaker) setupImportPolicy(ctx context.Context) error {
	// GoBGP runs the global import policy on locally originated paths too:
	// the node's own exports are always let through.
	policy := &api.Policy{Name: importPolicy, Statements: []*api.Statement{{
		Name:       importPolicy + "-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	}}}
	for _, set := range []string{importSet4, importSet6} {
		if err := sp.s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: set}}); err != nil {
			return fmt.Errorf("import policy: defined set %s: %w", set, err)
		}
		policy.Statements = append(policy.Statements, &api.Statement{
			Name:       set + "-accept",
			Conditions: &api.Conditions{PrefixSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set}},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
		})
	}
	if err := sp.s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: policy, ReferExistingStatements: false}); err != nil {
		return fmt.Errorf("import policy: %w", err)
	}
	if err := sp.s.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_IMPORT, Policies: []*api.Policy{{Name: importPolicy}}, DefaultAction: api.RouteAction_REJECT,
	}}); err != nil {
		return fmt.Errorf("import policy: assignment: %w", err)
	}
	return nil
}

// SetImportRanges makes the accepted ranges exactly want, then asks every
// peer to resend (soft reset in) so that paths held back or accepted under
// the old ranges are judged again.
func (sp *Speaker) SetImportRanges(ctx context.Context, want []ImportRange) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	wantKeys := map[string]ImportRange{}
	for _, r := range want {
		wantKeys[r.key()] = r
	}
	add := map[string][]*api.Prefix{}
	del := map[string][]*api.Prefix{}
	for k, r := range wantKeys {
		if _, ok := sp.ranges[k]; !ok {
			add[r.set()] = append(add[r.set()], r.api())
		}
	}
	for k, r := range sp.ranges {
		if _, ok := wantKeys[k]; !ok {
			del[r.set()] = append(del[r.set()], r.api())
		}
	}
	if len(add) == 0 && len(del) == 0 {
		return nil
	}
	var errs []error
	for set, ps := range add {
		if err := sp.s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: set, Prefixes: ps}}); err != nil {
			errs = append(errs, fmt.Errorf("import ranges: add to %s: %w", set, err))
		}
	}
	for set, ps := range del {
		if err := sp.s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: set, Prefixes: ps}, All: false}); err != nil {
			errs = append(errs, fmt.Errorf("import ranges: delete from %s: %w", set, err))
		}
	}
	sp.ranges = wantKeys
	if len(sp.peers) > 0 {
		if err := sp.s.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_IN}); err != nil {
			errs = append(errs, fmt.Errorf("import ranges: soft reset: %w", err))
		}
	}
	return errors.Join(errs...)
}
