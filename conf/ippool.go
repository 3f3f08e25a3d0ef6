package conf

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"sigs.k8s.io/yaml"
)

// APIVersion is the apiVersion of brindle's YAML documents.
const APIVersion = "brindle.net/v1"

// KindIPPool is the kind of an IPPool document.
const KindIPPool = "IPPool"

// EncapMode says when traffic to a pool's addresses on another node is encapsulated.
type EncapMode string

// The encapsulation modes of ipipMode and vxlanMode.
const (
	EncapNever       EncapMode = "Never"
	EncapAlways      EncapMode = "Always"
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// Default block sizes: 64 addresses per block in both families, as Calico does.
const (
	DefaultBlockSizeV4 = 26
	DefaultBlockSizeV6 = 122
)

// Block size bounds. A block must be small enough to be one etcd value (a
// /20 is 4096 addresses) and no smaller than 4 addresses.
const (
	MinBlockSizeV4 = 20
	MaxBlockSizeV4 = 30
	MinBlockSizeV6 = 116
	MaxBlockSizeV6 = 126
)

// SelectAll is the node selector that matches every node.
const SelectAll = "all()"

// PoolUse is what a pool's addresses may be assigned to automatically
// (Calico's allowedUses).
type PoolUse string

// The uses of allowedUses. A pool named explicitly (an annotation, the ipam
// config's ipv4_pools) or an address requested explicitly is used whatever
// its allowedUses say, as in Calico.
const (
	UseWorkload PoolUse = "Workload"
	UseTunnel   PoolUse = "Tunnel"
)

// AssignmentMode says whether a pool is used for automatic assignment
// (Calico's assignmentMode).
type AssignmentMode string

// The assignment modes: Manual pools hand out addresses only to requests
// that name the pool or the address.
const (
	AssignAutomatic AssignmentMode = "Automatic"
	AssignManual    AssignmentMode = "Manual"
)

// ObjectMeta is the metadata of a brindle document, the subset of the
// Kubernetes field that brindle uses.
type ObjectMeta struct {
	Name string `json:"name"`
}

// IPPool is a range of pod addresses that nodes claim blocks from.
type IPPool struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       IPPoolSpec `json:"spec"`
}

// IPPoolSpec holds the settings of an IPPool. After Default every field holds
// the value in force, so that a stored pool says exactly how it behaves.
type IPPoolSpec struct {
	CIDR         string    `json:"cidr"`
	BlockSize    int       `json:"blockSize"`
	IPIPMode     EncapMode `json:"ipipMode"`
	VXLANMode    EncapMode `json:"vxlanMode"`
	NATOutgoing  bool      `json:"natOutgoing"`
	NodeSelector string    `json:"nodeSelector"`
	Disabled     bool      `json:"disabled"`
	// DisableBGPExport keeps the pool's blocks and addresses from being
	// announced to BGP peers outside the cluster (BGPPeer); brindle's own
	// nodes still learn them, so the pods stay reachable in the cluster.
	DisableBGPExport bool `json:"disableBGPExport"`
	// AllowedUses lists what the pool's addresses are assigned to
	// automatically: pods (Workload), tunnel addresses (Tunnel), or both.
	AllowedUses []PoolUse `json:"allowedUses"`
	// AssignmentMode Manual keeps the pool out of automatic assignment.
	AssignmentMode AssignmentMode `json:"assignmentMode"`
}

// Allows reports whether the pool may be used automatically for use.
func (s *IPPoolSpec) Allows(use PoolUse) bool {
	if s.AssignmentMode == AssignManual {
		return false
	}
	for _, u := range s.AllowedUses {
		if u == use {
			return true
		}
	}
	return false
}

// nameRE matches DNS-subdomain names, as `^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`
// would. It is written out by hand: compiling that regexp costs ~0.5 ms at
// every start of the CNI plugin, which is started for every pod.
var nameRE dnsName

type dnsName struct{}

// MatchString reports whether s is a valid name.
func (dnsName) MatchString(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '-' && c != '.' {
			return false
		}
	}
	return alnum(s[0]) && alnum(s[len(s)-1])
}

