package capture

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// A filter is a tcpdump-style expression, parsed here into a tree and
// compiled (compile.go) to classic BPF for Ethernet frames, with no libpcap.
// The subset, as tcpdump reads it:
//
//	primitive := [proto] [dir] host ADDR | [proto] [dir] net CIDR
//	           | [proto] [dir] port N | [proto] [dir] portrange N-M
//	           | ip | ip6 | arp | tcp | udp | sctp | icmp | icmp6
//	           | less N | greater N
//	proto := ip | ip6 | arp | tcp | udp | sctp   (before host/net/port)
//	dir   := src | dst | src or dst | src and dst
//	expr  := primitive | not expr | ! expr | expr and expr | expr && expr
//	       | expr or expr | expr || expr | ( expr )
//
// ADDR is an IPv4 or IPv6 address (no host names), CIDR a prefix or a
// bare address. Not supported, with an error that says so: ether/vlan/mpls
// qualifiers, byte-offset expressions (tcp[13] & 2 != 0), names for ports
// and protocols, and tcpdump's inheritance of a qualifier by a bare value
// ("host a or b": write "host a or host b").

// node is a parsed filter expression.
type node interface{ String() string }

type andNode struct{ l, r node }
type orNode struct{ l, r node }
type notNode struct{ x node }

// protoNode matches a protocol: ip, ip6, arp, or a transport protocol
// number (over IPv4 or IPv6) when transport is set.
type protoNode struct {
	name string
}

// hostNode matches an address (or a prefix, for net) in the given
// direction; proto restricts it to ip, ip6 or arp.
type hostNode struct {
	dir   string // "src", "dst", "src or dst", "src and dst"
	pfx   netip.Prefix
	net   bool
	proto string // "" (all that carry addresses), ip, ip6, arp
}

// portNode matches a port range in the given direction; proto is tcp, udp,
// sctp or "" (any of them); family is ip, ip6 or "" (both).
type portNode struct {
	dir    string
	lo, hi uint16
	proto  string
	family string
}

// lenNode is less N (len <= N) or greater N (len >= N).
type lenNode struct {
	greater bool
	n       uint32
}

func (n andNode) String() string   { return "(" + n.l.String() + " and " + n.r.String() + ")" }
func (n orNode) String() string    { return "(" + n.l.String() + " or " + n.r.String() + ")" }
func (n notNode) String() string   { return "not " + n.x.String() }
func (n protoNode) String() string { return n.name }
func (n hostNode) String() string {
	kind := "host"
	if n.net {
		kind = "net"
	}
	return strings.TrimSpace(n.proto+" "+n.dir+" "+kind) + " " + n.pfx.String()
}
func (n portNode) String() string {
	return strings.TrimSpace(n.family+" "+n.proto+" "+n.dir+" portrange") + fmt.Sprintf(" %d-%d", n.lo, n.hi)
}
func (n lenNode) String() string {
	if n.greater {
		return fmt.Sprintf("greater %d", n.n)
	}
	return fmt.Sprintf("less %d", n.n)
}

// FilterError is a filter that cannot be compiled; it names the expression
// and the word where reading stopped.
type FilterError struct {
	Expr string
	At   string // the offending word; "" at the end of the expression
	Msg  string
}

func (e *FilterError) Error() string {
	at := "at the end"
	if e.At != "" {
		at = fmt.Sprintf("at %q", e.At)
	}
	return fmt.Sprintf("filter %q: %s: %s", e.Expr, at, e.Msg)
}

// parseFilter parses a filter expression; "" matches everything (nil).
func parseFilter(expr string) (node, error) {
	p := &parser{expr: expr, toks: tokenize(expr)}
	if len(p.toks) == 0 {
		return nil, nil
	}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, p.errorf("want and, or or the end of the expression")
	}
	return n, nil
}

