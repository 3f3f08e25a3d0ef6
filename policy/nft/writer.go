package nft

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
)

// Writer keeps the kernel's table inet brindle equal to a Ruleset. Each
// Apply is one nftables transaction, which the kernel applies whole or not
// at all: the first (and any after Invalidate or a failure) replaces the
// table, later ones change only what differs from the last one applied —
// set elements for pod and label churn, a policy's chain when the policy
// changed. Nothing outside table inet brindle is touched.
type Writer struct {
	// NetNS, when not 0, is an open network namespace to write in (tests).
	NetNS int

	mu      sync.Mutex
	applied *Ruleset

	// gen is the socket Generation asks on, kept between polls (brindled
	// polls five times a second; a socket each time cost an idle node
	// 5-10% of its CPU in a 100-node lab).
	genMu sync.Mutex
	gen   *netlink.Conn
}

// Close releases the socket Generation keeps (a later Generation opens
// another).
func (w *Writer) Close() error {
	w.genMu.Lock()
	defer w.genMu.Unlock()
	if w.gen == nil {
		return nil
	}
	err := w.gen.Close()
	w.gen = nil
	return err
}

// Change counts what one Apply changed.
type Change struct {
	Full                     bool
	Chains, Sets             int
	AddedElems, RemovedElems int
	// Tightening says the change may deny a connection the table allowed
	// before (a pod newly isolated, a peer, port or policy gone, a chain
	// rewritten): established connections then need checking against the
	// new policy. Endpoints and nodes coming and going are not.
	Tightening bool
}

func (c Change) String() string {
	return fmt.Sprintf("full=%v chains=%d sets=%d +%d/-%d elements tightening=%v", c.Full, c.Chains, c.Sets, c.AddedElems, c.RemovedElems, c.Tightening)
}

// Table is brindle's filter table.
var Table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

// conn opens a netlink connection with socket buffers large enough for a
// full table's batch and its acknowledgements.
func (w *Writer) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		_ = c.SetWriteBuffer(16 << 20)
		_ = c.SetReadBuffer(16 << 20)
		return nil
	})}
	if w.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(w.NetNS))
	}
	return nftables.New(opts...)
}

// Invalidate makes the next Apply replace the whole table: after the
// table was changed behind the writer's back.
func (w *Writer) Invalidate() {
	w.mu.Lock()
	w.applied = nil
	w.mu.Unlock()
}

// Apply makes the kernel's table equal to rs.
func (w *Writer) Apply(rs *Ruleset) (Change, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, err := w.conn()
	if err != nil {
		return Change{}, fmt.Errorf("nftables: %w", err)
	}
	var ch Change
	if w.applied == nil {
		ch, err = full(c, rs)
	} else {
		ch, err = diff(c, w.applied, rs)
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil {
		w.applied = nil
		return ch, fmt.Errorf("nftables: write table inet %s (%s): %w", TableName, ch, err)
	}
	w.applied = rs
	return ch, nil
}

// Delete removes table inet brindle, if it is there.
func (w *Writer) Delete() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.applied = nil
	c, err := w.conn()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	c.AddTable(Table)
	c.DelTable(Table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table inet %s: %w", TableName, err)
	}
	return nil
}

// full replaces the table in one transaction: the old rules stay in force
// until the new ones are.
func full(c *nftables.Conn, rs *Ruleset) (Change, error) {
	ch := Change{Full: true, Tightening: true}
	c.AddTable(Table)
	c.DelTable(Table)
	c.AddTable(Table)
	for _, name := range rs.Counters {
		c.AddObj(&nftables.CounterObj{Table: Table, Name: name})
	}
	sets := map[string]*nftables.Set{}
	for _, name := range sortedKeys(rs.Sets) {
		s := rs.Sets[name]
		ns := s.Kind.nftSet(Table, name)
		if err := c.AddSet(ns, nil); err != nil {
			return ch, fmt.Errorf("set %s: %w", name, err)
		}
		sets[name] = ns
		ch.Sets++
	}
	chains := map[string]*nftables.Chain{}
	for _, name := range sortedKeys(rs.Chains) {
		chains[name] = c.AddChain(nftChain(rs.Chains[name]))
		ch.Chains++
	}
	for _, name := range sortedKeys(rs.Sets) {
		s := rs.Sets[name]
		if err := addElems(c, sets[name], s.nftElems()); err != nil {
			return ch, fmt.Errorf("set %s: %w", name, err)
		}
		ch.AddedElems += len(s.Elems)
	}
	for _, name := range sortedKeys(rs.Chains) {
		for _, r := range rs.Chains[name].Rules {
			c.AddRule(r.nftRule(chains[name]))
		}
	}
	return ch, nil
}