// ParseIPPools reads one or more YAML (or JSON) documents separated by "---",
// applies defaults and validates each pool on its own. Overlap between pools
// is checked by ValidatePools.
func ParseIPPools(data []byte) ([]IPPool, error) {
	var pools []IPPool
	for i, doc := range splitYAMLDocs(string(data)) {
		var p IPPool
		head, err := docHead(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		switch {
		case head.Kind == KindIPReservation:
			return nil, fmt.Errorf("document %d: kind %q: apply reservations with `brindlectl reservation apply`", i+1, head.Kind)
		case head.Kind != KindIPPool:
			return nil, fmt.Errorf("document %d: kind %q: want %q", i+1, head.Kind, KindIPPool)
		case IsCalicoAPIVersion(head.APIVersion):
			if p, err = calicoPool([]byte(doc)); err != nil {
				return nil, fmt.Errorf("document %d (%s IPPool): %w", i+1, head.APIVersion, err)
			}
		default:
			if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
		}
		p.Default()
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		pools = append(pools, p)
	}
	if len(pools) == 0 {
		return nil, fmt.Errorf("no IPPool documents found")
	}
	return pools, nil
}

func splitYAMLDocs(s string) []string {
	var docs []string
	var cur []string
	flush := func() {
		d := strings.TrimSpace(strings.Join(cur, "\n"))
		cur = nil
		if d != "" && !allComments(d) {
			docs = append(docs, d)
		}
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimRight(line, " \t\r") == "---" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

func allComments(d string) bool {
	for _, l := range strings.Split(d, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// Default fills every unset field with its default, so the stored document
// shows the settings in force. It is the only place pool defaults live.
func (p *IPPool) Default() {
	if p.APIVersion == "" {
		p.APIVersion = APIVersion
	}
	if p.Kind == "" {
		p.Kind = KindIPPool
	}
	if p.Spec.BlockSize == 0 {
		p.Spec.BlockSize = DefaultBlockSizeV4
		if pfx, err := netip.ParsePrefix(p.Spec.CIDR); err == nil && pfx.Addr().Is6() {
			p.Spec.BlockSize = DefaultBlockSizeV6
		}
	}
	if p.Spec.IPIPMode == "" {
		p.Spec.IPIPMode = EncapNever
	}
	if p.Spec.VXLANMode == "" {
		p.Spec.VXLANMode = EncapNever
	}
	if strings.TrimSpace(p.Spec.NodeSelector) == "" {
		p.Spec.NodeSelector = SelectAll
	}
	if len(p.Spec.AllowedUses) == 0 {
		p.Spec.AllowedUses = []PoolUse{UseWorkload, UseTunnel}
	}
	if p.Spec.AssignmentMode == "" {
		p.Spec.AssignmentMode = AssignAutomatic
	}
}

var (
	linkLocal4 = netip.MustParsePrefix("169.254.0.0/16")
	linkLocal6 = netip.MustParsePrefix("fe80::/10")
	loopback4  = netip.MustParsePrefix("127.0.0.0/8")
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
)

// Prefix returns the pool's CIDR. It is valid only after Validate succeeded.
func (p *IPPool) Prefix() netip.Prefix {
	pfx, _ := netip.ParsePrefix(p.Spec.CIDR)
	return pfx
}

// Validate checks one pool (after Default). Every error names the field and
// the value that is wrong.
func (p *IPPool) Validate() error {
	if p.APIVersion != APIVersion {
		return fmt.Errorf("apiVersion %q: want %q", p.APIVersion, APIVersion)
	}
	if p.Kind != KindIPPool {
		return fmt.Errorf("kind %q: want %q", p.Kind, KindIPPool)
	}
	if !nameRE.MatchString(p.Metadata.Name) {
		return fmt.Errorf("metadata.name %q: must be a DNS subdomain (lower case letters, digits, '-' and '.')", p.Metadata.Name)
	}
	s := p.Spec
	pfx, err := netip.ParsePrefix(s.CIDR)
	if err != nil {
		return fmt.Errorf("spec.cidr %q: %w", s.CIDR, err)
	}
	if pfx.Masked() != pfx {
		return fmt.Errorf("spec.cidr %q: host bits set (did you mean %s?)", s.CIDR, pfx.Masked())
	}
	if pfx.Addr().Is4In6() {
		return fmt.Errorf("spec.cidr %q: IPv4-mapped IPv6 is not allowed; write the IPv4 form", s.CIDR)
	}
	for _, bad := range []struct {
		pfx  netip.Prefix
		what string
	}{
		{linkLocal4, "link-local 169.254.0.0/16 (the pod gateway lives there)"},
		{linkLocal6, "link-local fe80::/10"},
		{loopback4, "loopback 127.0.0.0/8"},
		{multicast4, "multicast 224.0.0.0/4"},
		{multicast6, "multicast ff00::/8"},
	} {
		if bad.pfx.Overlaps(pfx) {
			return fmt.Errorf("spec.cidr %q: overlaps %s", s.CIDR, bad.what)
		}
	}
	if pfx.Addr().Is6() && pfx.Contains(netip.IPv6Loopback()) {
		return fmt.Errorf("spec.cidr %q: contains the loopback ::1", s.CIDR)
	}
	if pfx.Bits() == 0 {
		return fmt.Errorf("spec.cidr %q: a pool cannot be the whole address space", s.CIDR)
	}
	lo, hi := MinBlockSizeV4, MaxBlockSizeV4
	if pfx.Addr().Is6() {
		lo, hi = MinBlockSizeV6, MaxBlockSizeV6
	}
	if s.BlockSize < lo || s.BlockSize > hi {
		return fmt.Errorf("spec.blockSize %d: out of range %d-%d for %s", s.BlockSize, lo, hi, s.CIDR)
	}
	if s.BlockSize < pfx.Bits() {
		return fmt.Errorf("spec.blockSize %d: a block is larger than the pool %s", s.BlockSize, s.CIDR)
	}
	for field, m := range map[string]EncapMode{"spec.ipipMode": s.IPIPMode, "spec.vxlanMode": s.VXLANMode} {
		switch m {
		case EncapNever, EncapAlways, EncapCrossSubnet:
		default:
			return fmt.Errorf("%s %q: must be one of Never, Always, CrossSubnet", field, m)
		}
	}
	if s.IPIPMode != EncapNever && s.VXLANMode != EncapNever {
		return fmt.Errorf("spec.ipipMode %q and spec.vxlanMode %q: only one encapsulation may be enabled", s.IPIPMode, s.VXLANMode)
	}
	if s.IPIPMode != EncapNever && pfx.Addr().Is6() {
		return fmt.Errorf("spec.ipipMode %q: IPIP carries IPv4 only; %s is IPv6", s.IPIPMode, s.CIDR)
	}
	if _, err := ParseSelector(s.NodeSelector); err != nil {
		return fmt.Errorf("spec.nodeSelector %q: %w", s.NodeSelector, err)
	}
	seen := map[PoolUse]bool{}
	for _, u := range s.AllowedUses {
		switch u {
		case UseWorkload, UseTunnel:
		case "LoadBalancer":
			return fmt.Errorf("spec.allowedUses %q: brindle does not assign Service load-balancer addresses; want Workload and/or Tunnel", u)
		default:
			return fmt.Errorf("spec.allowedUses %q: want Workload and/or Tunnel", u)
		}
		if seen[u] {
			return fmt.Errorf("spec.allowedUses %q: listed twice", u)
		}
		seen[u] = true
	}
	switch s.AssignmentMode {
	case AssignAutomatic, AssignManual:
	default:
		return fmt.Errorf("spec.assignmentMode %q: must be Automatic or Manual", s.AssignmentMode)
	}
	return nil
}

// ValidatePools checks that no two pools overlap and that names are unique.
// Each pool must already be valid on its own.
func ValidatePools(pools []IPPool) error {
	for i := range pools {
		for j := i + 1; j < len(pools); j++ {
			a, b := &pools[i], &pools[j]
			if a.Metadata.Name == b.Metadata.Name {
				return fmt.Errorf("metadata.name %q: two pools with the same name", a.Metadata.Name)
			}
			if a.Prefix().Overlaps(b.Prefix()) {
				return fmt.Errorf("spec.cidr %q of pool %q: overlaps pool %q (%s)", a.Spec.CIDR, a.Metadata.Name, b.Metadata.Name, b.Spec.CIDR)
			}
		}
	}
	return nil
}

// MarshalPool encodes a pool as the JSON stored in etcd.
func MarshalPool(p IPPool) ([]byte, error) {
	return json.Marshal(p)
}

// UnmarshalPool decodes a stored pool and re-applies defaults, so a pool
// written by an older version reads back with every setting in force.
func UnmarshalPool(data []byte) (IPPool, error) {
	var p IPPool
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("decode ippool: %w", err)
	}
	p.Default()
	return p, nil
}
