package ipam

import (
	"encoding/json"
	"fmt"
	"math/big"
	"net/netip"
	"time"
)

// SchemaVersion is written into every value as "v"; a reader refuses values
// from a newer schema rather than misread them.
const SchemaVersion = 1

// Allocation is one address in use.
type Allocation struct {
	Handle string            `json:"handle"`
	Seq    uint64            `json:"seq"`
	Attrs  map[string]string `json:"attrs,omitempty"`
}

// Block is a power-of-two range of a pool, claimed by one node (its
// affinity) and allocated address by address. Ordinal i is the i-th address
// of CIDR.
type Block struct {
	V        int          `json:"v"`
	CIDR     netip.Prefix `json:"cidr"`
	Pool     string       `json:"pool"`
	Affinity string       `json:"affinity,omitempty"`
	// Allocations[i] is nil when ordinal i is free.
	Allocations []*Allocation `json:"allocations"`
	// Seqs[i] counts the allocations of ordinal i; a release must name the
	// current one, so a stale release cannot free a reallocated address.
	Seqs []uint64 `json:"seqs"`
	// Free lists the free ordinals in the order they will be handed out:
	// released ordinals go to the back, so a freed address waits for every
	// other free address to be used first (old conntrack entries expire).
	Free []int `json:"free"`
}

// newBlock returns an empty block whose free list is in address order.
func newBlock(cidr netip.Prefix, pool, node string) *Block {
	n := blockLen(cidr)
	b := &Block{V: SchemaVersion, CIDR: cidr, Pool: pool, Affinity: node,
		Allocations: make([]*Allocation, n), Seqs: make([]uint64, n), Free: make([]int, n)}
	for i := range b.Free {
		b.Free[i] = i
	}
	return b
}

func blockLen(p netip.Prefix) int { return 1 << (p.Addr().BitLen() - p.Bits()) }

// Addr returns the address of ordinal i.
func (b *Block) Addr(i int) netip.Addr { return addrAdd(b.CIDR.Addr(), uint64(i)) }

// Ordinal returns the index of a in the block.
func (b *Block) Ordinal(a netip.Addr) (int, bool) {
	if !b.CIDR.Contains(a) {
		return 0, false
	}
	return int(addrDiff(a, b.CIDR.Addr())), true
}

// InUse counts allocated addresses.
func (b *Block) InUse() int { return len(b.Allocations) - len(b.Free) }

// take allocates the first free ordinal that skip does not refuse (or
// ordinal want when want >= 0). skip may be nil.
func (b *Block) take(want int, skip func(int) bool, handle string, attrs map[string]string) (int, uint64, bool) {
	pos := -1
	for j, o := range b.Free {
		if want >= 0 && o == want || want < 0 && (skip == nil || !skip(o)) {
			pos = j
			break
		}
	}
	if pos < 0 {
		return 0, 0, false
	}
	ord := b.Free[pos]
	b.Free = append(b.Free[:pos:pos], b.Free[pos+1:]...)
	b.Seqs[ord]++
	b.Allocations[ord] = &Allocation{Handle: handle, Seq: b.Seqs[ord], Attrs: attrs}
	return ord, b.Seqs[ord], true
}

// release frees ordinal i if it is still held by handle under seq, and
// reports whether it did; a mismatch is a stale release and changes nothing.
func (b *Block) release(i int, handle string, seq uint64) bool {
	a := b.Allocations[i]
	if a == nil || a.Handle != handle || a.Seq != seq {
		return false
	}
	b.Allocations[i] = nil
	b.Free = append(b.Free, i)
	return true
}

