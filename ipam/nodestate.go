package ipam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// nodeState is what the node's last transaction read and wrote: the
// node's claims and blocks, the pools, the IPAM config and the node record,
// each with its ModRevision. The next transaction starts from it instead of
// reading, and is guarded by those revisions as it would be by a read's:
// a key changed since fails the commit, which returns its current value.
// It is a starting point only; it never decides anything on its own.
type nodeState struct {
	V     int       `json:"v"`
	Node  string    `json:"node"`
	Saved time.Time `json:"saved"`
	// Gets follow the JSON line, in the binary form of stategets.go: a
	// block of a full node is 10-20 KB of JSON, which as a JSON string
	// (base64) cost every holder a quarter of a millisecond to decode.
	Gets []stateEntry `json:"-"`
	// Batch is how many calls the transaction that saved it made; Recent
	// the most any transaction made in the last recentFor (how many calls
	// the node has at a time, lately).
	Batch    int       `json:"batch"`
	Recent   int       `json:"recent"`
	RecentAt time.Time `json:"recentAt"`
}

// recentFor is how long a large batch counts as recent.
const recentFor = 50 * time.Millisecond

type stateEntry struct {
	Get Get  `json:"get"`
	KVs []KV `json:"kvs"`
}

const stateFile = "state"

// stateVersion is the state's format: 2 since the gets are binary.
const stateVersion = 2

// loadState fills rc from the state file, if it is this node's and fresh,
// and returns it (nil if not).
func (l *NodeLocal) loadState(rc *readCache) *nodeState {
	b, err := os.ReadFile(filepath.Join(l.Dir, stateFile))
	if err != nil {
		return nil
	}
	body, ok := stateBody(b)
	if !ok {
		return nil
	}
	meta, gets, ok := bytes.Cut(body, []byte{'\n'})
	if !ok {
		return nil
	}
	var st nodeState
	if json.Unmarshal(meta, &st) != nil || st.V != stateVersion || st.Node != l.Node || time.Since(st.Saved) > l.stateTTL() || time.Since(st.Saved) < 0 {
		return nil
	}
	if st.Gets, ok = decodeGets(gets); !ok {
		return nil
	}
	for _, e := range st.Gets {
		rc.gets[e.Get] = e.KVs
	}
	rc.fromState = true
	return &st
}

// saveState writes what rc holds that the next transaction can start
// from: not handles (each ADD has its own) and not listings of every block
// (large, and read only to claim or borrow).
func (l *NodeLocal) saveState(rc *readCache, batch int, prev *nodeState) {
	now := time.Now().UTC() // UTC: a local time would read the zone database
	st := nodeState{V: stateVersion, Node: l.Node, Saved: now, Batch: batch, Recent: batch, RecentAt: now}
	if prev != nil && now.Sub(prev.RecentAt) < recentFor && prev.Recent > batch {
		st.Recent, st.RecentAt = prev.Recent, prev.RecentAt
	}
	for g, kvs := range rc.gets {
		if strings.HasPrefix(g.Key, handlesPrefix) || (g.Prefix && g.Key == blocksPrefix) {
			continue
		}
		st.Gets = append(st.Gets, stateEntry{Get: g, KVs: kvs})
	}
	meta, err := json.Marshal(st)
	if err != nil {
		return
	}
	body := appendGets(append(meta, '\n'), st.Gets)
	if writeInPlace(filepath.Join(l.Dir, stateFile), stateFrame(body)) != nil {
		l.dropState()
	}
}

// The state file is rewritten in place, not replaced by a rename: on
// ext4 a rename over an existing file makes the kernel write the new
// file's data out first (auto_da_alloc), 0.2-0.7 ms on the path of every
// holder, while a write over the old bytes is a copy into the page cache.
// A reader can then meet a half-written state (its writer killed between
// write and truncate, or EmptyBlocksDue reading without the lock), so the
// file starts with a header line giving the length and the CRC-32 of
// what follows, and a state that does not match it is not used: the
// next holder reads from etcd, as it does without a state.
const stateMagic = "brindle-ipam-state"

// stateFrame is body with its header line.
func stateFrame(body []byte) []byte {
	head := fmt.Sprintf("%s %d %08x\n", stateMagic, len(body), crc32.ChecksumIEEE(body))
	return append([]byte(head), body...)
}

// stateBody returns what follows a state file's header, if the header
// is there and matches it.
func stateBody(b []byte) ([]byte, bool) {
	head, body, ok := bytes.Cut(b, []byte{'\n'})
	if !ok {
		return nil, false
	}
	var n int
	var sum uint32
	if k, err := fmt.Sscanf(string(head), stateMagic+" %d %08x", &n, &sum); err != nil || k != 2 {
		return nil, false
	}
	if len(body) != n || crc32.ChecksumIEEE(body) != sum {
		return nil, false
	}
	return body, true
}

// writeInPlace writes b over the start of the file at path and cuts the
// file to its length.
func writeInPlace(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.WriteAt(b, 0)
	if werr == nil {
		werr = f.Truncate(int64(len(b)))
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}

// dropState removes the state, so the next transaction reads afresh.
func (l *NodeLocal) dropState() { _ = os.Remove(filepath.Join(l.Dir, stateFile)) }
