package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

// A block record brindle cannot use — one that does not decode, or one
// that decodes but fails its check (a free list naming an ordinal twice) —
// is listed by Check as unreadable and left alone by Repair, never taken
// for a block (the decode or check error was dropped: such a record was
// read as an empty or inconsistent block, and not reported).
func TestCheckListsUnreadableBlocks(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "one", "10.9.0.0/24", nil)
	if _, err := s.Client.Put(ctxT(t), Prefix+nodeKey("n1"), `{"name":"n1"}`); err != nil {
		t.Fatal(err)
	}
	held := assign4(t, a, "n1", "pod.eth0")
	b, ok := readBlock(t, a, held.Block)
	if !ok {
		t.Fatalf("no block %s", held.Block)
	}
	bad := *b
	bad.CIDR = netip.MustParsePrefix("10.9.0.192/26")
	bad.Free = append([]int{bad.Free[0]}, bad.Free...) // one ordinal free twice
	badKey, garbageKey := blockKey(bad.CIDR), blockKey(netip.MustParsePrefix("10.9.0.128/26"))
	if _, err := s.Client.Put(ctxT(t), Prefix+badKey, string(mustJSON(bad))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.Put(ctxT(t), Prefix+garbageKey, `{"cidr": 7`); err != nil {
		t.Fatal(err)
	}
	r, err := a.Check(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{badKey, garbageKey} {
		found := false
		for _, u := range r.Unreadable {
			found = found || strings.Contains(u, strings.TrimPrefix(k, blocksPrefix))
		}
		if !found {
			t.Errorf("check does not list %s as unreadable: %+v", k, r)
		}
	}
	if len(r.Leaks) != 0 || len(r.StaleBlocks) != 0 {
		t.Errorf("check took an unreadable record for a block: %+v", r)
	}
	lines, err := a.Repair(ctxT(t), r, RepairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repair: %q", lines)
	for _, k := range []string{badKey, garbageKey, blockKey(held.Block)} {
		if got := keys(t, s.Client, k); len(got) != 1 {
			t.Errorf("repair removed %s", k)
		}
	}
}