func (b *Block) check() error {
	if b.V > SchemaVersion {
		return fmt.Errorf("block %s: schema v%d is newer than this binary (v%d)", b.CIDR, b.V, SchemaVersion)
	}
	// Blocks are /20../30 (IPv4) or /116../126 (IPv6): at most 4096
	// addresses. Anything else was not written by brindle.
	if !b.CIDR.IsValid() || b.CIDR != b.CIDR.Masked() || b.CIDR.Addr().BitLen()-b.CIDR.Bits() > 12 {
		return fmt.Errorf("block %s: not a block's prefix", b.CIDR)
	}
	n := blockLen(b.CIDR)
	if len(b.Allocations) != n || len(b.Seqs) != n {
		return fmt.Errorf("block %s: %d allocations and %d seqs for %d addresses", b.CIDR, len(b.Allocations), len(b.Seqs), n)
	}
	// The free list names each unallocated ordinal exactly once: a bad one
	// would be handed out twice, or index past the block.
	free := make([]bool, n)
	for _, o := range b.Free {
		if o < 0 || o >= n || free[o] || b.Allocations[o] != nil {
			return fmt.Errorf("block %s: free list %v does not match its allocations", b.CIDR, b.Free)
		}
		free[o] = true
	}
	for i, a := range b.Allocations {
		if a == nil && !free[i] {
			return fmt.Errorf("block %s: ordinal %d is neither allocated nor free", b.CIDR, i)
		}
	}
	return nil
}

// Affinity states. Claims are atomic (block and affinity are created in one
// transaction), so "pending" is never left behind by brindle; it is kept for
// tools that stage claims. pendingDeletion marks an empty block that will be
// released once the grace period has passed, unless it is used again.
const (
	AffinityPending         = "pending"
	AffinityConfirmed       = "confirmed"
	AffinityPendingDeletion = "pendingDeletion"
)

// Affinity is a node's claim on a block.
type Affinity struct {
	V     int       `json:"v"`
	State string    `json:"state"`
	Since time.Time `json:"since"`
}

// HandleAddr is one address held by a handle.
type HandleAddr struct {
	Addr  netip.Addr   `json:"ip"`
	Block netip.Prefix `json:"block"`
	Seq   uint64       `json:"seq"`
}

// Handle records which addresses one attachment holds, so DEL can release
// them without scanning blocks.
type Handle struct {
	V     int               `json:"v"`
	ID    string            `json:"id"`
	Node  string            `json:"node"`
	Addrs []HandleAddr      `json:"addrs"`
	Attrs map[string]string `json:"attrs,omitempty"`
}

// Config is the cluster-wide IPAM configuration at ipam/config.
type Config struct {
	V int `json:"v"`
	// StrictAffinity forbids borrowing addresses from other nodes' blocks.
	StrictAffinity bool `json:"strictAffinity"`
	// MaxBlocksPerHost limits how many blocks one node claims; 0 is no limit.
	MaxBlocksPerHost int `json:"maxBlocksPerHost"`
	// ServiceCIDRs are the cluster's Service ranges, which no pool may
	// overlap (in Kubernetes brindled also publishes those of the API).
	ServiceCIDRs []string `json:"serviceCIDRs,omitempty"`
}

// Endpoint is a pod attachment as recorded at endpoints/<node>/<handle>.
type Endpoint struct {
	V           int      `json:"v"`
	Node        string   `json:"node"`
	Namespace   string   `json:"namespace,omitempty"`
	Pod         string   `json:"pod,omitempty"`
	ContainerID string   `json:"containerID"`
	IfName      string   `json:"ifname"`
	HostVeth    string   `json:"hostVeth"`
	Addresses   []string `json:"addresses"`
}

// Attribute names recorded on allocations and handles.
const (
	AttrNamespace   = "namespace"
	AttrPod         = "pod"
	AttrNode        = "node"
	AttrContainerID = "containerID"
	AttrIfName      = "ifname"
	// AttrNetwork is the CNI network's name: GC of one network releases
	// only that network's attachments.
	AttrNetwork = "network"
)

func decode(kv KV, v any) error {
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", v, err)) // only plain structs are marshalled
	}
	return b
}

func addrAdd(a netip.Addr, n uint64) netip.Addr {
	i := new(big.Int).SetBytes(a.AsSlice())
	i.Add(i, new(big.Int).SetUint64(n))
	buf := make([]byte, a.BitLen()/8)
	i.FillBytes(buf)
	out, _ := netip.AddrFromSlice(buf)
	return out
}

func addrDiff(a, b netip.Addr) uint64 {
	x := new(big.Int).SetBytes(a.AsSlice())
	x.Sub(x, new(big.Int).SetBytes(b.AsSlice()))
	return x.Uint64()
}
