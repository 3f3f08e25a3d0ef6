// Package store is the seam between the allocator and its datastore: a
// Store does consistent multi-key reads and all-or-nothing commits guarded
// by revisions. Backends live in subpackages (etcdgrpc, etcdhttp), so a
// binary links only the one it uses.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Prefix is where every brindle key lives; backends add it, so keys given to
// a Store are relative to it.
const Prefix = "/brindle/v1/"

// KV is one stored key (relative to Prefix) with its value and revision.
type KV struct {
	Key         string
	Value       []byte
	ModRevision int64
	// CreateRevision orders records by when they were created (of two
	// overlapping pools, the older one is used).
	CreateRevision int64
}

// Get asks for one key, or every key under a prefix.
type Get struct {
	Key      string
	Prefix   bool
	KeysOnly bool
	// Serializable lets the member answer from its own state without
	// confirming with the leader: faster, possibly a little stale. Only for
	// reads whose staleness a revision guard catches later.
	Serializable bool
}

// Rev values for Op.Rev besides a real ModRevision.
const (
	// MustNotExist guards a create: the key's CreateRevision must be 0.
	MustNotExist int64 = 0
	// AnyRev writes without a guard.
	AnyRev int64 = -1
)

// Op is one write of a guarded commit. Rev is the ModRevision the key must
// still have (MustNotExist, or AnyRev for none). With neither Value nor
// Delete the op is a guard only.
//
// With Prefix, the op is a guard only, on every key under Key: none may
// have been created or changed after revision Rev (the highest ModRevision
// among the keys as read, 0 for none). It tells a commit that nothing was
// added to a listing it was decided from; a failed one returns the listing.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
	Rev    int64
	Prefix bool
}

// Store is all the allocator needs from a datastore.
type Store interface {
	// Read returns, for each Get, the matching keys, all at one revision,
	// in one round trip.
	Read(ctx context.Context, gets ...Get) ([][]KV, error)
	// Commit applies every op if every guard holds and reports whether it did.
	Commit(ctx context.Context, ops ...Op) (bool, error)
}

// CommitGetter is a Store that can return, with a commit whose guards
// failed, the current values of the guarded keys in the same round trip.
// The allocator then retries at once from those values instead of reading
// again: under contention for one block that halves the round trips.
type CommitGetter interface {
	// CommitOrGet is Commit; when a guard fails it also returns the guarded
	// keys that exist (a guarded key missing from the list does not exist).
	CommitOrGet(ctx context.Context, ops ...Op) (bool, []KV, error)
}

// RevCommitter is a CommitGetter that also reports the revision a
// successful commit created: every key it wrote now has that ModRevision.
// A caller that keeps what it read (the node-local state of brindle-ipam)
// can then bring its copy up to date without reading again.
type RevCommitter interface {
	// CommitRev is CommitOrGet, with the store's revision after a
	// successful commit.
	CommitRev(ctx context.Context, ops ...Op) (ok bool, rev int64, cur []KV, err error)
}

// ErrUnreachable marks errors caused by etcd not answering in time.
var ErrUnreachable = errors.New("etcd unreachable")

// Unreachable wraps err with a message naming the endpoints that did not
// answer, so an operator sees at once which etcd was tried.
func Unreachable(endpoints []string, err error) error {
	return fmt.Errorf("%w at %s: %v", ErrUnreachable, strings.Join(endpoints, ","), err)
}

// PrefixEnd returns the end of the key range that holds every key starting
// with p, as etcd range requests want it.
func PrefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00" // every key
}
