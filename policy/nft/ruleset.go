package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/google/nftables"
)

// Ruleset is the whole of table inet brindle as data: what Render makes of
// a Program and what the writer diffs against the kernel's last state.
type Ruleset struct {
	Sets     map[string]*Set
	Chains   map[string]*Chain
	Counters []string // named counters
}

// Chain is one chain: a base chain when Hook is set.
type Chain struct {
	Name     string
	Hook     *nftables.ChainHook
	Priority int32
	Rules    []*rule
}

// Set is one named set or verdict map.
type Set struct {
	Name  string
	Kind  SetKind
	Elems []Elem // sorted by Text, no duplicates
}

// Elem is a set element in the kernel's encoding; Set.Text formats it as
// nft prints it. Only what differs between syncs is ever formatted, so
// that a sync of many elements costs no text.
type Elem struct {
	key    []byte
	keyEnd []byte // last key of a range (inclusive), else nil
	chain  string // a verdict map's jump target
}

// id identifies the element within its set.
func (e Elem) id() string { return string(e.key) + "\x00" + string(e.keyEnd) + "\x00" + e.chain }

// Text formats element e of s as nft lists it.
func (s *Set) Text(e Elem) string {
	addr := func(b []byte) netip.Addr { a, _ := netip.AddrFromSlice(b); return a }
	alen := 4
	switch s.Kind {
	case KindEndpoint6, KindPair6, KindAddr6, KindCounted6, KindRange6, KindNamed6, KindVmap6:
		alen = 16
	}
	switch s.Kind {
	case KindEndpoint4, KindEndpoint6:
		name := strings.TrimRight(string(e.key[:16]), "\x00")
		return fmt.Sprintf("%q . %s", name, addr(e.key[16:]))
	case KindPair4, KindPair6:
		return addr(e.key[:alen]).String() + " . " + addr(e.key[alen:]).String()
	case KindRange4, KindRange6:
		return Range{addr(e.key), addr(e.keyEnd)}.String()
	case KindPorts:
		first, last := binary.BigEndian.Uint16(e.key[4:6]), binary.BigEndian.Uint16(e.keyEnd[4:6])
		text := fmt.Sprintf("%s . %d", ProtoName(e.key[0]), first)
		if last != first {
			text += fmt.Sprintf("-%d", last)
		}
		return text
	case KindNamed4, KindNamed6:
		return fmt.Sprintf("%s . %s . %d", addr(e.key[:alen]), ProtoName(e.key[alen]), binary.BigEndian.Uint16(e.key[alen+4:alen+6]))
	case KindVmap4, KindVmap6:
		return addr(e.key).String() + " : jump " + e.chain
	}
	return addr(e.key).String()
}

// Texts formats every element, sorted.
func (s *Set) Texts() []string {
	out := make([]string, 0, len(s.Elems))
	for _, e := range s.Elems {
		out = append(out, s.Text(e))
	}
	sort.Strings(out)
	return out
}

// SetKind is a set's key type and flags.
type SetKind int

// The kinds of set the table uses.
const (
	KindEndpoint4 SetKind = iota // ifname . ipv4_addr
	KindEndpoint6                // ifname . ipv6_addr
	KindPair4                    // ipv4_addr . ipv4_addr
	KindPair6                    // ipv6_addr . ipv6_addr
	KindAddr4                    // ipv4_addr
	KindAddr6                    // ipv6_addr
	KindCounted4                 // ipv4_addr, a counter per element
	KindCounted6                 // ipv6_addr, a counter per element
	KindRange4                   // ipv4_addr, intervals
	KindRange6                   // ipv6_addr, intervals
	KindPorts                    // inet_proto . inet_service, intervals
	KindNamed4                   // ipv4_addr . inet_proto . inet_service
	KindNamed6                   // ipv6_addr . inet_proto . inet_service
	KindVmap4                    // ipv4_addr : verdict
	KindVmap6                    // ipv6_addr : verdict
)

var (
	ifname4  = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
	ifname6  = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)
	pair4    = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)
	pair6    = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeIP6Addr)
	ports    = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	named4   = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	named6   = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	kindDecl = map[SetKind]string{
		KindEndpoint4: "type ifname . ipv4_addr", KindEndpoint6: "type ifname . ipv6_addr",
		KindPair4: "type ipv4_addr . ipv4_addr", KindPair6: "type ipv6_addr . ipv6_addr",
		KindAddr4: "type ipv4_addr", KindAddr6: "type ipv6_addr",
		KindCounted4: "type ipv4_addr; counter", KindCounted6: "type ipv6_addr; counter",
		KindRange4: "type ipv4_addr; flags interval", KindRange6: "type ipv6_addr; flags interval",
		KindPorts:  "type inet_proto . inet_service; flags interval",
		KindNamed4: "type ipv4_addr . inet_proto . inet_service", KindNamed6: "type ipv6_addr . inet_proto . inet_service",
		KindVmap4: "type ipv4_addr : verdict", KindVmap6: "type ipv6_addr : verdict",
	}
)