// diff changes the table from old to rs. Sets and chains that are the
// same values as in old (a Renderer reuses what did not change) are
// skipped without a look at their contents.
func diff(c *nftables.Conn, old, rs *Ruleset) (Change, error) {
	var ch Change
	if !slices.Equal(old.Counters, rs.Counters) {
		return full(c, rs)
	}
	for name, oc := range old.Chains {
		if nc, ok := rs.Chains[name]; ok && nc != oc && !sameBase(oc, nc) {
			return full(c, rs)
		}
	}
	var touched []string // sets new or possibly changed, sorted below
	for name, s := range rs.Sets {
		os, ok := old.Sets[name]
		switch {
		case os == s:
		case ok && os.Kind != s.Kind:
			return full(c, rs)
		default:
			touched = append(touched, name)
		}
	}
	sort.Strings(touched)
	newSets := map[string]*nftables.Set{}
	for _, name := range touched {
		if _, ok := old.Sets[name]; !ok {
			ns := rs.Sets[name].Kind.nftSet(Table, name)
			if err := c.AddSet(ns, nil); err != nil {
				return ch, fmt.Errorf("set %s: %w", name, err)
			}
			newSets[name] = ns
			ch.Sets++
		}
	}
	var chainNames []string
	for name, nc := range rs.Chains {
		if oc, ok := old.Chains[name]; !ok || oc != nc {
			chainNames = append(chainNames, name)
		}
	}
	sort.Strings(chainNames)
	chains := map[string]*nftables.Chain{}
	var rewrite []string
	for _, name := range chainNames {
		nc := rs.Chains[name]
		oc, ok := old.Chains[name]
		switch {
		case !ok:
			chains[name] = c.AddChain(nftChain(nc))
			rewrite = append(rewrite, name)
		case !sameRules(oc, nc):
			chains[name] = &nftables.Chain{Table: Table, Name: name}
			c.FlushChain(chains[name])
			rewrite = append(rewrite, name)
			ch.Tightening = true
		}
	}
	// Elements: new sets get all theirs; changed sets the difference (an
	// interval set is refilled: its ranges are not independent elements).
	for _, name := range touched {
		s := rs.Sets[name]
		if ns, ok := newSets[name]; ok {
			if err := addElems(c, ns, s.nftElems()); err != nil {
				return ch, err
			}
			ch.AddedElems += len(s.Elems)
			continue
		}
		os := old.Sets[name]
		added, removed := elemDiff(os.Elems, s.Elems)
		if len(added) == 0 && len(removed) == 0 {
			continue
		}
		switch s.Kind {
		case KindEndpoint4, KindEndpoint6, KindPair4, KindPair6, KindAddr4, KindAddr6:
		case KindCounted4, KindCounted6:
			ch.Tightening = ch.Tightening || len(added) > 0
		default:
			ch.Tightening = true
		}
		ks := &nftables.Set{Table: Table, Name: name, KeyType: s.Kind.nftSet(Table, name).KeyType, Interval: s.Kind.rbtree(), IsMap: s.Kind.nftSet(Table, name).IsMap}
		if s.Kind.rbtree() {
			c.FlushSet(ks)
			if err := addElems(c, ks, s.nftElems()); err != nil {
				return ch, err
			}
			ch.RemovedElems += len(os.Elems)
			ch.AddedElems += len(s.Elems)
			continue
		}
		if len(removed) > 0 {
			if err := delElems(c, ks, (&Set{Kind: s.Kind, Elems: removed}).nftElems()); err != nil {
				return ch, err
			}
		}
		if len(added) > 0 {
			if err := addElems(c, ks, (&Set{Kind: s.Kind, Elems: added}).nftElems()); err != nil {
				return ch, err
			}
		}
		ch.AddedElems += len(added)
		ch.RemovedElems += len(removed)
	}
	for _, name := range rewrite {
		for _, r := range rs.Chains[name].Rules {
			c.AddRule(r.nftRule(chains[name]))
		}
		ch.Chains++
	}
	// Gone chains are emptied, then gone sets deleted (no rule refers to
	// them any more, and with them go map elements that jump to gone
	// chains), then the gone chains.
	var gone []*nftables.Chain
	for _, name := range missing(old.Chains, rs.Chains) {
		gc := &nftables.Chain{Table: Table, Name: name}
		c.FlushChain(gc)
		gone = append(gone, gc)
	}
	for _, name := range missing(old.Sets, rs.Sets) {
		c.DelSet(&nftables.Set{Table: Table, Name: name})
		ch.Sets++
	}
	for _, gc := range gone {
		c.DelChain(gc)
		ch.Chains++
		ch.Tightening = true
	}
	return ch, nil
}

