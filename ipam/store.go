package ipam

import "github.com/brindle-net/brindle/ipam/store"

// The allocator's view of its datastore; see package store. The aliases let
// callers use ipam.Store without importing the seam package.
type (
	// Store is the datastore seam.
	Store = store.Store
	// KV is one stored key.
	KV = store.KV
	// Get is one read request.
	Get = store.Get
	// Op is one guarded write.
	Op = store.Op
)

// Re-exported from package store.
const (
	Prefix       = store.Prefix
	MustNotExist = store.MustNotExist
	AnyRev       = store.AnyRev
)

// ErrUnreachable marks errors caused by etcd not answering in time.
var ErrUnreachable = store.ErrUnreachable
