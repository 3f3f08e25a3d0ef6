package etcdhttp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam/store"
)

func TestReadCommitGuards(t *testing.T) {
	srv := etcdtest.Start(t)
	dead := etcdtest.Start(t)
	dead.Stop()
	// A dead endpoint first: calls fail over to the live one.
	s, err := New(Config{Endpoints: []string{dead.Endpoint, srv.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ok, err := s.Commit(ctx, store.Op{Key: "a/1", Value: []byte("one"), Rev: store.MustNotExist},
		store.Op{Key: "a/2", Value: []byte("two"), Rev: store.MustNotExist})
	if err != nil || !ok {
		t.Fatalf("create: %v %v", ok, err)
	}
	ok, cur, err := s.CommitOrGet(ctx, store.Op{Key: "a/1", Value: []byte("again"), Rev: store.MustNotExist})
	if err != nil || ok || len(cur) != 1 || string(cur[0].Value) != "one" || cur[0].Key != "a/1" {
		t.Fatalf("create over existing: ok=%v cur=%+v err=%v", ok, cur, err)
	}
	res, err := s.Read(ctx, store.Get{Key: "a/", Prefix: true}, store.Get{Key: "a/2"}, store.Get{Key: "missing"}, store.Get{Key: "a/", Prefix: true, KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res[0]) != 2 || string(res[1][0].Value) != "two" || len(res[2]) != 0 || res[3][0].Value != nil {
		t.Fatalf("read: %+v", res)
	}
	rev := res[1][0].ModRevision
	if ok, _ := s.Commit(ctx, store.Op{Key: "a/2", Value: []byte("2"), Rev: rev + 100}); ok {
		t.Fatal("commit with a wrong revision succeeded")
	}
	if ok, err := s.Commit(ctx, store.Op{Key: "a/2", Delete: true, Rev: rev}); !ok || err != nil {
		t.Fatalf("delete with the right revision: %v %v", ok, err)
	}
}

func TestUnreachableNamesEndpoints(t *testing.T) {
	dead := etcdtest.Start(t)
	dead.Stop()
	s, _ := New(Config{Endpoints: []string{dead.Endpoint}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := s.Read(ctx, store.Get{Key: "x"})
	if !errors.Is(err, store.ErrUnreachable) || !strings.Contains(err.Error(), dead.Endpoint) {
		t.Fatalf("want unreachable naming %s, got %v", dead.Endpoint, err)
	}
}

func TestBadTLSFilesNamed(t *testing.T) {
	_, err := New(Config{Endpoints: []string{"https://127.0.0.1:1"}, CACertFile: "/nonexistent/ca.pem"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ca.pem") {
		t.Fatalf("want error naming the file, got %v", err)
	}
}

func TestTLSWithClientCert(t *testing.T) {
	m, tf := etcdtest.StartTLS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(Config{Endpoints: []string{m.Endpoint}, CACertFile: tf.CA, CertFile: tf.ClientCert, KeyFile: tf.ClientKey})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, err := s.Commit(ctx, store.Op{Key: "tls", Value: []byte("yes"), Rev: store.MustNotExist}); !ok || err != nil {
		t.Fatalf("commit over tls: %v %v", ok, err)
	}
	res, err := s.Read(ctx, store.Get{Key: "tls"})
	if err != nil || string(res[0][0].Value) != "yes" {
		t.Fatalf("read over tls: %+v %v", res, err)
	}
	// Without a client certificate the server refuses.
	noCert, _ := New(Config{Endpoints: []string{m.Endpoint}, CACertFile: tf.CA})
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if _, err := noCert.Read(short, store.Get{Key: "tls"}); err == nil {
		t.Fatal("read without a client certificate succeeded")
	}
}
