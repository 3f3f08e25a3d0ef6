package ipam

import (
	"net/netip"
	"testing"
)

// FuzzBlockRecords feeds the decoders of IPAM's records as read back from
// etcd (anyone with access can write them): a block that passes its check
// must be safe to allocate from and release into — no panic, no address
// outside the block, no address given twice — and handles, claims and
// endpoints must decode or fail, never panic.
func FuzzBlockRecords(f *testing.F) {
	ok := mustJSON(newBlock(mustPrefix("10.244.1.0/30"), "p", "n1"))
	used := newBlock(mustPrefix("10.244.1.0/30"), "p", "n1")
	used.take(-1, nil, "h.eth0", nil)
	f.Add(ok)
	f.Add(mustJSON(used))
	f.Add(mustJSON(newBlock(mustPrefix("fd00:244::/126"), "p6", "n1")))
	for _, s := range []string{
		`{"v":1,"cidr":"10.244.1.0/30","allocations":[null,null,null,null],"seqs":[0,0,0,0],"free":[9,0,0,-1]}`,
		`{"v":1,"cidr":"10.244.1.0/30","allocations":[{"handle":"a","seq":1},null,null,null],"seqs":[1,0,0,0],"free":[0,1,2,3]}`,
		`{"v":1,"cidr":"::/0","allocations":[],"seqs":[],"free":[]}`,
		`{"v":1,"cidr":"10.0.0.0/0"}`, `{"v":2}`, `{"cidr":5}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kv := KV{Key: "ipam/blocks/x", Value: data}
		var h Handle
		_ = decode(kv, &h)
		var af Affinity
		_ = decode(kv, &af)
		var e Endpoint
		_ = decode(kv, &e)
		var b Block
		if decode(kv, &b) != nil || b.check() != nil {
			return
		}
		seen := map[string]bool{}
		for range len(b.Allocations) + 1 {
			ord, seq, ok := b.take(-1, nil, "fuzz", nil)
			if !ok {
				break
			}
			a := b.Addr(ord)
			if !b.CIDR.Contains(a) {
				t.Fatalf("took %s outside block %s", a, b.CIDR)
			}
			if seen[a.String()] {
				t.Fatalf("took %s twice", a)
			}
			seen[a.String()] = true
			if !b.release(ord, "fuzz", seq) {
				t.Fatalf("could not release %s (ordinal %d, seq %d) just taken", a, ord, seq)
			}
			if _, _, again := b.take(ord, nil, "fuzz", nil); !again {
				t.Fatalf("ordinal %d released, then not free", ord)
			}
		}
		_ = b.InUse()
	})
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