// missing lists, sorted, the names in old that are not in cur.
func missing[V any](old, cur map[string]V) []string {
	var out []string
	for name := range old {
		if _, ok := cur[name]; !ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// elemBatch bounds the elements per netlink message (attribute lengths are
// 16 bits).
const elemBatch = 256

func addElems(c *nftables.Conn, s *nftables.Set, es []nftables.SetElement) error {
	for len(es) > 0 {
		n := min(len(es), elemBatch)
		if err := c.SetAddElements(s, es[:n]); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		es = es[n:]
	}
	return nil
}

func delElems(c *nftables.Conn, s *nftables.Set, es []nftables.SetElement) error {
	for len(es) > 0 {
		n := min(len(es), elemBatch)
		if err := c.SetDeleteElements(s, es[:n]); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		es = es[n:]
	}
	return nil
}

func elemDiff(old, cur []Elem) (added, removed []Elem) {
	have := make(map[string]bool, len(old))
	for _, e := range old {
		have[e.id()] = true
	}
	want := make(map[string]bool, len(cur))
	for _, e := range cur {
		id := e.id()
		want[id] = true
		if !have[id] {
			added = append(added, e)
		}
	}
	for _, e := range old {
		if !want[e.id()] {
			removed = append(removed, e)
		}
	}
	return added, removed
}

func sameBase(a, b *Chain) bool {
	if (a.Hook == nil) != (b.Hook == nil) {
		return false
	}
	return a.Hook == nil || (*a.Hook == *b.Hook && a.Priority == b.Priority)
}

func sameRules(a, b *Chain) bool {
	if len(a.Rules) != len(b.Rules) {
		return false
	}
	for i := range a.Rules {
		if a.Rules[i].String() != b.Rules[i].String() {
			return false
		}
	}
	return true
}

func nftChain(c *Chain) *nftables.Chain {
	nc := &nftables.Chain{Table: Table, Name: c.Name}
	if c.Hook != nil {
		accept := nftables.ChainPolicyAccept
		prio := nftables.ChainPriority(c.Priority)
		nc.Hooknum, nc.Priority, nc.Type, nc.Policy = c.Hook, &prio, nftables.ChainTypeFilter, &accept
	}
	return nc
}

func (r *rule) nftRule(c *nftables.Chain) *nftables.Rule {
	return &nftables.Rule{Table: Table, Chain: c, Exprs: r.exprs, UserData: r.userData}
}

// ErrNoTable is returned by Check when table inet brindle is not in the
// kernel.
var ErrNoTable = errors.New("table inet brindle missing")
