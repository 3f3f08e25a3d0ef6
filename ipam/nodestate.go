package ipam

import (
	"encoding/json"
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
	V     int          `json:"v"`
	Node  string       `json:"node"`
	Saved time.Time    `json:"saved"`
	Gets  []stateEntry `json:"gets"`
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

// loadState fills rc from the state file, if it is this node's and fresh,
// and returns it (nil if not).
func (l *NodeLocal) loadState(rc *readCache) *nodeState {
	b, err := os.ReadFile(filepath.Join(l.Dir, stateFile))
	if err != nil {
		return nil
	}
	var st nodeState
	if json.Unmarshal(b, &st) != nil || st.V != 1 || st.Node != l.Node || time.Since(st.Saved) > l.stateTTL() || time.Since(st.Saved) < 0 {
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
	st := nodeState{V: 1, Node: l.Node, Saved: now, Batch: batch, Recent: batch, RecentAt: now}
	if prev != nil && now.Sub(prev.RecentAt) < recentFor && prev.Recent > batch {
		st.Recent, st.RecentAt = prev.Recent, prev.RecentAt
	}
	for g, kvs := range rc.gets {
		if strings.HasPrefix(g.Key, handlesPrefix) || (g.Prefix && g.Key == blocksPrefix) {
			continue
		}
		st.Gets = append(st.Gets, stateEntry{Get: g, KVs: kvs})
	}
	b, err := json.Marshal(st)
	if err != nil {
		return
	}
	tmp := filepath.Join(l.Dir, tmpPrefix+stateFile)
	if os.WriteFile(tmp, b, 0o600) != nil || os.Rename(tmp, filepath.Join(l.Dir, stateFile)) != nil {
		_ = os.Remove(tmp)
	}
}

// dropState removes the state, so the next transaction reads afresh.
func (l *NodeLocal) dropState() { _ = os.Remove(filepath.Join(l.Dir, stateFile)) }
