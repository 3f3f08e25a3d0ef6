package ipam

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The state file is rewritten in place; a state that is not whole (its
// writer killed half way, a reader racing the writer), from an older
// binary, or of another node is not used.
func TestNodeStateFile(t *testing.T) {
	dir := t.TempDir()
	l := &NodeLocal{Dir: dir, Node: "n1"}
	aff := Get{Key: nodeAffinityPrefix("n1"), Prefix: true}
	blk := Get{Key: "ipam/blocks/10.0.0.0-26"}
	rc := newReadCache(nil)
	rc.gets[aff] = []KV{{Key: "ipam/affinity/n1/10.0.0.0-26", Value: []byte(`{"state":"confirmed"}`), ModRevision: 4}}
	rc.gets[blk] = []KV{{Key: blk.Key, Value: []byte(`{"cidr":"10.0.0.0/26"}`), ModRevision: 5}}
	keys := Get{Key: reservationsPrefix, Prefix: true, KeysOnly: true, Serializable: true}
	rc.gets[keys] = []KV{{Key: blk.Key, ModRevision: 5, CreateRevision: 2}, {Key: "ipam/blocks/10.0.0.64-26", Value: []byte{}, ModRevision: 6}}
	absent := Get{Key: configKey}
	rc.gets[absent] = nil                        // read, and not there
	rc.gets[Get{Key: handleKey("h.eth0")}] = nil // handles are never kept
	l.saveState(rc, 3, nil)

	load := func() *readCache {
		got := newReadCache(nil)
		if l.loadState(got) == nil {
			return nil
		}
		return got
	}
	got := load()
	if got == nil || !got.fromState || len(got.gets) != 4 || got.gets[blk][0].ModRevision != 5 || string(got.gets[aff][0].Value) != `{"state":"confirmed"}` {
		t.Fatalf("state not read back as written: %+v", got)
	}
	if k := got.gets[keys]; len(k) != 2 || k[0].Value != nil || k[0].CreateRevision != 2 || k[1].Value == nil || len(k[1].Value) != 0 {
		t.Fatalf("keys-only listing not read back as written: %+v", k)
	}
	if v, ok := got.gets[absent]; !ok || v != nil {
		t.Fatalf("an absent key not read back as absent: %v %v", v, ok)
	}
	delete(rc.gets, keys)
	delete(rc.gets, absent)

	// A second, shorter state written over the first leaves nothing of it.
	delete(rc.gets, blk)
	l.saveState(rc, 1, nil)
	if got := load(); got == nil || len(got.gets) != 1 {
		t.Fatalf("shorter state over a longer one: %+v", got)
	}
	whole, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}

	frame := func(st nodeState, gets []byte) []byte {
		return stateFrame(append(append(mustJSON(st), '\n'), gets...))
	}
	now := time.Now().UTC()
	noGets := appendGets(nil, nil)
	someGets := appendGets(nil, []stateEntry{{Get: blk, KVs: []KV{{Key: blk.Key, Value: []byte("{}"), ModRevision: 5}}}})
	if got := (func() *readCache {
		os.WriteFile(filepath.Join(dir, stateFile), frame(nodeState{V: stateVersion, Node: "n1", Saved: now}, someGets), 0o600)
		return load()
	})(); got == nil || len(got.gets[blk]) != 1 {
		t.Fatalf("a state framed by the test is not read: %+v", got)
	}
	v1, _ := json.Marshal(struct {
		nodeState
		Gets []stateEntry `json:"gets"`
	}{nodeState: nodeState{V: 1, Node: "n1", Saved: now}})
	for name, b := range map[string][]byte{
		"cut short":                whole[:len(whole)-3],
		"a byte changed":           append(append([]byte{}, whole[:len(whole)-2]...), 'X', whole[len(whole)-1]),
		"old bytes after it":       append(append([]byte{}, whole...), `,"x":1}`...),
		"no header (older)":        v1,
		"v1 with a header":         stateFrame(v1),
		"header only":              whole[:len(stateMagic)+1],
		"another node's":           frame(nodeState{V: stateVersion, Node: "n2", Saved: now}, noGets),
		"older than its TTL":       frame(nodeState{V: stateVersion, Node: "n1", Saved: now.Add(-time.Hour)}, noGets),
		"a newer format":           frame(nodeState{V: stateVersion + 1, Node: "n1", Saved: now}, noGets),
		"gets cut (CRC over them)": frame(nodeState{V: stateVersion, Node: "n1", Saved: now}, someGets[:len(someGets)-2]),
		"bytes after the gets":     frame(nodeState{V: stateVersion, Node: "n1", Saved: now}, append(append([]byte{}, someGets...), 0)),
		"a count beyond the data":  frame(nodeState{V: stateVersion, Node: "n1", Saved: now}, []byte{0xff, 0xff, 0x03}),
		"no gets line":             stateFrame(mustJSON(nodeState{V: stateVersion, Node: "n1", Saved: now})),
	} {
		if err := os.WriteFile(filepath.Join(dir, stateFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if got := load(); got != nil {
			t.Errorf("%s: state used: %+v", name, got.gets)
		}
	}
	// Without a usable state a DEL cannot know that no block is due.
	if !l.EmptyBlocksDue(time.Now(), DefaultEmptyBlockGrace) {
		t.Error("EmptyBlocksDue without a usable state said no")
	}
}
