package nft

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// rule builds one nft rule: its expressions and, side by side, its text as
// `nft list table` prints it, so that tests can compare the two.
type rule struct {
	text     []string
	exprs    []expr.Any
	userData []byte
}

// Registers: 1 is the first 16-byte register; concatenations continue in
// the 4-byte registers that overlap it (NFT_REG32_00 is 8).
const (
	reg1   = 1
	reg32  = 8
	verReg = 0
)

func newRule() *rule { return &rule{} }

func (r *rule) add(text string, e ...expr.Any) *rule {
	if text != "" {
		r.text = append(r.text, text)
	}
	r.exprs = append(r.exprs, e...)
	return r
}

// String is the rule's nft text.
func (r *rule) String() string { return strings.Join(r.text, " ") }

func cmpEq(reg uint32, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: data}
}

// nfproto restricts the rule to one family (implicit in nft's text when
// an address match follows; nfprotoText says it).
func (r *rule) nfprotoText(v6 bool) *rule {
	r.nfproto(v6)
	r.text = append(r.text, map[bool]string{false: "meta nfproto ipv4", true: "meta nfproto ipv6"}[v6])
	return r
}

func (r *rule) nfproto(v6 bool) *rule {
	p := byte(unix.NFPROTO_IPV4)
	if v6 {
		p = unix.NFPROTO_IPV6
	}
	return r.add("", &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1}, cmpEq(reg1, []byte{p}))
}

// ifname matches the input (in) or output interface against a name,
// or, with a trailing *, a prefix.
func (r *rule) ifname(in, eq bool, name string) *rule {
	key, word := expr.MetaKeyOIFNAME, "oifname"
	if in {
		key, word = expr.MetaKeyIIFNAME, "iifname"
	}
	data := ifnameBytes(name)
	if prefix, ok := strings.CutSuffix(name, "*"); ok {
		data = []byte(prefix)
	}
	op, sym := expr.CmpOpEq, ""
	if !eq {
		op, sym = expr.CmpOpNeq, "!= "
	}
	return r.add(fmt.Sprintf("%s %s%q", word, sym, name),
		&expr.Meta{Key: key, Register: reg1}, &expr.Cmp{Op: op, Register: reg1, Data: data})
}

// ctEstablished matches replies and related packets of tracked connections.
func (r *rule) ctEstablished() *rule {
	return r.add("ct state established,related",
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)})
}

// field is one packet field a rule loads into a register.
type field int

const (
	fIIFName field = iota
	fOIFName
	fSaddr
	fDaddr
	fL4Proto
	fDport
)

func (f field) text(v6 bool) string {
	ip := "ip"
	if v6 {
		ip = "ip6"
	}
	return [...]string{"iifname", "oifname", ip + " saddr", ip + " daddr", "meta l4proto", "th dport"}[f]
}

// size is the field's length in bytes.
func (f field) size(v6 bool) uint32 {
	switch f {
	case fIIFName, fOIFName:
		return unix.IFNAMSIZ
	case fSaddr, fDaddr:
		if v6 {
			return 16
		}
		return 4
	case fL4Proto:
		return 1
	}
	return 2
}

func (f field) load(v6 bool, reg uint32) expr.Any {
	switch f {
	case fIIFName:
		return &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg}
	case fOIFName:
		return &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg}
	case fL4Proto:
		return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}
	case fDport:
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
	}
	off := uint32(12)
	if v6 {
		off = 8
	}
	if f == fDaddr {
		off += f.size(v6)
	}
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.size(v6)}
}

// lookup matches the concatenation of fields against set (negated: not in
// it), or, for a verdict map, jumps where the map says. Address fields need
// the family restricted first (nfproto).
func (r *rule) lookup(v6 bool, set string, neg, vmap bool, fields ...field) *rule {
	var names []string
	var loads []expr.Any
	off := uint32(0) // in 4-byte words from the start of register 1
	for i, f := range fields {
		reg := uint32(reg1)
		if i > 0 {
			reg = reg32 + off
		}
		loads = append(loads, f.load(v6, reg))
		names = append(names, f.text(v6))
		off += (f.size(v6) + 3) / 4
	}
	lk := &expr.Lookup{SourceRegister: reg1, SetName: set, Invert: neg}
	op := "@"
	switch {
	case vmap:
		lk.IsDestRegSet, lk.DestRegister = true, verReg
		op = "vmap @"
	case neg:
		op = "!= @"
	}
	r.exprs = append(r.exprs, loads...)
	return r.add(strings.Join(names, " . ")+" "+op+set, lk)
}

// l4proto matches the transport protocol; name is its nft text ("" when
// a later match implies it, as in `udp dport 4789`).
func (r *rule) l4proto(p uint8, name string) *rule {
	text := ""
	if name != "" {
		text = "meta l4proto " + name
	}
	return r.add(text, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1}, cmpEq(reg1, []byte{p}))
}

// payloadEq matches length bytes at offset of a header against data.
func (r *rule) payloadEq(text string, base expr.PayloadBase, offset uint32, data []byte) *rule {
	return r.add(text, &expr.Payload{DestRegister: reg1, Base: base, Offset: offset, Len: uint32(len(data))}, cmpEq(reg1, data))
}

// v6SaddrIn matches IPv6 sources in prefix (bits a multiple of 8 here).
func (r *rule) v6SaddrPrefix(text string, prefix []byte, bits int) *rule {
	mask := make([]byte, 16)
	for i := 0; i < bits; i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	want := make([]byte, 16)
	copy(want, prefix)
	return r.add(text,
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
		cmpEq(reg1, want))
}

func (r *rule) counterObj(name string) *rule {
	return r.add("counter name \""+name+"\"", &expr.Objref{Type: 1, Name: name})
}

// logSampled logs at most rate packets a second to nflog group.
func (r *rule) logSampled(rate uint32, group uint16, prefix string) *rule {
	return r.add(fmt.Sprintf("limit rate %d/second log prefix %q group %d", rate, prefix, group),
		&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(rate), Unit: expr.LimitTimeSecond, Burst: 5},
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: group, Data: []byte(prefix)})
}

func (r *rule) verdict(kind expr.VerdictKind) *rule {
	text := map[expr.VerdictKind]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop", expr.VerdictReturn: "return"}[kind]
	return r.add(text, &expr.Verdict{Kind: kind})
}

func (r *rule) jump(chain string) *rule {
	return r.add("jump "+chain, &expr.Verdict{Kind: expr.VerdictJump, Chain: chain})
}

// comment sets the rule's comment (its userdata, as nft writes it).
func (r *rule) comment(s string) *rule {
	r.userData = userdata.AppendString(r.userData, userdata.TypeComment, s)
	r.text = append(r.text, fmt.Sprintf("comment %q", s))
	return r
}

func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
