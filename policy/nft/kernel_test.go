package nft

import (
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
)

// listTable runs `nft list table inet brindle` in n.
func listTable(t *testing.T, n ns.NetNS, what ...string) string {
	t.Helper()
	args := append([]string{"--net=" + n.Path(), "nft"}, what...)
	if len(what) == 0 {
		args = append(args, "list", "table", "inet", TableName)
	}
	out, err := exec.Command("nsenter", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %v: %v\n%s", what, err, out)
	}
	return string(out)
}

func requireNft(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIP: needs the nft binary (Debian package nftables) to read the table back")
	}
}

func sampleProgram() *Program {
	a := netip.MustParseAddr
	return &Program{
		Endpoints: []Endpoint{
			{Veth: "bri0123456789ab", Addrs: []netip.Addr{a("10.0.0.5"), a("fd00::5")}, Name: "x/a", Ingress: []string{"aaaa"}, Egress: []string{"bbbb"}},
			{Veth: "bri0123456789ac", Addrs: []netip.Addr{a("10.0.0.6")}, Name: "x/b"},
		},
		Nodes: []netip.Addr{a("192.168.1.1"), a("192.168.1.2")},
		Policies: []Policy{
			{ID: "aaaa", Name: "x/allow-b", Ingress: []Rule{
				{Peers: []Range{AddrRange(a("10.0.0.6")), PrefixRange(netip.MustParsePrefix("10.1.0.0/16"))},
					Ports: []PortRange{{ProtoTCP, 80, 80}, {ProtoUDP, 53, 54}}},
				{AnyPeer: true, NamedPorts: true, Named: []NamedPort{{a("10.0.0.5"), ProtoTCP, 8080}}},
			}},
			{ID: "bbbb", Name: "x/deny-egress", Egress: []Rule{}},
		},
		LogGroup: 7,
	}
}

// parsed is a table as nft lists it: each chain's header and rules, each
// set's elements.
type parsed struct {
	chains map[string][]string
	elems  map[string][]string
}

var counterRE = regexp.MustCompile(` counter packets \d+ bytes \d+`)

func parseList(out string) parsed {
	p := parsed{chains: map[string][]string{}, elems: map[string][]string{}}
	var chain, set string
	var inElems bool
	var buf string
	for _, line := range strings.Split(out, "\n") {
		l := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(l, "chain "):
			chain, set = strings.Fields(l)[1], ""
			p.chains[chain] = []string{}
		case strings.HasPrefix(l, "set ") || strings.HasPrefix(l, "map "):
			set, chain = strings.Fields(l)[1], ""
			p.elems[set] = nil
		case l == "}" && !inElems:
			chain, set = "", ""
		case set != "" && (strings.HasPrefix(l, "elements = {") || inElems):
			buf += " " + strings.TrimPrefix(l, "elements = {")
			inElems = !strings.HasSuffix(l, "}")
			if !inElems {
				body := strings.TrimSuffix(strings.TrimSpace(buf), "}")
				for _, e := range strings.Split(body, ",") {
					if e = strings.TrimSpace(counterRE.ReplaceAllString(e, "")); e != "" {
						p.elems[set] = append(p.elems[set], e)
					}
				}
				sort.Strings(p.elems[set])
				buf = ""
			}
		case chain != "" && l != "":
			p.chains[chain] = append(p.chains[chain], l)
		}
	}
	return p
}

// want is what rs says nft should list.
func want(rs *Ruleset) parsed {
	p := parsed{chains: map[string][]string{}, elems: map[string][]string{}}
	for name, c := range rs.Chains {
		p.chains[name] = []string{}
		if c.Hook != nil {
			p.chains[name] = append(p.chains[name], fmt.Sprintf("type filter hook %s priority %s; policy accept;", hookName(*c.Hook), priorityName(c.Priority)))
		}
		for _, r := range c.Rules {
			p.chains[name] = append(p.chains[name], r.String())
		}
	}
	for name, s := range rs.Sets {
		p.elems[name] = s.Texts()
		if len(p.elems[name]) == 0 {
			p.elems[name] = nil
		}
	}
	return p
}

