// Package etcdtest runs real etcd servers inside a test process: one member,
// or a small cluster whose members can be stopped to test failover. Tests
// use these instead of any fake of etcd.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Member is one running embedded etcd member.
type Member struct {
	Name     string
	Endpoint string // client URL, http://127.0.0.1:port
	etcd     *embed.Etcd
	stopped  bool
}

// Stop closes the member; the rest of the cluster keeps serving.
func (m *Member) Stop() {
	if !m.stopped {
		m.stopped = true
		m.etcd.Close()
	}
}

// Server is a single embedded etcd member with a client connected to it.
type Server struct {
	*Member
	Client *clientv3.Client
}

// Start runs a one-member etcd on 127.0.0.1 with OS-chosen ports, stopped
// when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	m, err := startOne(tb.TempDir(), "default", nil)
	if err != nil {
		tb.Fatalf("start embedded etcd: %v", err)
	}
	tb.Cleanup(m.Stop)
	return &Server{Member: m, Client: NewClient(tb, m.Endpoint)}
}

// NewClient connects to the given endpoints; it is closed when the test ends.
func NewClient(tb testing.TB, endpoints ...string) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Cluster is an n-member embedded etcd cluster.
type Cluster struct {
	Members []*Member
}

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.Endpoint)
	}
	return eps
}

// StartCluster runs an n-member cluster on 127.0.0.1. Peer ports must be
// known before the members start, so they are reserved by listening on port
// 0 and closing, then handed to etcd (a small race with other processes that
// tests accept).
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	peers := make([]string, n)
	var initial []string
	for i := range n {
		p, err := freeURL()
		if err != nil {
			tb.Fatalf("reserve peer port: %v", err)
		}
		peers[i] = p
		initial = append(initial, fmt.Sprintf("m%d=%s", i, p))
	}
	c := &Cluster{Members: make([]*Member, n)}
	errs := make(chan error, n)
	for i := range n {
		go func() {
			m, err := startOne(tb.TempDir(), fmt.Sprintf("m%d", i), &clusterSpec{
				peerURL: peers[i], initial: strings.Join(initial, ","),
			})
			c.Members[i] = m
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			for _, m := range c.Members {
				if m != nil {
					m.Stop()
				}
			}
			tb.Fatalf("start etcd cluster: %v", err)
		}
	}
	tb.Cleanup(func() {
		for _, m := range c.Members {
			m.Stop()
		}
	})
	return c
}

type clusterSpec struct {
	peerURL string
	initial string
}

func startOne(dir, name string, cs *clusterSpec) (*Member, error) {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	// Even at "error" level, a member that is stopped logs its listeners
	// closing; tests stop members on purpose.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	local, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls = []url.URL{*local}
	cfg.AdvertiseClientUrls = []url.URL{*local}
	if cs == nil {
		cfg.ListenPeerUrls = []url.URL{*local}
		cfg.AdvertisePeerUrls = []url.URL{*local}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	} else {
		pu, err := url.Parse(cs.peerURL)
		if err != nil {
			return nil, err
		}
		cfg.ListenPeerUrls = []url.URL{*pu}
		cfg.AdvertisePeerUrls = []url.URL{*pu}
		cfg.InitialCluster = cs.initial
		cfg.InitialClusterToken = "brindle-test"
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("member %s: not ready after 30s", name)
	}
	return &Member{Name: name, Endpoint: "http://" + e.Clients[0].Addr().String(), etcd: e}, nil
}

func freeURL() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "http://" + l.Addr().String(), nil
}

// StartIn runs a one-member etcd whose listeners are created inside do (for
// example inside a test network namespace, so that processes born there
// reach it on 127.0.0.1), and returns a client that dials through dial.
func StartIn(tb testing.TB, do func(func() error) error, dial func(ctx context.Context, addr string) (net.Conn, error)) *Server {
	tb.Helper()
	var m *Member
	dir := tb.TempDir()
	if err := do(func() (err error) {
		m, err = startOne(dir, "default", nil)
		return err
	}); err != nil {
		tb.Fatalf("start embedded etcd: %v", err)
	}
	tb.Cleanup(m.Stop)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.Endpoint},
		DialTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return &Server{Member: m, Client: cli}
}
