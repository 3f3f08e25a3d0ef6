package nft

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
)

// ForwardComment marks the rules brindle puts into other tables' forward
// chains, so that they are found again and removed on uninstall.
const ForwardComment = "brindle: accept forwarding of pod traffic"

// ForeignChain is another table's forward chain with policy drop.
type ForeignChain struct {
	Family nftables.TableFamily
	Table  string
	Chain  string
}

func (f ForeignChain) String() string {
	return fmt.Sprintf("%s %s %s", familyName(f.Family), f.Table, f.Chain)
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprint(f)
}

// EnsureForwardAccept puts, at the top of every forward base chain of
// another table whose policy is drop (iptables' FORWARD on a host with
// Docker, a hardened host's firewall), one rule accepting packets from and
// one accepting packets to brindle's host veths. Netfilter runs every base
// chain of a hook and any drop is final, so an accept in table inet
// brindle alone cannot let pod traffic through such a chain; these two
// rules are the only thing brindle writes outside its own tables.
// brindle's own policy runs in its own base chains, whose drops stay
// final. It returns the chains it changed.
func (w *Writer) EnsureForwardAccept() ([]ForeignChain, error) {
	return w.forwardAccept(true)
}

// RemoveForwardAccept removes those rules from every chain (uninstall).
func (w *Writer) RemoveForwardAccept() ([]ForeignChain, error) {
	return w.forwardAccept(false)
}

func (w *Writer) forwardAccept(want bool) ([]ForeignChain, error) {
	c, err := w.conn()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	var changed []ForeignChain
	for _, ch := range chains {
		if ch.Table.Name == TableName && (ch.Table.Family == nftables.TableFamilyINet || ch.Table.Family == nftables.TableFamilyIPv4) {
			continue
		}
		if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward || ch.Type != nftables.ChainTypeFilter {
			continue
		}
		drops := ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return changed, fmt.Errorf("nftables: list %s: %w", ForeignChain{ch.Table.Family, ch.Table.Name, ch.Name}, err)
		}
		var ours []*nftables.Rule
		for _, r := range rules {
			if isOurs(r) {
				ours = append(ours, r)
			}
		}
		inPlace := len(ours) == 2 && len(rules) >= 2 && rules[0].Handle == ours[0].Handle && rules[1].Handle == ours[1].Handle
		if want && drops && inPlace {
			continue
		}
		if len(ours) == 0 && !(want && drops) {
			continue
		}
		for _, r := range ours {
			if err := c.DelRule(r); err != nil {
				return changed, err
			}
		}
		if want && drops {
			iptables := ch.Name == "FORWARD" && ch.Table.Name == "filter"
			// Inserted at the top, the second first.
			c.InsertRule(forwardRule(ch, false, iptables))
			c.InsertRule(forwardRule(ch, true, iptables))
		}
		if err := c.Flush(); err != nil {
			return changed, fmt.Errorf("nftables: %s: %w", ForeignChain{ch.Table.Family, ch.Table.Name, ch.Name}, err)
		}
		changed = append(changed, ForeignChain{ch.Table.Family, ch.Table.Name, ch.Name})
	}
	return changed, nil
}

// forwardRule is `iifname "bri*" accept` (or oifname), in the form
// iptables-nft writes for `-i bri+ -m comment --comment ... -j ACCEPT`
// when the chain is iptables' own, so that iptables (and Docker through
// it) still reads the table.
func forwardRule(ch *nftables.Chain, in, iptables bool) *nftables.Rule {
	key := expr.MetaKeyOIFNAME
	if in {
		key = expr.MetaKeyIIFNAME
	}
	prefix := []byte(strings.TrimSuffix(VethPattern, "*"))
	exprs := []expr.Any{&expr.Meta{Key: key, Register: reg1}, cmpEq(reg1, prefix)}
	r := &nftables.Rule{Table: ch.Table, Chain: ch}
	if iptables {
		comment := xt.Comment(ForwardComment)
		exprs = append(exprs, &expr.Match{Name: "comment", Rev: 0, Info: &comment})
	} else {
		r.UserData = userdata.AppendString(nil, userdata.TypeComment, ForwardComment)
	}
	r.Exprs = append(exprs, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept})
	return r
}

func isOurs(r *nftables.Rule) bool {
	if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && c == ForwardComment {
		return true
	}
	for _, e := range r.Exprs {
		if m, ok := e.(*expr.Match); ok && m.Name == "comment" {
			if c, ok := m.Info.(*xt.Comment); ok && string(*c) == ForwardComment {
				return true
			}
			if u, ok := m.Info.(*xt.Unknown); ok && bytes.Contains(*u, []byte(ForwardComment)) {
				return true
			}
		}
	}
	return false
}
