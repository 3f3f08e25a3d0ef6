package ipam

import (
	"os"
	"path/filepath"
)

// HandleNotes are brindle-ipam's local notes of the attachments that may
// hold addresses on this node, one empty file per handle in Dir (next to
// brindled's nodename file). A note is written before an ADD's commit and
// removed after a DEL's release, so "no note" means "holds nothing here":
// during an etcd outage a DEL with no note succeeds (the runtime can
// remove the sandbox) instead of failing until etcd is back.
type HandleNotes struct {
	Dir string
}

func (n HandleNotes) path(handle string) string { return filepath.Join(n.Dir, handle) }

// Put records that handle may hold addresses.
func (n HandleNotes) Put(handle string) error {
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(n.path(handle), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// Has reports whether handle may hold addresses; an unreadable directory
// counts as yes, so that doubt never makes a DEL succeed.
func (n HandleNotes) Has(handle string) bool {
	_, err := os.Stat(n.path(handle))
	return !os.IsNotExist(err)
}

// Remove forgets handle.
func (n HandleNotes) Remove(handle string) {
	_ = os.Remove(n.path(handle))
}