func tokenize(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '(' || c == ')':
			out = append(out, string(c))
			i++
		case c == '!' && (i+1 >= len(s) || s[i+1] != '='):
			out = append(out, "!")
			i++
		case strings.HasPrefix(s[i:], "&&") || strings.HasPrefix(s[i:], "||"):
			out = append(out, s[i:i+2])
			i += 2
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n()", rune(s[j])) && !strings.HasPrefix(s[j:], "&&") && !strings.HasPrefix(s[j:], "||") {
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

type parser struct {
	expr string
	toks []string
	i    int
}

func (p *parser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func (p *parser) next() string {
	t := p.peek()
	if p.i < len(p.toks) {
		p.i++
	}
	return t
}

// back steps back over v, the value just read, unless it was the end.
func (p *parser) back(v string) {
	if v != "" {
		p.i--
	}
}

func (p *parser) errorf(format string, args ...any) error {
	return &FilterError{Expr: p.expr, At: p.peek(), Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) or() (node, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.peek() == "or" || p.peek() == "||" {
		p.next()
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = orNode{l, r}
	}
	return l, nil
}

func (p *parser) and() (node, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.peek() == "and" || p.peek() == "&&" {
		p.next()
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = andNode{l, r}
	}
	return l, nil
}

func (p *parser) unary() (node, error) {
	switch p.peek() {
	case "not", "!":
		p.next()
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return notNode{x}, nil
	case "(":
		p.next()
		x, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, p.errorf("want )")
		}
		p.next()
		return x, nil
	case "":
		return nil, p.errorf("want a primitive (host, net, port, portrange, a protocol, less, greater)")
	}
	return p.primitive()
}

var transports = map[string]bool{"tcp": true, "udp": true, "sctp": true}

func (p *parser) primitive() (node, error) {
	proto := ""
	switch t := p.peek(); t {
	case "ip", "ip6", "arp", "tcp", "udp", "sctp", "icmp", "icmp6":
		proto = t
		p.next()
		switch p.peek() {
		case "src", "dst", "host", "net", "port", "portrange":
		default:
			return protoNode{proto}, nil
		}
		if proto == "icmp" || proto == "icmp6" {
			return nil, p.errorf("%s takes no host, net or port qualifier", proto)
		}
	case "less", "greater":
		p.next()
		v := p.next()
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			p.back(v)
			return nil, p.errorf("%s: want a length in bytes", t)
		}
		return lenNode{greater: t == "greater", n: uint32(n)}, nil
	case "ether", "vlan", "mpls", "pppoes", "geneve", "gateway", "broadcast", "multicast", "proto", "inbound", "outbound":
		return nil, p.errorf("%q is not in brindle's filter subset (docs/cli.md)", t)
	}
	dir := ""
	if t := p.peek(); t == "src" || t == "dst" {
		dir = p.next()
		if o := p.peek(); (o == "or" || o == "and") && p.i+1 < len(p.toks) {
			if other := p.toks[p.i+1]; (other == "src" || other == "dst") && other != dir {
				p.next()
				p.next()
				dir = "src " + o + " dst"
			}
		}
	}
	kind := p.next()
	switch kind {
	case "host", "net":
		if proto != "" && transports[proto] {
			p.i--
			return nil, p.errorf("%s %s: a transport protocol qualifies ports, not addresses", proto, kind)
		}
		v := p.next()
		pfx, err := parsePrefix(v, kind == "host")
		if err != nil {
			p.back(v)
			return nil, p.errorf("%s: want an IPv4 or IPv6 %s (%v)", kind, map[bool]string{true: "address", false: "prefix"}[kind == "host"], err)
		}
		if (proto == "ip" || proto == "arp") && !pfx.Addr().Is4() || proto == "ip6" && !pfx.Addr().Is6() {
			p.back(v)
			return nil, p.errorf("%s %s: address family does not match", proto, kind)
		}
		return hostNode{dir: dirOrBoth(dir), pfx: pfx, net: kind == "net", proto: proto}, nil
	case "port", "portrange":
		v := p.next()
		lo, hi, err := parsePorts(v, kind == "portrange")
		if err != nil {
			p.back(v)
			return nil, p.errorf("%s: %v", kind, err)
		}
		n := portNode{dir: dirOrBoth(dir), lo: lo, hi: hi}
		switch {
		case transports[proto]:
			n.proto = proto
		case proto == "ip" || proto == "ip6" || proto == "arp":
			p.back(v)
			p.back(kind)
			return nil, p.errorf("%s does not qualify a port (tcpdump refuses it too): write \"%s and %s ...\"", proto, proto, kind)
		}
		return n, nil
	case "":
		return nil, p.errorf("want host, net, port or portrange")
	}
	p.i--
	return nil, p.errorf("want host, net, port, portrange, a protocol (ip, ip6, arp, tcp, udp, sctp, icmp, icmp6), less, greater, not or (")
}

func dirOrBoth(d string) string {
	if d == "" {
		return "src or dst"
	}
	return d
}

func parsePrefix(s string, host bool) (netip.Prefix, error) {
	if !host && strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Is4In6() {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parsePorts(s string, isRange bool) (lo, hi uint16, err error) {
	one := func(v string) (uint16, error) {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q is not a port number (0-65535; names are not supported)", v)
		}
		return uint16(n), nil
	}
	if !isRange {
		p, err := one(s)
		return p, p, err
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want LOW-HIGH", s)
	}
	if lo, err = one(a); err != nil {
		return
	}
	if hi, err = one(b); err != nil {
		return
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("%q: low port above high port", s)
	}
	return lo, hi, nil
}
