package bgpd

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// Records sits between the cache and the controller for the cluster's
// records (nodes, pools, BGP configuration and peers): a record that is not
// valid — written straight into etcd with a wrong type, garbage, a newer
// schema — does not take effect. The last valid value of its key stays in
// force (a pool or the AS number mangled by hand must not withdraw routes
// or restart every session), or, for a key never valid, it is ignored. Each
// problem is logged once, naming the key, until it changes.
type Records struct {
	mu     sync.Mutex
	good   map[string][]byte
	warned map[string]string
	// decoded is what pickRecord last made of each key's value in force,
	// so that an unchanged record is not decoded and validated again each
	// time the cluster state is read (100 node records, read again for
	// every change of any of them, and for every block claimed by this
	// node).
	decoded map[string]decodedRecord
}

type decodedRecord struct {
	raw []byte
	val any
}

// NewRecords returns an empty Records.
func NewRecords() *Records {
	return &Records{good: map[string][]byte{}, warned: map[string]string{}, decoded: map[string]decodedRecord{}}
}

// Pick returns the value of key to use: v when valid says so, else the
// last valid value of key, else nil. log gets one line per new problem.
func (r *Records) Pick(log *slog.Logger, key string, v []byte, valid func([]byte) error) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := valid(v)
	if err == nil {
		r.good[key] = v
		if _, was := r.warned[key]; was {
			delete(r.warned, key)
			log.Info("record valid again", "key", key)
		}
		return v
	}
	last, ok := r.good[key]
	msg := err.Error()
	if r.warned[key] != msg {
		r.warned[key] = msg
		if ok {
			log.Warn("invalid record; keeping its last valid value in force", "key", key, "err", msg)
		} else {
			log.Warn("invalid record; ignored", "key", key, "err", msg)
		}
	}
	return last
}

// Warn logs a problem of the record set once, until its text changes.
func (r *Records) Warn(log *slog.Logger, key, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.warned[key] != msg {
		r.warned[key] = msg
		log.Warn(msg, "key", key)
	}
}

// Forget drops what is kept of the keys under prefix not in present (they
// were deleted).
func (r *Records) Forget(prefix string, present map[string][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.good {
		if _, ok := present[k]; !ok && strings.HasPrefix(k, prefix) {
			delete(r.good, k)
			delete(r.warned, k)
		}
	}
	for k := range r.decoded {
		if _, ok := present[k]; !ok && strings.HasPrefix(k, prefix) {
			delete(r.decoded, k)
		}
	}
}

// known returns what key's value v was decoded to, if v is the value last
// decoded for key and it is still the one in force.
func (r *Records) known(key string, v []byte) (any, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.decoded[key]
	if !ok || !bytes.Equal(d.raw, v) || !bytes.Equal(r.good[key], v) {
		return nil, false
	}
	if _, warned := r.warned[key]; warned {
		return nil, false
	}
	return d.val, true
}

func (r *Records) remember(key string, v []byte, val any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decoded[key] = decodedRecord{raw: v, val: val}
}

// pickRecord is Pick for a record decoded (and validated) by decode: the
// decoded value in force for key, or false when there is none.
// An unchanged valid record is decoded once.
func pickRecord[T any](r *Records, log *slog.Logger, key string, v []byte, decode func([]byte) (T, error)) (T, bool) {
	if d, ok := r.known(key, v); ok {
		if t, ok := d.(T); ok {
			return t, true
		}
	}
	var t T
	var terr error
	in := r.Pick(log, key, v, func(b []byte) error { t, terr = decode(b); return terr })
	if in == nil {
		var zero T
		return zero, false
	}
	if terr != nil { // v is not valid: in force is the last valid value
		t, _ = decode(in)
	}
	r.remember(key, in, t)
	return t, true
}
