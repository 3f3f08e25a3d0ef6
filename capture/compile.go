package capture

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/bpf"
)

// Filter is a compiled filter: classic BPF for Ethernet frames, attached to
// the packet socket in the kernel and run again in Go on what it delivers
// (the socket sees packets between bind and attach unfiltered).
type Filter struct {
	Expr string
	Prog []bpf.Instruction
	raw  []bpf.RawInstruction
	vm   *bpf.VM
}

// maxProgram is the kernel's BPF_MAXINSNS.
const maxProgram = 4096

// Compile compiles a tcpdump-style expression (see filter.go for the
// subset). "" accepts every packet.
func Compile(expr string) (*Filter, error) {
	tree, err := parseFilter(expr)
	if err != nil {
		return nil, err
	}
	prog := []bpf.Instruction{bpf.RetConstant{Val: 0xffffffff}}
	if tree != nil {
		if prog, err = codegen(lower(tree)); err != nil {
			return nil, &FilterError{Expr: expr, Msg: err.Error()}
		}
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, &FilterError{Expr: expr, Msg: err.Error()}
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		return nil, &FilterError{Expr: expr, Msg: err.Error()}
	}
	return &Filter{Expr: expr, Prog: prog, raw: raw, vm: vm}, nil
}

// Match runs the filter on an Ethernet frame.
func (f *Filter) Match(frame []byte) bool {
	n, err := f.vm.Run(frame)
	return err == nil && n > 0
}

// Raw is the assembled program for SO_ATTACH_FILTER.
func (f *Filter) Raw() []bpf.RawInstruction { return f.raw }

// RawSnap is Raw with accepted packets cut to snaplen bytes by the kernel
// (the value a socket filter returns is how much of the packet to keep).
func (f *Filter) RawSnap(snaplen uint32) []bpf.RawInstruction {
	out := make([]bpf.RawInstruction, len(f.raw))
	for i, r := range f.raw {
		if r.Op == 0x06 && r.K == 0xffffffff { // ret #k: accept
			r.K = snaplen
		}
		out[i] = r
	}
	return out
}

// Expression combines --filter with the simple flags: --protocol (tcp,
// udp, icmp, icmp6, sctp, arp) and --ports (a list of ports and LOW-HIGH
// ranges), all of which must hold.
func Expression(filter string, ports []string, protocol string) (string, error) {
	var parts []string
	if filter = strings.TrimSpace(filter); filter != "" {
		parts = append(parts, "("+filter+")")
	}
	switch protocol {
	case "":
	case "tcp", "udp", "icmp", "icmp6", "sctp", "arp":
		parts = append(parts, protocol)
	default:
		return "", fmt.Errorf("--protocol %q: want tcp, udp, icmp, icmp6, sctp or arp", protocol)
	}
	var alts []string
	for _, p := range ports {
		for _, p := range strings.Split(p, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			kind := "port"
			if strings.Contains(p, "-") {
				kind = "portrange"
			}
			if _, _, err := parsePorts(p, kind == "portrange"); err != nil {
				return "", fmt.Errorf("--ports %q: %w", p, err)
			}
			alts = append(alts, kind+" "+p)
		}
	}
	if len(alts) > 0 {
		parts = append(parts, "("+strings.Join(alts, " or ")+")")
	}
	return strings.Join(parts, " and "), nil
}

// test is a leaf of the lowered tree: loads, then a conditional jump that
// is taken when the condition holds.
type test struct {
	loads []bpf.Instruction
	cond  bpf.JumpTest
	val   uint32
}

func (t test) String() string { return fmt.Sprintf("%v %v %#x", t.loads, t.cond, t.val) }

func eq(off, size uint32, v uint32) test {
	return test{loads: []bpf.Instruction{bpf.LoadAbsolute{Off: off, Size: int(size)}}, cond: bpf.JumpEqual, val: v}
}

func masked(off uint32, mask, v uint32) test {
	if mask == 0xffffffff {
		return eq(off, 4, v)
	}
	return test{loads: []bpf.Instruction{bpf.LoadAbsolute{Off: off, Size: 4}, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask}}, cond: bpf.JumpEqual, val: v}
}

func allOf(ns ...node) node {
	out := ns[0]
	for _, n := range ns[1:] {
		out = andNode{out, n}
	}
	return out
}

func anyOf(ns ...node) node {
	out := ns[0]
	for _, n := range ns[1:] {
		out = orNode{out, n}
	}
	return out
}

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	etherARP  = 0x0806
)

