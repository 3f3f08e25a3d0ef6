package bgpd

import (
	"context"
	"fmt"
	"sort"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// PeerStatus is one session as `brindlectl node status` shows it.
type PeerStatus struct {
	Address string    `json:"address"`
	Name    string    `json:"name"`
	Kind    string    `json:"kind"`
	ASN     uint32    `json:"asn"`
	State   string    `json:"state"`
	Since   time.Time `json:"since,omitzero"`
	// Received counts what the peer sent; Accepted what of it passed the
	// import policy into the table.
	Received uint64 `json:"received"`
	Accepted uint64 `json:"accepted"`
}

// Sessions lists the sessions with their state and what each peer sent;
// cheap (no walk of the table), for the controller's loop.
func (sp *Speaker) Sessions(ctx context.Context) ([]PeerStatus, error) {
	sp.mu.Lock()
	specs := make(map[string]PeerSpec, len(sp.peers))
	for a, p := range sp.peers {
		specs[a.String()] = p
	}
	sp.mu.Unlock()
	var out []PeerStatus
	err := sp.s.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: false}, func(p *api.Peer) {
		ps := PeerStatus{Address: p.GetConf().GetNeighborAddress(), ASN: p.GetConf().GetPeerAsn()}
		if spec, ok := specs[ps.Address]; ok {
			ps.Name, ps.Kind = spec.Name, spec.Kind
		}
		ps.State = sessionState(p.GetState().GetSessionState())
		if up := p.GetTimers().GetState().GetUptime(); up != nil && ps.State == "Established" {
			ps.Since = up.AsTime()
		}
		for _, af := range p.GetAfiSafis() {
			ps.Received += af.GetState().GetReceived()
		}
		out = append(out, ps)
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

// Peers is Sessions with Accepted filled in: it walks the whole table, so
// it is for /status, not for the controller's loop.
func (sp *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	out, err := sp.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	// GoBGP's own "accepted" counts the peer-level policy only; what
	// passed brindle's (global) import policy is what reached the table.
	accepted, err := sp.tablePathsByPeer(ctx)
	for i := range out {
		out[i].Accepted = accepted[out[i].Address]
	}
	return out, err
}

// tablePathsByPeer counts the paths in the global table by the peer they
// came from.
func (sp *Speaker) tablePathsByPeer(ctx context.Context) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, fam := range []*api.Family{{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, {Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}} {
		err := sp.s.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam}, func(d *api.Destination) {
			for _, p := range d.Paths {
				if !p.IsWithdraw {
					out[p.NeighborIp]++
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Learned lists every path in the global table that came from a peer
// (best or not), as "prefix via nexthop from peer".
func (sp *Speaker) Learned(ctx context.Context) ([]string, error) {
	var out []string
	for _, fam := range []*api.Family{{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, {Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}} {
		err := sp.s.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam}, func(d *api.Destination) {
			for _, p := range d.Paths {
				if p.IsWithdraw || p.NeighborIp == "<nil>" || p.NeighborIp == "" {
					continue
				}
				pfx, nh, err := parsePath(p)
				if err == nil {
					out = append(out, fmt.Sprintf("%s via %s from %s", pfx, nh, p.NeighborIp))
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}

func sessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_ESTABLISHED:
		return "Established"
	case api.PeerState_IDLE:
		return "Idle"
	case api.PeerState_CONNECT:
		return "Connect"
	case api.PeerState_ACTIVE:
		return "Active"
	case api.PeerState_OPENSENT:
		return "OpenSent"
	case api.PeerState_OPENCONFIRM:
		return "OpenConfirm"
	}
	return "Unknown"
}
