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
	if got == nil || !got.fromState || len(got.gets) != 2 || got.gets[blk][0].ModRevision != 5 || string(got.gets[aff][0].Value) != `{"state":"confirmed"}` {
		t.Fatalf("state not read back as written: %+v", got)
	}

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

	old, _ := json.Marshal(nodeState{V: 1, Node: "n1", Saved: time.Now().UTC()})
	for name, b := range map[string][]byte{
		"cut short":           whole[:len(whole)-3],
		"a byte changed":      append(append([]byte{}, whole[:len(whole)-2]...), 'X', whole[len(whole)-1]),
		"old bytes after it":  append(append([]byte{}, whole...), `,"x":1}`...),
		"no header (older)":   old,
		"header only":         whole[:len(whole)-len(whole)+len(stateMagic)+1],
		"another node's":      stateFrame(mustJSON(nodeState{V: 1, Node: "n2", Saved: time.Now().UTC()})),
		"older than its TTL":  stateFrame(mustJSON(nodeState{V: 1, Node: "n1", Saved: time.Now().Add(-time.Hour).UTC()})),
		"a newer format (v2)": stateFrame(mustJSON(nodeState{V: 2, Node: "n1", Saved: time.Now().UTC()})),
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
