package ipam

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
	"github.com/brindle-net/brindle/ipam/store/etcdhttp"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newAlloc starts a real embedded etcd for the test and returns an
// allocator on it.
func newAlloc(t *testing.T) (*Allocator, *etcdtest.Server) {
	t.Helper()
	return newAllocOn(t, "grpc")
}

// newAllocOn is newAlloc with the backend named: "grpc" (clientv3, the
// daemon's and tools') or "http" (the JSON gateway, the CNI plugin's).
func newAllocOn(t *testing.T, backend string) (*Allocator, *etcdtest.Server) {
	t.Helper()
	s := etcdtest.Start(t)
	return allocOn(t, backend, s.Client, s.Endpoint), s
}

// allocOn is an allocator on the named backend, reaching etcd through cli
// (grpc) or endpoints (http).
func allocOn(t *testing.T, backend string, cli *clientv3.Client, endpoints ...string) *Allocator {
	t.Helper()
	var st Store = etcdgrpc.New(cli)
	if backend == "http" {
		hs, err := etcdhttp.New(etcdhttp.Config{Endpoints: endpoints})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(hs.Close)
		st = hs
	}
	a := New(st)
	a.Log = quietLog()
	return a
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func addPool(t *testing.T, a *Allocator, name, cidr string, mut func(*conf.IPPool)) {
	t.Helper()
	p := conf.IPPool{Metadata: conf.ObjectMeta{Name: name}, Spec: conf.IPPoolSpec{CIDR: cidr}}
	if mut != nil {
		mut(&p)
	}
	if _, err := a.ApplyPool(ctxT(t), p); err != nil {
		t.Fatalf("apply pool %s: %v", name, err)
	}
}

func assign4(t *testing.T, a *Allocator, node, handle string) HandleAddr {
	t.Helper()
	got, err := a.Assign(ctxT(t), AssignRequest{Handle: handle, Node: node, IPv4: true})
	if err != nil {
		t.Fatalf("assign %s on %s: %v", handle, node, err)
	}
	if len(got) != 1 {
		t.Fatalf("assign %s: got %v", handle, got)
	}
	return got[0]
}

func readBlock(t *testing.T, a *Allocator, c netip.Prefix) (*Block, bool) {
	t.Helper()
	res, err := a.Store.Read(ctxT(t), Get{Key: blockKey(c)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res[0]) == 0 {
		return nil, false
	}
	var b Block
	if err := decode(res[0][0], &b); err != nil {
		t.Fatal(err)
	}
	return &b, true
}

// keys lists every stored key under Prefix, for "nothing left behind" checks.
func keys(t *testing.T, cli *clientv3.Client, under string) []string {
	t.Helper()
	resp, err := cli.Get(ctxT(t), Prefix+under, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), Prefix))
	}
	return out
}