// checkKernel compares the kernel's table in n with rs, rule by rule and
// element by element: the expressions mean what the text says.
func checkKernel(t *testing.T, n ns.NetNS, rs *Ruleset) {
	t.Helper()
	got, exp := parseList(listTable(t, n)), want(rs)
	for name, rules := range exp.chains {
		if !slices.Equal(got.chains[name], rules) {
			t.Errorf("chain %s:\n got  %q\n want %q", name, got.chains[name], rules)
		}
	}
	for name := range got.chains {
		if _, ok := exp.chains[name]; !ok {
			t.Errorf("chain %s in the kernel, not in the ruleset", name)
		}
	}
	for name, es := range exp.elems {
		g, ok := got.elems[name]
		if !ok {
			t.Errorf("set %s missing", name)
		} else if !slices.Equal(g, es) {
			t.Errorf("set %s:\n got  %q\n want %q", name, g, es)
		}
	}
	for name := range got.elems {
		if _, ok := exp.elems[name]; !ok {
			t.Errorf("set %s in the kernel, not in the ruleset", name)
		}
	}
}

// TestKernelMatchesRender writes a ruleset and reads it back with nft:
// every rule and element is what Render's text says.
func TestKernelMatchesRender(t *testing.T) {
	requireNft(t)
	n := testenv.NewNS(t)
	w := &Writer{NetNS: int(n.Fd())}
	rs := Render(sampleProgram())
	ch, err := w.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Full {
		t.Errorf("first Apply: %s, want a full write", ch)
	}
	checkKernel(t, n, rs)
}

// TestKernelIncremental applies a sequence of programs; after each the
// kernel holds exactly the rendered table, and pod churn changes elements
// only.
func TestKernelIncremental(t *testing.T) {
	requireNft(t)
	n := testenv.NewNS(t)
	w := &Writer{NetNS: int(n.Fd())}
	a := netip.MustParseAddr
	p := sampleProgram()
	steps := []struct {
		name   string
		change func(p *Program)
		chains int // chains rewritten, added or removed
	}{
		{"first", func(*Program) {}, -1},
		{"same again", func(*Program) {}, 0},
		{"a pod comes", func(p *Program) {
			p.Endpoints = append(p.Endpoints, Endpoint{Veth: "bri0123456789ad", Addrs: []netip.Addr{a("10.0.0.7")}, Name: "x/c", Ingress: []string{"aaaa"}})
		}, 0},
		{"peer pods change", func(p *Program) {
			p.Policies[0].Ingress[0].Peers = []Range{AddrRange(a("10.0.0.7")), AddrRange(a("10.0.0.8")), PrefixRange(netip.MustParsePrefix("10.1.0.0/16"))}
			p.Policies[0].Ingress[1].Named = append(p.Policies[0].Ingress[1].Named, NamedPort{a("10.0.0.7"), ProtoTCP, 9090})
		}, 0},
		{"a pod leaves", func(p *Program) { p.Endpoints = p.Endpoints[1:] }, 0},
		{"a node joins", func(p *Program) { p.Nodes = append(p.Nodes, a("192.168.1.3")) }, 0},
		{"a policy is added", func(p *Program) {
			p.Policies = append(p.Policies, Policy{ID: "cccc", Name: "x/new", Ingress: []Rule{{AnyPeer: true, Ports: []PortRange{{ProtoTCP, 443, 443}}}}})
		}, 1},
		{"a pod gets five policies", func(p *Program) {
			p.Endpoints[0].Ingress = []string{"aaaa", "cccc", "aaaa", "cccc", "aaaa"}
		}, 1},
		{"a policy is removed", func(p *Program) {
			p.MinSlots = p.Slots()
			p.Endpoints[0].Ingress = []string{"aaaa"}
			p.Policies = p.Policies[:2]
		}, 1},
		{"every policy is removed", func(p *Program) {
			for i := range p.Endpoints {
				p.Endpoints[i].Ingress, p.Endpoints[i].Egress = nil, nil
			}
			p.Policies = nil
		}, 2},
		{"every policy is removed, no slots kept", func(p *Program) {
			p.MinSlots = [2]int{}
		}, 2},
	}
	for _, st := range steps {
		st.change(p)
		rs := Render(p)
		ch, err := w.Apply(rs)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		t.Logf("%s: %s", st.name, ch)
		if st.chains >= 0 && (ch.Full || ch.Chains != st.chains) {
			t.Errorf("%s: %s, want %d chains changed and no full write", st.name, ch, st.chains)
		}
		checkKernel(t, n, rs)
	}
}

