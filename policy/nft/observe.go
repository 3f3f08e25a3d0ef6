package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Generation is the kernel's nftables generation: it changes with every
// committed transaction, anyone's. Polling it is how a change behind the
// writer's back (an `nft flush ruleset`) is noticed cheaply.
//
// The socket is kept for the next call; one that failed is closed and the
// next call opens a new one.
func (w *Writer) Generation() (uint32, error) {
	w.genMu.Lock()
	defer w.genMu.Unlock()
	if w.gen == nil {
		c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: w.NetNS})
		if err != nil {
			return 0, fmt.Errorf("nftables: %w", err)
		}
		w.gen = c
	}
	msgs, err := w.gen.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		_ = w.gen.Close()
		w.gen = nil
		return 0, fmt.Errorf("nftables: get generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, fmt.Errorf("nftables: get generation: no generation in the answer")
}

// Check compares the kernel's table with the last ruleset applied: the same
// chains, each with as many rules (all chains when thorough, else the base
// and dispatch chains, where a flush shows first). An error says what
// differs; the caller then invalidates and rewrites.
func (w *Writer) Check(thorough bool) error {
	w.mu.Lock()
	applied := w.applied
	w.mu.Unlock()
	if applied == nil {
		return nil
	}
	c, err := w.conn()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables: list chains: %w", err)
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			have[ch.Name] = ch
		}
	}
	if len(have) == 0 {
		return ErrNoTable
	}
	for _, name := range sortedKeys(applied.Chains) {
		want := applied.Chains[name]
		ch, ok := have[name]
		if !ok {
			return fmt.Errorf("chain %s missing", name)
		}
		if !thorough && !core[name] {
			continue
		}
		rules, err := c.GetRules(Table, ch)
		if err != nil {
			return fmt.Errorf("nftables: list chain %s: %w", name, err)
		}
		if len(rules) != len(want.Rules) {
			return fmt.Errorf("chain %s has %d rules, want %d", name, len(rules), len(want.Rules))
		}
	}
	if len(have) != len(applied.Chains) {
		return fmt.Errorf("%d chains, want %d", len(have), len(applied.Chains))
	}
	return nil
}

var core = map[string]bool{"prerouting": true, "antispoof": true, "input": true, "forward_egress": true,
	"forward_ingress": true, "egress": true, "ingress": true, "underlay": true}

// Counters are the table's drop counters, as the kernel has them now
// (they restart from zero when the table is rewritten whole).
type Counters struct {
	// Named are the named counters (CounterSpoofed, ...), in packets.
	Named map[string]uint64
	// Ingress and Egress are the packets dropped per pod address because
	// no policy allowed them.
	Ingress, Egress map[netip.Addr]uint64
}

// ReadCounters reads the counters.
func (w *Writer) ReadCounters() (Counters, error) {
	out := Counters{Named: map[string]uint64{}, Ingress: map[netip.Addr]uint64{}, Egress: map[netip.Addr]uint64{}}
	c, err := w.conn()
	if err != nil {
		return out, fmt.Errorf("nftables: %w", err)
	}
	objs, err := c.GetObjects(Table)
	if err != nil {
		return out, fmt.Errorf("nftables: counters: %w", err)
	}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			out.Named[co.Name] = co.Packets
		}
	}
	for name, into := range map[string]map[netip.Addr]uint64{"ing_iso4": out.Ingress, "ing_iso6": out.Ingress, "egr_iso4": out.Egress, "egr_iso6": out.Egress} {
		es, err := c.GetSetElements(&nftables.Set{Table: Table, Name: name, KeyType: map[bool]nftables.SetDatatype{true: nftables.TypeIPAddr, false: nftables.TypeIP6Addr}[name[len(name)-1] == '4']})
		if err != nil {
			return out, fmt.Errorf("nftables: set %s: %w", name, err)
		}
		for _, e := range es {
			if a, ok := netip.AddrFromSlice(e.Key); ok && e.Counter != nil {
				into[a] += e.Counter.Packets
			}
		}
	}
	return out, nil
}
