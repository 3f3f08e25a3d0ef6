package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/brindle-net/brindle/conf"
)

// PoolUsage summarises one pool for `brindlectl ipam show`.
type PoolUsage struct {
	Name     string `json:"name"`
	CIDR     string `json:"cidr"`
	Disabled bool   `json:"disabled"`
	Size     uint64 `json:"size"`
	Blocks   int    `json:"blocks"`
	InBlocks int    `json:"inBlocks"` // addresses in claimed blocks
	Used     int    `json:"used"`
}

// BlockUsage summarises one block.
type BlockUsage struct {
	CIDR     string `json:"cidr"`
	Pool     string `json:"pool"`
	Affinity string `json:"affinity"`
	State    string `json:"state"`
	Used     int    `json:"used"`
	Free     int    `json:"free"`
}

// snapshotAll is every IPAM record, read at one revision.
type snapshotAll struct {
	pools     []conf.IPPool
	blocks    []*Block
	affs      map[string]Affinity // key: node + "/" + cidr
	handles   map[string]*Handle
	endpoints map[string]*Endpoint // key: node + "/" + id
	nodes     map[string]bool
	bad       []string // records that do not decode: key and error
}

func (a *Allocator) readAll(ctx context.Context) (*snapshotAll, error) {
	res, err := a.Store.Read(ctx,
		Get{Key: poolsPrefix, Prefix: true},
		Get{Key: blocksPrefix, Prefix: true},
		Get{Key: affinityPrefix, Prefix: true},
		Get{Key: handlesPrefix, Prefix: true},
		Get{Key: endpointPrefix, Prefix: true},
		Get{Key: nodesPrefix, Prefix: true, KeysOnly: true})
	if err != nil {
		return nil, err
	}
	s := &snapshotAll{affs: map[string]Affinity{}, handles: map[string]*Handle{},
		endpoints: map[string]*Endpoint{}, nodes: map[string]bool{}}
	for _, kv := range res[0] {
		p, err := conf.UnmarshalPool(kv.Value)
		if err != nil {
			s.bad = append(s.bad, fmt.Sprintf("%s: %v", kv.Key, err))
			continue
		}
		s.pools = append(s.pools, p)
	}
	for _, kv := range res[1] {
		var b Block
		err := decode(kv, &b)
		if err == nil {
			if err = b.check(); err != nil {
				err = fmt.Errorf("%s: %w", kv.Key, err)
			}
		}
		if err != nil {
			s.bad = append(s.bad, err.Error())
			continue
		}
		s.blocks = append(s.blocks, &b)
	}
	sort.Slice(s.blocks, func(i, j int) bool { return s.blocks[i].CIDR.Addr().Less(s.blocks[j].CIDR.Addr()) })
	for _, kv := range res[2] {
		var af Affinity
		if err := decode(kv, &af); err != nil {
			s.bad = append(s.bad, err.Error())
			continue
		}
		s.affs[strings.TrimPrefix(kv.Key, affinityPrefix)] = af
	}
	for _, kv := range res[3] {
		var h Handle
		if err := decode(kv, &h); err != nil {
			s.bad = append(s.bad, err.Error())
			continue
		}
		s.handles[h.ID] = &h
	}
	for _, kv := range res[4] {
		var e Endpoint
		if err := decode(kv, &e); err != nil {
			s.bad = append(s.bad, err.Error())
			continue
		}
		s.endpoints[strings.TrimPrefix(kv.Key, endpointPrefix)] = &e
	}
	for _, kv := range res[5] {
		s.nodes[strings.TrimPrefix(kv.Key, nodesPrefix)] = true
	}
	return s, nil
}

// Usage reports every pool and block with used and free counts.
func (a *Allocator) Usage(ctx context.Context) ([]PoolUsage, []BlockUsage, error) {
	s, err := a.readAll(ctx)
	if err != nil {
		return nil, nil, err
	}
	var pools []PoolUsage
	for _, p := range s.pools {
		pfx := p.Prefix()
		u := PoolUsage{Name: p.Metadata.Name, CIDR: p.Spec.CIDR, Disabled: p.Spec.Disabled}
		if bits := pfx.Addr().BitLen() - pfx.Bits(); bits < 64 {
			u.Size = 1 << bits
		} else {
			u.Size = ^uint64(0)
		}
		for _, b := range s.blocks {
			if b.Pool == p.Metadata.Name && pfx.Contains(b.CIDR.Addr()) {
				u.Blocks++
				u.InBlocks += len(b.Allocations)
				u.Used += b.InUse()
			}
		}
		pools = append(pools, u)
	}
	sort.Slice(pools, func(i, j int) bool { return pools[i].Name < pools[j].Name })
	var blocks []BlockUsage
	for _, b := range s.blocks {
		state := ""
		if b.Affinity != "" {
			state = s.affs[b.Affinity+"/"+cidrKey(b.CIDR)].State
			if state == "" {
				state = "missing"
			}
		}
		blocks = append(blocks, BlockUsage{CIDR: b.CIDR.String(), Pool: b.Pool, Affinity: b.Affinity,
			State: state, Used: b.InUse(), Free: len(b.Free)})
	}
	return pools, blocks, nil
}