// nftSet is the kernel's description of a set of kind k.
func (k SetKind) nftSet(t *nftables.Table, name string) *nftables.Set {
	s := &nftables.Set{Table: t, Name: name}
	switch k {
	case KindEndpoint4:
		s.KeyType, s.Concatenation = ifname4, true
	case KindEndpoint6:
		s.KeyType, s.Concatenation = ifname6, true
	case KindPair4:
		s.KeyType, s.Concatenation = pair4, true
	case KindPair6:
		s.KeyType, s.Concatenation = pair6, true
	case KindAddr4, KindCounted4:
		s.KeyType, s.Counter = nftables.TypeIPAddr, k == KindCounted4
	case KindAddr6, KindCounted6:
		s.KeyType, s.Counter = nftables.TypeIP6Addr, k == KindCounted6
	case KindRange4:
		s.KeyType, s.Interval = nftables.TypeIPAddr, true
	case KindRange6:
		s.KeyType, s.Interval = nftables.TypeIP6Addr, true
	case KindPorts:
		s.KeyType, s.Concatenation, s.Interval = ports, true, true
	case KindNamed4:
		s.KeyType, s.Concatenation = named4, true
	case KindNamed6:
		s.KeyType, s.Concatenation = named6, true
	case KindVmap4:
		s.KeyType, s.IsMap, s.DataType = nftables.TypeIPAddr, true, nftables.TypeVerdict
	case KindVmap6:
		s.KeyType, s.IsMap, s.DataType = nftables.TypeIP6Addr, true, nftables.TypeVerdict
	}
	return s
}

// rbtree: a plain interval set, whose ranges the kernel takes as a start
// element and an end element one past the range.
func (k SetKind) rbtree() bool { return k == KindRange4 || k == KindRange6 }

// nftElems encodes the elements for the kernel.
func (s *Set) nftElems() []nftables.SetElement {
	var out []nftables.SetElement
	for _, e := range s.Elems {
		switch {
		case s.Kind.rbtree():
			out = append(out, nftables.SetElement{Key: e.key})
			if end, ok := addrFromBytes(e.keyEnd); ok && end.Next().IsValid() {
				out = append(out, nftables.SetElement{Key: end.Next().AsSlice(), IntervalEnd: true})
			}
		case e.chain != "":
			out = append(out, nftables.SetElement{Key: e.key, VerdictData: jumpTo(e.chain)})
		default:
			out = append(out, nftables.SetElement{Key: e.key, KeyEnd: e.keyEnd})
		}
	}
	return out
}

func addrFromBytes(b []byte) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(b)
	return a, ok && len(b) > 0
}

// elements makes a sorted, duplicate-free element list (sorted by key,
// key end and jump target, compared in place: no text).
func elements(es []Elem) []Elem {
	if len(es) < 2 {
		return es
	}
	slices.SortFunc(es, compareElems)
	out := es[:1]
	for _, e := range es[1:] {
		if compareElems(e, out[len(out)-1]) != 0 {
			out = append(out, e)
		}
	}
	return out
}

func compareElems(a, b Elem) int {
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c
	}
	if c := bytes.Compare(a.keyEnd, b.keyEnd); c != 0 {
		return c
	}
	return strings.Compare(a.chain, b.chain)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func endpointElem(veth string, a netip.Addr) Elem {
	return Elem{key: append(ifnameBytes(veth), a.AsSlice()...)}
}

func pairElem(a, b netip.Addr) Elem {
	return Elem{key: append(a.AsSlice(), b.AsSlice()...)}
}

func addrElem(a netip.Addr) Elem { return Elem{key: a.AsSlice()} }

func rangeElem(r Range) Elem {
	return Elem{key: r.From.AsSlice(), keyEnd: r.To.AsSlice()}
}

// ProtoName is the name nftables gives a transport protocol number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	}
	return fmt.Sprint(p)
}

func portsElem(p PortRange) Elem {
	key := pad4([]byte{p.Proto})
	return Elem{
		key:    append(slices.Clone(key), pad4(binary.BigEndian.AppendUint16(nil, p.First))...),
		keyEnd: append(slices.Clone(key), pad4(binary.BigEndian.AppendUint16(nil, p.Last))...)}
}

func namedElem(n NamedPort) Elem {
	key := append(n.Addr.AsSlice(), pad4([]byte{n.Proto})...)
	return Elem{key: append(key, pad4(binary.BigEndian.AppendUint16(nil, n.Port))...)}
}

func vmapElem(a netip.Addr, chain string) Elem {
	return Elem{key: a.AsSlice(), chain: chain}
}

// Text is the ruleset as nft would list it, give or take the order of
// chains and sets (sorted by name here): for tests and `--dry-run`.
func (rs *Ruleset) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, c := range rs.Counters {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", c)
	}
	for _, name := range sortedKeys(rs.Sets) {
		s := rs.Sets[name]
		word := "set"
		if s.Kind == KindVmap4 || s.Kind == KindVmap6 {
			word = "map"
		}
		fmt.Fprintf(&b, "\t%s %s { %s", word, name, kindDecl[s.Kind])
		if len(s.Elems) > 0 {
			fmt.Fprintf(&b, "; elements = { %s }", strings.Join(s.Texts(), ", "))
		}
		b.WriteString(" }\n")
	}
	for _, name := range sortedKeys(rs.Chains) {
		c := rs.Chains[name]
		fmt.Fprintf(&b, "\tchain %s {\n", name)
		if c.Hook != nil {
			fmt.Fprintf(&b, "\t\ttype filter hook %s priority %s; policy accept;\n", hookName(*c.Hook), priorityName(c.Priority))
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// priorityName is a chain priority as nft prints it.
func priorityName(p int32) string {
	switch {
	case p == -300:
		return "raw"
	case p == 0:
		return "filter"
	case p < 0:
		return fmt.Sprintf("filter - %d", -p)
	}
	return fmt.Sprintf("filter + %d", p)
}

func hookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	}
	return fmt.Sprint(uint32(h))
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
