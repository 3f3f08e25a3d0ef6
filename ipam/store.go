package ipam

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/internal/etcdclient"
)

// KV is one stored key (relative to Prefix) with its value and revision.
type KV struct {
	Key         string
	Value       []byte
	ModRevision int64
}

// Get asks for one key, or every key under a prefix.
type Get struct {
	Key      string
	Prefix   bool
	KeysOnly bool
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
type Op struct {
	Key    string
	Value  []byte
	Delete bool
	Rev    int64
}

// Store is all the allocator needs from a datastore: consistent multi-key
// reads in one round trip, and all-or-nothing commits guarded by revisions.
type Store interface {
	// Read returns, for each Get, the matching keys, all at one revision.
	Read(ctx context.Context, gets ...Get) ([][]KV, error)
	// Commit applies every op if every guard holds and reports whether it did.
	Commit(ctx context.Context, ops ...Op) (bool, error)
}

// EtcdStore is the Store on etcd v3, every key under Prefix.
type EtcdStore struct {
	cli       *clientv3.Client
	prefix    string
	endpoints []string
}

// NewEtcdStore wraps a connected client.
func NewEtcdStore(cli *clientv3.Client) *EtcdStore {
	return &EtcdStore{cli: cli, prefix: Prefix, endpoints: cli.Endpoints()}
}

// Client returns the underlying etcd client.
func (s *EtcdStore) Client() *clientv3.Client { return s.cli }

func (s *EtcdStore) wrap(what string, err error) error {
	if etcdclient.IsUnavailable(err) {
		return etcdclient.Unreachable(s.endpoints, err)
	}
	return fmt.Errorf("etcd %s: %w", what, err)
}

// Read implements Store with one etcd transaction of gets and no compares.
func (s *EtcdStore) Read(ctx context.Context, gets ...Get) ([][]KV, error) {
	ops := make([]clientv3.Op, len(gets))
	for i, g := range gets {
		var opts []clientv3.OpOption
		if g.Prefix {
			opts = append(opts, clientv3.WithPrefix())
		}
		if g.KeysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		ops[i] = clientv3.OpGet(s.prefix+g.Key, opts...)
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, s.wrap("read", err)
	}
	out := make([][]KV, len(gets))
	for i, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			out[i] = append(out[i], KV{
				Key:         strings.TrimPrefix(string(kv.Key), s.prefix),
				Value:       kv.Value,
				ModRevision: kv.ModRevision,
			})
		}
	}
	return out, nil
}

// Commit implements Store with one guarded etcd transaction.
func (s *EtcdStore) Commit(ctx context.Context, ops ...Op) (bool, error) {
	var cmps []clientv3.Cmp
	var then []clientv3.Op
	for _, op := range ops {
		k := s.prefix + op.Key
		switch {
		case op.Rev == MustNotExist:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		case op.Rev > 0:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", op.Rev))
		}
		switch {
		case op.Delete:
			then = append(then, clientv3.OpDelete(k))
		case op.Value != nil:
			then = append(then, clientv3.OpPut(k, string(op.Value)))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Commit()
	if err != nil {
		return false, s.wrap("commit", err)
	}
	return resp.Succeeded, nil
}
