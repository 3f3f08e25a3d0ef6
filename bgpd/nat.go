package bgpd

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// NATTable is the nftables table (family ip) brindle owns for NAT outgoing:
// `nft list table ip brindle`.
const NATTable = "brindle"

// NATRule is one rule of brindle's postrouting chain: its nft text and the
// expressions that make it.
type NATRule struct {
	Text  string
	Exprs []expr.Any
}

// NATRules are the rules for NAT outgoing: first a `return` for traffic to
// any pool (pod to pod is never masqueraded, whatever its source), then a
// masquerade for traffic from each pool that asks for it. Pure, so the
// rule set is unit-tested; the order of the arguments is kept.
func NATRules(natPools, allPools []netip.Prefix) []NATRule {
	if len(natPools) == 0 {
		return nil
	}
	var out []NATRule
	for _, p := range allPools {
		out = append(out, NATRule{Text: "ip daddr " + p.String() + " return",
			Exprs: append(matchIPv4(16, p), &expr.Verdict{Kind: expr.VerdictReturn})})
	}
	for _, p := range natPools {
		out = append(out, NATRule{Text: "ip saddr " + p.String() + " masquerade",
			Exprs: append(matchIPv4(12, p), &expr.Masq{})})
	}
	return out
}

// matchIPv4 matches the IPv4 header's address at offset (12 source, 16
// destination) against prefix p.
func matchIPv4(offset uint32, p netip.Prefix) []expr.Any {
	p = p.Masked()
	addr := p.Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
	}
}

// NAT keeps table ip brindle equal to the rules for a set of pools. Set is
// idempotent: it rewrites the table (atomically, in one nftables
// transaction) only when the rules change or the table went missing, and
// deletes the table when no pool asks for NAT.
type NAT struct {
	log  *slog.Logger
	mu   sync.Mutex
	last []string
}

// NewNAT manages NAT outgoing in the daemon's network namespace.
func NewNAT(log *slog.Logger) *NAT { return &NAT{log: log} }

// Set applies NAT outgoing for natPools (IPv4 pools with natOutgoing)
// among allPools (every IPv4 pool).
func (n *NAT) Set(natPools, allPools []netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	rules := NATRules(natPools, allPools)
	var texts []string
	for _, r := range rules {
		texts = append(texts, r.Text)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: NATTable}
	exists := false
	if t, err := c.ListTableOfFamily(NATTable, nftables.TableFamilyIPv4); err == nil && t != nil {
		exists = true
	}
	if len(rules) == 0 {
		n.last = nil
		if !exists {
			return nil
		}
		c.DelTable(table)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("nftables: delete table ip %s: %w", NATTable, err)
		}
		n.log.Info("NAT outgoing off: table removed", "table", NATTable)
		return nil
	}
	if exists && slices.Equal(texts, n.last) {
		return nil
	}
	if exists {
		c.DelTable(table)
	}
	c.AddTable(table)
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &policy})
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: r.Exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: write table ip %s: %w", NATTable, err)
	}
	n.last = texts
	n.log.Info("NAT outgoing rules written", "table", NATTable, "rules", texts)
	return nil
}
