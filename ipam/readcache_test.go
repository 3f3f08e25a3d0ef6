package ipam

import (
	"testing"
)

func TestReadCacheRefresh(t *testing.T) {
	c := newReadCache(nil)
	pfx := Get{Key: "ipam/blocks/", Prefix: true, KeysOnly: true}
	one := Get{Key: "ipam/blocks/10.0.0.0-26"}
	c.gets[pfx] = []KV{{Key: "ipam/blocks/10.0.0.0-26", ModRevision: 3}}
	c.gets[one] = []KV{{Key: "ipam/blocks/10.0.0.0-26", Value: []byte("old"), ModRevision: 3}}
	c.refresh([]Op{
		{Key: "ipam/blocks/10.0.0.0-26", Value: []byte("mine"), Rev: 3},
		{Key: "ipam/blocks/10.0.0.64-26", Value: []byte("mine"), Rev: MustNotExist},
		{Key: "endpoints/n/x", Value: []byte("e"), Rev: AnyRev},
	}, []KV{
		{Key: "ipam/blocks/10.0.0.0-26", Value: []byte("new"), ModRevision: 7},
		{Key: "ipam/blocks/10.0.0.64-26", Value: []byte("theirs"), ModRevision: 8},
	})
	if got := c.gets[one]; len(got) != 1 || string(got[0].Value) != "new" || got[0].ModRevision != 7 {
		t.Fatalf("single key not refreshed: %+v", got)
	}
	got := c.gets[pfx]
	if len(got) != 2 || got[1].Key != "ipam/blocks/10.0.0.64-26" || got[1].Value != nil {
		t.Fatalf("prefix not refreshed (keys only, sorted): %+v", got)
	}
	// A guarded key that no longer exists disappears.
	c.refresh([]Op{{Key: "ipam/blocks/10.0.0.0-26", Rev: 7, Delete: true}}, nil)
	if len(c.gets[one]) != 0 || len(c.gets[pfx]) != 1 {
		t.Fatalf("deleted key kept: %+v %+v", c.gets[one], c.gets[pfx])
	}
}
