package ipam

import "encoding/binary"

// The gets of a node-local state, in a binary form that is read at the
// speed of a copy: a count, then for each get its key, a flags byte and
// its KVs, each KV its key, its value (length+1, 0 for none: a keys-only
// read) and its two revisions. Strings and values are a uvarint length and
// the bytes; revisions are varints. The file's CRC (nodestate.go) covers
// it, so a decode only has to refuse what does not add up.

const (
	getPrefix = 1 << iota
	getKeysOnly
	getSerializable
)

func appendGets(b []byte, gets []stateEntry) []byte {
	b = binary.AppendUvarint(b, uint64(len(gets)))
	for _, e := range gets {
		b = appendBytes(b, []byte(e.Get.Key))
		var f byte
		if e.Get.Prefix {
			f |= getPrefix
		}
		if e.Get.KeysOnly {
			f |= getKeysOnly
		}
		if e.Get.Serializable {
			f |= getSerializable
		}
		b = append(b, f)
		b = binary.AppendUvarint(b, uint64(len(e.KVs)))
		for _, kv := range e.KVs {
			b = appendBytes(b, []byte(kv.Key))
			if kv.Value == nil {
				b = binary.AppendUvarint(b, 0)
			} else {
				b = binary.AppendUvarint(b, uint64(len(kv.Value))+1)
				b = append(b, kv.Value...)
			}
			b = binary.AppendVarint(b, kv.ModRevision)
			b = binary.AppendVarint(b, kv.CreateRevision)
		}
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// getsReader reads what appendGets wrote; ok turns false at the first
// thing that does not fit, and stays false.
type getsReader struct {
	b  []byte
	ok bool
}

func (r *getsReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.ok = false
		return 0
	}
	r.b = r.b[n:]
	return v
}

// varint undoes binary.AppendVarint's zig-zag encoding of a uvarint.
func (r *getsReader) varint() int64 {
	u := r.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (r *getsReader) bytes(n uint64) []byte {
	if !r.ok || n > uint64(len(r.b)) {
		r.ok = false
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *getsReader) byte() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func decodeGets(b []byte) ([]stateEntry, bool) {
	r := &getsReader{b: b, ok: true}
	n := r.uvarint()
	if n > uint64(len(b)) { // every entry takes at least a byte
		return nil, false
	}
	gets := make([]stateEntry, 0, n)
	for range n {
		var e stateEntry
		e.Get.Key = string(r.bytes(r.uvarint()))
		f := r.byte()
		e.Get.Prefix, e.Get.KeysOnly, e.Get.Serializable = f&getPrefix != 0, f&getKeysOnly != 0, f&getSerializable != 0
		nkv := r.uvarint()
		if !r.ok || nkv > uint64(len(r.b)) {
			return nil, false
		}
		for range nkv {
			var kv KV
			kv.Key = string(r.bytes(r.uvarint()))
			if l := r.uvarint(); l > 0 {
				kv.Value = r.bytes(l - 1)
			}
			kv.ModRevision, kv.CreateRevision = r.varint(), r.varint()
			e.KVs = append(e.KVs, kv)
		}
		if !r.ok {
			return nil, false
		}
		gets = append(gets, e)
	}
	return gets, r.ok && len(r.b) == 0
}