var (
	isIPv4 = eq(12, 2, etherIPv4)
	isIPv6 = eq(12, 2, etherIPv6)
	isARP  = eq(12, 2, etherARP)
)

var protoNumbers = map[string]uint32{"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmp6": 58}

// lower turns a parsed filter into and/or/not of tests on frame bytes.
func lower(n node) node {
	switch n := n.(type) {
	case andNode:
		return andNode{lower(n.l), lower(n.r)}
	case orNode:
		return orNode{lower(n.l), lower(n.r)}
	case notNode:
		return notNode{lower(n.x)}
	case protoNode:
		switch n.name {
		case "ip":
			return isIPv4
		case "ip6":
			return isIPv6
		case "arp":
			return isARP
		case "icmp":
			return allOf(isIPv4, eq(23, 1, 1))
		case "icmp6":
			return allOf(isIPv6, eq(20, 1, 58))
		}
		p := protoNumbers[n.name]
		return anyOf(allOf(isIPv4, eq(23, 1, p)), allOf(isIPv6, eq(20, 1, p)))
	case hostNode:
		return lowerHost(n)
	case portNode:
		return lowerPort(n)
	case lenNode:
		l := []bpf.Instruction{bpf.LoadExtension{Num: bpf.ExtLen}}
		if n.greater {
			return test{loads: l, cond: bpf.JumpGreaterOrEqual, val: n.n}
		}
		return notNode{test{loads: l, cond: bpf.JumpGreaterThan, val: n.n}}
	}
	panic(fmt.Sprintf("capture: cannot lower %T", n))
}

// direction combines the src and dst tests as the qualifier says.
func direction(dir string, src, dst node) node {
	switch dir {
	case "src":
		return src
	case "dst":
		return dst
	case "src and dst":
		return andNode{src, dst}
	}
	return orNode{src, dst}
}

// prefixAt matches the prefix against the address at off (4 or 16 bytes).
func prefixAt(off uint32, p netip.Prefix) node {
	b := p.Addr().AsSlice()
	var tests []node
	bits := p.Bits()
	for w := 0; w < len(b)/4 && bits > 0; w++ {
		v := uint32(b[4*w])<<24 | uint32(b[4*w+1])<<16 | uint32(b[4*w+2])<<8 | uint32(b[4*w+3])
		n := min(bits, 32)
		mask := uint32(0xffffffff) << (32 - n)
		tests = append(tests, masked(off+uint32(4*w), mask, v&mask))
		bits -= n
	}
	if len(tests) == 0 { // net 0.0.0.0/0: the family alone
		return nil
	}
	return allOf(tests...)
}

func withFamily(fam test, n node) node {
	if n == nil {
		return fam
	}
	return andNode{fam, n}
}

func lowerHost(n hostNode) node {
	var alts []node
	if n.pfx.Addr().Is4() {
		if n.proto == "" || n.proto == "ip" {
			alts = append(alts, withFamily(isIPv4, nilSafeDir(n.dir, prefixAt(26, n.pfx), prefixAt(30, n.pfx))))
		}
		if n.proto == "" || n.proto == "arp" {
			// ARP sender and target protocol addresses.
			alts = append(alts, withFamily(isARP, nilSafeDir(n.dir, prefixAt(28, n.pfx), prefixAt(38, n.pfx))))
		}
	} else {
		alts = append(alts, withFamily(isIPv6, nilSafeDir(n.dir, prefixAt(22, n.pfx), prefixAt(38, n.pfx))))
	}
	return anyOf(alts...)
}

func nilSafeDir(dir string, src, dst node) node {
	if src == nil {
		return nil
	}
	return direction(dir, src, dst)
}

