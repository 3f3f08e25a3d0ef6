// Package etcdtest runs real etcd servers inside a test process: one member,
// or a small cluster whose members can be stopped to test failover. Tests
// use these instead of any fake of etcd.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Member is one running embedded etcd member.
type Member struct {
	Name     string
	Endpoint string // client URL, http://127.0.0.1:port
	etcd     *embed.Etcd
	stop     func() // set when the member runs in a process of its own
	stopped  bool
	// Process is the member's process, when it runs in one of its own
	// (StartProcess): tests stall it with SIGSTOP.
	Process *os.Process
}

// Stop closes the member; the rest of the cluster keeps serving.
func (m *Member) Stop() {
	if m.stopped {
		return
	}
	m.stopped = true
	if m.stop != nil {
		m.stop()
		return
	}
	m.etcd.Close()
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
	m, err := startOne(tb.TempDir(), "default", localhost, 0, nil, nil)
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
		p, err := freeURL(localhost)
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
			m, err := startOne(tb.TempDir(), fmt.Sprintf("m%d", i), localhost, 0, &clusterSpec{
				peerURL: peers[i], initial: strings.Join(initial, ","),
			}, nil)
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

// localhost is where the members of this process listen.
const localhost = "127.0.0.1"

// StartMember runs a one-member etcd with its data in dir on host (an
// address; 127.0.0.1 when empty), for programs rather than tests; Stop it
// when done.
func StartMember(dir, host string) (*Member, error) {
	return StartMemberWith(dir, host, MemberOptions{})
}

// MemberOptions are the settings of StartMemberWith beyond StartMember's.
type MemberOptions struct {
	// ClientPort is the client port; 0 picks a free one. A member started
	// again on its data directory keeps its clients with the same port.
	ClientPort int
	// Name, PeerURL and InitialCluster ("m0=http://...,m1=...") make the
	// member one of a cluster; empty: a cluster of one named "default".
	Name, PeerURL, InitialCluster string
}

// StartMemberWith is StartMember with options.
func StartMemberWith(dir, host string, o MemberOptions) (*Member, error) {
	if host == "" {
		host = localhost
	}
	name := o.Name
	if name == "" {
		name = "default"
	}
	var cs *clusterSpec
	if o.InitialCluster != "" {
		cs = &clusterSpec{peerURL: o.PeerURL, initial: o.InitialCluster}
	}
	return startOne(dir, name, host, o.ClientPort, cs, nil)
}

type clusterSpec struct {
	peerURL string
	initial string
}

func startOne(dir, name, host string, port int, cs *clusterSpec, tf *TLSFiles) (*Member, error) {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	// Even at "error" level, a member that is stopped logs its listeners
	// closing; tests stop members on purpose.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	local, _ := url.Parse("http://" + net.JoinHostPort(host, "0"))
	// The client port is chosen before start rather than left at 0: etcd's
	// JSON gateway (which brindle-ipam uses) dials the configured client
	// URL, and port 0 there means nothing.
	cu := "http://" + net.JoinHostPort(host, fmt.Sprint(port))
	if port == 0 {
		var err error
		if cu, err = freeURL(host); err != nil {
			return nil, err
		}
	}
	client, _ := url.Parse(cu)
	scheme := "http://"
	if tf != nil {
		client.Scheme, scheme = "https", "https://"
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: tf.ServerCert, KeyFile: tf.ServerKey,
			TrustedCAFile: tf.CA, ClientCertAuth: true}
	}
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
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
	return &Member{Name: name, Endpoint: scheme + e.Clients[0].Addr().String(), etcd: e}, nil
}

func freeURL(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "http://" + l.Addr().String(), nil
}
