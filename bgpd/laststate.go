package bgpd

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// DefaultStateFile is where brindled keeps its last known cluster state.
const DefaultStateFile = "/var/lib/brindle/state.json"

// lastState is the cache's content on disk: what brindled last saw of the
// cluster, so that a brindled started while etcd is down can come up from
// it (peers, routes, pools) instead of not at all.
type lastState struct {
	V       int               `json:"v"`
	SavedAt time.Time         `json:"savedAt"`
	KVs     map[string][]byte `json:"kvs"`
}

// SaveState writes the cache's content to path atomically, readable by
// root only (BGP passwords are in it).
func SaveState(path string, c *Cache) error {
	b, err := json.Marshal(lastState{V: 1, SavedAt: time.Now().UTC(), KVs: c.Snapshot("")})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadState reads what SaveState wrote; a missing file is (nil, zero, nil).
func LoadState(path string) (map[string][]byte, time.Time, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	var s lastState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, time.Time{}, fmt.Errorf("%s: %w", path, err)
	}
	if s.V > 1 {
		return nil, time.Time{}, fmt.Errorf("%s: schema v%d is newer than this binary", path, s.V)
	}
	return s.KVs, s.SavedAt, nil
}

// Seed fills a cache that etcd has not listed yet with data (the last
// known state): the cache then counts as synced, Seeded says so, and the
// first list from etcd replaces it all. It reports whether it seeded.
func (c *Cache) Seed(data map[string][]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.listed {
		return false
	}
	c.data = map[string][]byte{}
	for k, v := range data {
		if c.wanted(k) {
			c.data[k] = v
		}
	}
	c.listed, c.seeded = true, true
	signal(c.changed)
	return true
}

// Seeded reports whether the cache holds the state from disk and etcd has
// not answered since.
func (c *Cache) Seeded() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.seeded && c.lastOK.IsZero()
}