func lowerPort(n portNode) node {
	protos := []string{"tcp", "udp", "sctp"}
	if n.proto != "" {
		protos = []string{n.proto}
	}
	inRange := func(ld []bpf.Instruction) node {
		if n.lo == n.hi {
			return test{loads: ld, cond: bpf.JumpEqual, val: uint32(n.lo)}
		}
		return andNode{test{loads: ld, cond: bpf.JumpGreaterOrEqual, val: uint32(n.lo)},
			notNode{test{loads: ld, cond: bpf.JumpGreaterThan, val: uint32(n.hi)}}}
	}
	var fams []node
	if n.family != "ip6" {
		var ps []node
		for _, p := range protos {
			ps = append(ps, eq(23, 1, protoNumbers[p]))
		}
		// Only the first fragment carries the ports; the header length
		// is variable (X = 4*IHL).
		notFrag := notNode{test{loads: []bpf.Instruction{bpf.LoadAbsolute{Off: 20, Size: 2}}, cond: bpf.JumpBitsSet, val: 0x1fff}}
		ihl := bpf.LoadMemShift{Off: 14}
		src := inRange([]bpf.Instruction{ihl, bpf.LoadIndirect{Off: 14, Size: 2}})
		dst := inRange([]bpf.Instruction{ihl, bpf.LoadIndirect{Off: 16, Size: 2}})
		fams = append(fams, allOf(isIPv4, anyOf(ps...), notFrag, direction(n.dir, src, dst)))
	}
	if n.family != "ip" {
		// As libpcap does: the transport header right after the fixed
		// IPv6 header (no extension headers).
		var ps []node
		for _, p := range protos {
			ps = append(ps, eq(20, 1, protoNumbers[p]))
		}
		src := inRange([]bpf.Instruction{bpf.LoadAbsolute{Off: 54, Size: 2}})
		dst := inRange([]bpf.Instruction{bpf.LoadAbsolute{Off: 56, Size: 2}})
		fams = append(fams, allOf(isIPv6, anyOf(ps...), direction(n.dir, src, dst)))
	}
	return anyOf(fams...)
}

// label is a position in the program, resolved after generation.
type label int

// insn is an instruction, or a conditional jump to labels.
type insn struct {
	ins  bpf.Instruction
	jump bool
	cond bpf.JumpTest
	val  uint32
	t, f label
}

type gen struct {
	code   []insn
	labels []int
}

func (g *gen) label() label {
	g.labels = append(g.labels, -1)
	return label(len(g.labels) - 1)
}

func (g *gen) place(l label) { g.labels[l] = len(g.code) }

// emit generates code that jumps to t when n holds and to f when not.
func (g *gen) emit(n node, t, f label) {
	switch n := n.(type) {
	case andNode:
		m := g.label()
		g.emit(n.l, m, f)
		g.place(m)
		g.emit(n.r, t, f)
	case orNode:
		m := g.label()
		g.emit(n.l, t, m)
		g.place(m)
		g.emit(n.r, t, f)
	case notNode:
		g.emit(n.x, f, t)
	case test:
		for _, l := range n.loads {
			g.code = append(g.code, insn{ins: l})
		}
		g.code = append(g.code, insn{jump: true, cond: n.cond, val: n.val, t: t, f: f})
	default:
		panic(fmt.Sprintf("capture: cannot generate %T", n))
	}
}

// codegen generates the program: accept returns the whole packet (the
// socket's capture length truncates it), reject returns 0.
func codegen(n node) ([]bpf.Instruction, error) {
	g := &gen{}
	accept, reject := g.label(), g.label()
	g.emit(n, accept, reject)
	g.place(accept)
	g.code = append(g.code, insn{ins: bpf.RetConstant{Val: 0xffffffff}})
	g.place(reject)
	g.code = append(g.code, insn{ins: bpf.RetConstant{Val: 0}})
	if len(g.code) > maxProgram {
		return nil, fmt.Errorf("compiles to %d instructions, more than the kernel's %d", len(g.code), maxProgram)
	}
	out := make([]bpf.Instruction, len(g.code))
	for i, c := range g.code {
		if !c.jump {
			out[i] = c.ins
			continue
		}
		skip := func(l label) (uint8, error) {
			d := g.labels[l] - i - 1
			if d < 0 || d > 255 {
				return 0, fmt.Errorf("too long: a jump of %d instructions (at most 255); split it into several captures or simplify it", d)
			}
			return uint8(d), nil
		}
		st, err := skip(c.t)
		if err != nil {
			return nil, err
		}
		sf, err := skip(c.f)
		if err != nil {
			return nil, err
		}
		out[i] = bpf.JumpIf{Cond: c.cond, Val: c.val, SkipTrue: st, SkipFalse: sf}
	}
	return out, nil
}

// String lists the program, one instruction a line (for --debug output).
func (f *Filter) String() string {
	var b strings.Builder
	for i, ins := range f.Prog {
		b.WriteString(strconv.Itoa(i) + ": " + fmt.Sprint(ins) + "\n")
	}
	return b.String()
}
