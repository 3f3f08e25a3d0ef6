package conf

import (
	"fmt"
	"sort"
	"strings"
)

// PoolRecord is a pool as stored: its key, value and creation revision.
type PoolRecord struct {
	Key            string
	Value          []byte
	CreateRevision int64
}

// UsablePools decodes and validates stored pools for allocation. A record
// that does not decode, is not valid, or overlaps a pool created before it
// (two pools over the same addresses would hand them out twice; ApplyPool
// refuses that, so such a record was written around it) is left out, and
// rejected says which and why, naming the key. The result is sorted by name.
func UsablePools(recs []PoolRecord) (pools []IPPool, rejected []string) {
	type rec struct {
		p   IPPool
		key string
		rev int64
	}
	var ok []rec
	for _, r := range recs {
		p, err := UnmarshalPool(r.Value)
		if err == nil {
			err = p.Validate()
		}
		if err == nil && !strings.HasSuffix(r.Key, "/"+p.Metadata.Name) {
			err = fmt.Errorf("metadata.name %q: not the name in the key", p.Metadata.Name)
		}
		if err != nil {
			rejected = append(rejected, fmt.Sprintf("%s: %v", r.Key, err))
			continue
		}
		ok = append(ok, rec{p, r.Key, r.CreateRevision})
	}
	sort.SliceStable(ok, func(i, j int) bool { return ok[i].rev < ok[j].rev })
	var kept []rec
	for _, r := range ok {
		clash := ""
		for _, k := range kept {
			if r.p.Prefix().Overlaps(k.p.Prefix()) {
				clash = k.key
				break
			}
		}
		if clash != "" {
			rejected = append(rejected, fmt.Sprintf("%s: spec.cidr %s overlaps %s, created before it: ignored", r.key, r.p.Spec.CIDR, clash))
			continue
		}
		kept = append(kept, r)
		pools = append(pools, r.p)
	}
	sort.Slice(pools, func(i, j int) bool { return pools[i].Metadata.Name < pools[j].Metadata.Name })
	return pools, rejected
}