// IPInfo is what `brindlectl ipam show --ip` prints.
type IPInfo struct {
	IP        string            `json:"ip"`
	Pool      string            `json:"pool,omitempty"`
	Block     string            `json:"block,omitempty"`
	Affinity  string            `json:"affinity,omitempty"`
	Allocated bool              `json:"allocated"`
	Handle    string            `json:"handle,omitempty"`
	Seq       uint64            `json:"seq"`
	Attrs     map[string]string `json:"attrs,omitempty"`
}

// ShowIP reports who holds an address.
func (a *Allocator) ShowIP(ctx context.Context, ip netip.Addr) (IPInfo, error) {
	info := IPInfo{IP: ip.String()}
	pools, err := a.ListPools(ctx)
	if err != nil {
		return info, err
	}
	for _, p := range pools {
		if p.Prefix().Contains(ip) {
			info.Pool = p.Metadata.Name
		}
	}
	c, err := a.findBlock(ctx, ip)
	if err != nil {
		if info.Pool == "" {
			return info, fmt.Errorf("ip %s: not inside any pool", ip)
		}
		return info, nil // in a pool, but its block is not claimed
	}
	res, err := a.Store.Read(ctx, Get{Key: blockKey(c)})
	if err != nil || len(res[0]) == 0 {
		return info, err
	}
	var b Block
	if err := decode(res[0][0], &b); err != nil {
		return info, err
	}
	info.Block, info.Affinity = b.CIDR.String(), b.Affinity
	ord, _ := b.Ordinal(ip)
	info.Seq = b.Seqs[ord]
	if al := b.Allocations[ord]; al != nil {
		info.Allocated, info.Handle, info.Seq, info.Attrs = true, al.Handle, al.Seq, al.Attrs
	}
	return info, nil
}

// Leak is an allocation nothing uses: a pod handle with no endpoint, or a
// block allocation whose handle record is gone.
type Leak struct {
	IP     string `json:"ip"`
	Seq    uint64 `json:"seq"`
	Handle string `json:"handle"`
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// OrphanEndpoint is an endpoint record whose addresses are not allocated to it.
type OrphanEndpoint struct {
	Node      string   `json:"node"`
	ID        string   `json:"id"`
	Addresses []string `json:"addresses"`
}

// StaleBlock is a block claimed by a node that has no node record.
type StaleBlock struct {
	CIDR string `json:"cidr"`
	Node string `json:"node"`
	Used int    `json:"used"`
}

// CheckReport is the outcome of Check.
type CheckReport struct {
	Leaks       []Leak           `json:"leaks"`
	Orphans     []OrphanEndpoint `json:"orphanEndpoints"`
	StaleBlocks []StaleBlock     `json:"staleBlocks"`
	// NoNodes is set when no node record exists at all; then no block is
	// called stale, since brindled has evidently not registered any node.
	NoNodes bool `json:"noNodes"`
	// Unreadable lists records that do not decode (key and error): written
	// around brindle, they are left for the operator to look at.
	Unreadable []string `json:"unreadable,omitempty"`
}

// Clean reports whether the check found nothing.
func (r CheckReport) Clean() bool {
	return len(r.Leaks) == 0 && len(r.Orphans) == 0 && len(r.StaleBlocks) == 0 && len(r.Unreadable) == 0
}

// Check compares allocations, handles, endpoints and node records. Pod
// handles and endpoints are written in one transaction, so a mismatch is
// never an ADD in flight.
func (a *Allocator) Check(ctx context.Context) (CheckReport, error) {
	s, err := a.readAll(ctx)
	if err != nil {
		return CheckReport{}, err
	}
	var r CheckReport
	r.NoNodes = len(s.nodes) == 0
	r.Unreadable = s.bad
	for _, b := range s.blocks {
		if b.Affinity != "" && !r.NoNodes && !s.nodes[b.Affinity] {
			r.StaleBlocks = append(r.StaleBlocks, StaleBlock{CIDR: b.CIDR.String(), Node: b.Affinity, Used: b.InUse()})
		}
		for i, al := range b.Allocations {
			if al == nil {
				continue
			}
			ip := b.Addr(i)
			h := s.handles[al.Handle]
			switch {
			case h == nil:
				r.Leaks = append(r.Leaks, Leak{IP: ip.String(), Seq: al.Seq, Handle: al.Handle, Node: al.Attrs[AttrNode], Reason: "no handle record"})
			case h.Attrs[AttrContainerID] != "" && s.endpoints[h.Node+"/"+h.ID] == nil:
				r.Leaks = append(r.Leaks, Leak{IP: ip.String(), Seq: al.Seq, Handle: al.Handle, Node: h.Node, Reason: "no endpoint"})
			}
		}
	}
	for k, e := range s.endpoints {
		id := k[strings.IndexByte(k, '/')+1:]
		h := s.handles[id]
		if h == nil || h.Node != e.Node {
			r.Orphans = append(r.Orphans, OrphanEndpoint{Node: e.Node, ID: id, Addresses: e.Addresses})
		}
	}
	sort.Slice(r.Orphans, func(i, j int) bool { return r.Orphans[i].ID < r.Orphans[j].ID })
	return r, nil
}
