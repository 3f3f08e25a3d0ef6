// Package etcdgrpc is the Store on etcd's gRPC API (clientv3), for the
// long-running programs and tools that already link the etcd client.
package etcdgrpc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brindle-net/brindle/ipam/store"
)

// Store implements store.Store with clientv3 transactions.
type Store struct {
	cli       *clientv3.Client
	prefix    string
	endpoints []string
}

// New wraps a connected client.
func New(cli *clientv3.Client) *Store {
	return &Store{cli: cli, prefix: store.Prefix, endpoints: cli.Endpoints()}
}

func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

func (s *Store) wrap(what string, err error) error {
	if unavailable(err) {
		return store.Unreachable(s.endpoints, err)
	}
	return fmt.Errorf("etcd %s: %w", what, err)
}

// Read is one etcd transaction of gets and no compares.
func (s *Store) Read(ctx context.Context, gets ...store.Get) ([][]store.KV, error) {
	ops := make([]clientv3.Op, len(gets))
	for i, g := range gets {
		var opts []clientv3.OpOption
		if g.Prefix {
			opts = append(opts, clientv3.WithPrefix())
		}
		if g.KeysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		if g.Serializable {
			opts = append(opts, clientv3.WithSerializable())
		}
		ops[i] = clientv3.OpGet(s.prefix+g.Key, opts...)
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, s.wrap("read", err)
	}
	out := make([][]store.KV, len(gets))
	for i, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			out[i] = append(out[i], store.KV{
				Key:            strings.TrimPrefix(string(kv.Key), s.prefix),
				Value:          kv.Value,
				ModRevision:    kv.ModRevision,
				CreateRevision: kv.CreateRevision,
			})
		}
	}
	return out, nil
}

// Commit is one guarded etcd transaction.
func (s *Store) Commit(ctx context.Context, ops ...store.Op) (bool, error) {
	ok, _, err := s.CommitOrGet(ctx, ops...)
	return ok, err
}

// CommitOrGet implements store.CommitGetter: the transaction's else branch
// reads the guarded keys.
func (s *Store) CommitOrGet(ctx context.Context, ops ...store.Op) (bool, []store.KV, error) {
	ok, _, cur, err := s.CommitRev(ctx, ops...)
	return ok, cur, err
}

// CommitRev implements store.RevCommitter.
func (s *Store) CommitRev(ctx context.Context, ops ...store.Op) (bool, int64, []store.KV, error) {
	var cmps []clientv3.Cmp
	var then, els []clientv3.Op
	for _, op := range ops {
		k := s.prefix + op.Key
		switch {
		case op.Prefix:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "<", op.Rev+1).WithPrefix())
			els = append(els, clientv3.OpGet(k, clientv3.WithPrefix()))
			continue
		case op.Rev == store.MustNotExist:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			els = append(els, clientv3.OpGet(k))
		case op.Rev > 0:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", op.Rev))
			els = append(els, clientv3.OpGet(k))
		}
		switch {
		case op.Delete:
			then = append(then, clientv3.OpDelete(k))
		case op.Value != nil:
			then = append(then, clientv3.OpPut(k, string(op.Value)))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		return false, 0, nil, s.wrap("commit", err)
	}
	if resp.Succeeded {
		return true, resp.Header.Revision, nil, nil
	}
	var cur []store.KV
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			cur = append(cur, store.KV{Key: strings.TrimPrefix(string(kv.Key), s.prefix), Value: kv.Value, ModRevision: kv.ModRevision, CreateRevision: kv.CreateRevision})
		}
	}
	return false, resp.Header.Revision, cur, nil
}