// TestKernelRendererIncremental: a Renderer kept across a sequence of
// programs renders, at each step, exactly what a fresh Render does; the
// incremental transaction it leads to leaves the kernel with the same
// table (rule for rule, element for element) as a full rewrite of that
// program in another namespace.
func TestKernelRendererIncremental(t *testing.T) {
	requireNft(t)
	inc, ref := testenv.NewNS(t), testenv.NewNS(t)
	w := &Writer{NetNS: int(inc.Fd())}
	a := netip.MustParseAddr
	rev := uint64(100)
	bump := func(p *Program, i int) { rev++; p.Policies[i].Rev = rev }
	p := sampleProgram()
	p.Policies[0].Rev, p.Policies[1].Rev = 1, 2
	p.Policies = append(p.Policies, Policy{ID: "dddd", Name: "x/shared", Rev: 3, Ingress: []Rule{{PeerSet: "peer_s", Ports: []PortRange{{ProtoTCP, 80, 80}}}}})
	p.PeerSets = map[string][]Range{"peer_s": {AddrRange(a("10.0.0.6"))}}
	steps := []struct {
		name   string
		change func(p *Program)
	}{
		{"first", func(*Program) {}},
		{"same again", func(*Program) {}},
		{"a pod comes", func(p *Program) {
			p.Endpoints = append(p.Endpoints, Endpoint{Veth: "bri0123456789ad", Addrs: []netip.Addr{a("10.0.0.7")}, Name: "x/c", Ingress: []string{"aaaa"}})
		}},
		{"a policy's peers change", func(p *Program) {
			p.Policies[0].Ingress = slices.Clone(p.Policies[0].Ingress)
			p.Policies[0].Ingress[0].Peers = []Range{AddrRange(a("10.0.0.7")), AddrRange(a("10.0.0.8"))}
			bump(p, 0)
		}},
		{"a shared peer set changes", func(p *Program) {
			p.PeerSets = map[string][]Range{"peer_s": {AddrRange(a("10.0.0.6")), AddrRange(a("10.0.0.7"))}}
		}},
		{"a policy is added", func(p *Program) {
			p.Policies = append(p.Policies, Policy{ID: "cccc", Name: "x/new", Rev: 4, Ingress: []Rule{{AnyPeer: true, Ports: []PortRange{{ProtoTCP, 443, 443}}}}})
			p.Endpoints[1].Ingress = []string{"cccc"}
		}},
		{"a pod gets five policies", func(p *Program) {
			p.Endpoints[0].Ingress = []string{"aaaa", "cccc", "aaaa", "cccc", "dddd"}
		}},
		{"a policy changes shape", func(p *Program) {
			p.Policies[0].Ingress = []Rule{{AnyPeer: true, NamedPorts: true, Named: []NamedPort{{a("10.0.0.5"), ProtoUDP, 53}}}}
			p.Policies[0].Egress = []Rule{}
			bump(p, 0)
		}},
		{"a policy is removed", func(p *Program) {
			p.MinSlots = p.Slots()
			p.Endpoints[0].Ingress = []string{"aaaa"}
			p.Endpoints[1].Ingress = nil
			p.Policies = slices.Delete(slices.Clone(p.Policies), 3, 4)
		}},
		{"a pod leaves", func(p *Program) { p.Endpoints = slices.Clone(p.Endpoints[1:]) }},
		{"every policy is removed", func(p *Program) {
			for i := range p.Endpoints {
				p.Endpoints[i].Ingress, p.Endpoints[i].Egress = nil, nil
			}
			p.Policies, p.PeerSets, p.MinSlots = nil, nil, [2]int{}
		}},
	}
	var rd Renderer
	for _, st := range steps {
		st.change(p)
		rs := rd.Render(p)
		if got, want := rs.Text(), Render(p).Text(); got != want {
			t.Fatalf("%s: the Renderer's table differs from Render's:\n%s\nwant\n%s", st.name, got, want)
		}
		ch, err := w.Apply(rs)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		t.Logf("%s: %s", st.name, ch)
		if st.name != "first" && ch.Full {
			t.Errorf("%s: a full write, want an incremental one", st.name)
		}
		checkKernel(t, inc, rs)
		if _, err := (&Writer{NetNS: int(ref.Fd())}).Apply(Render(p)); err != nil {
			t.Fatalf("%s: full write: %v", st.name, err)
		}
		got, want := parseList(listTable(t, inc)), parseList(listTable(t, ref))
		if !maps.EqualFunc(got.chains, want.chains, slices.Equal) || !maps.EqualFunc(got.elems, want.elems, slices.Equal) {
			t.Errorf("%s: the kernel's table after the incremental write differs from a full write:\n%s\nwant\n%s", st.name, listTable(t, inc), listTable(t, ref))
		}
	}
}
