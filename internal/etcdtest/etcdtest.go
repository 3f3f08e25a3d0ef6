// Package etcdtest runs real etcd servers inside a test process: one member,
// or a small cluster whose members can be stopped to test failover. Tests
// use these instead of any fake of etcd.
package etcdtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
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
	proc     *exec.Cmd // set when the member runs in a child process
	stdin    io.Closer
	stopped  bool
}

// Stop closes the member; the rest of the cluster keeps serving.
func (m *Member) Stop() {
	if m.stopped {
		return
	}
	m.stopped = true
	if m.proc != nil {
		_ = m.stdin.Close() // the child stops when its stdin closes
		done := make(chan struct{})
		go func() { _ = m.proc.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = m.proc.Process.Kill()
			<-done
		}
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
	m, err := startOne(tb.TempDir(), "default", nil, nil)
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

// StartMember runs a one-member etcd with its data in dir, for programs
// (benchmarks, the lab) rather than tests; Stop it when done. Called inside
// a network namespace, its listeners live in that namespace.
func StartMember(dir string) (*Member, error) {
	return startOne(dir, "default", nil, nil)
}

type clusterSpec struct {
	peerURL string
	initial string
}

func startOne(dir, name string, cs *clusterSpec, tf *TLSFiles) (*Member, error) {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	// Even at "error" level, a member that is stopped logs its listeners
	// closing; tests stop members on purpose.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	local, _ := url.Parse("http://127.0.0.1:0")
	// The client port is chosen before start rather than left at 0: etcd's
	// JSON gateway (which brindle-ipam uses) dials the configured client
	// URL, and port 0 there means nothing.
	cu, err := freeURL()
	if err != nil {
		return nil, err
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

func freeURL() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "http://" + l.Addr().String(), nil
}

// childEnv, when set in the environment, makes RunChildIfAsked run etcd.
const childEnv = "BRINDLE_ETCDTEST_CHILD_DIR"

// RunChildIfAsked turns the current process into an etcd member when it was
// started by StartProcessIn: it prints the endpoint, serves until its stdin
// closes (the parent exited or stopped it), and exits. Call it first thing
// in TestMain (or main).
func RunChildIfAsked() {
	dir := os.Getenv(childEnv)
	if dir == "" {
		return
	}
	m, err := startOne(dir, "default", nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest child:", err)
		os.Exit(1)
	}
	fmt.Println("ENDPOINT " + m.Endpoint)
	_, _ = io.Copy(io.Discard, os.Stdin)
	m.Stop()
	os.Exit(0)
}

// SpawnMember runs a one-member etcd in a child process — this binary
// again, which must call RunChildIfAsked first thing — with its data in dir.
// start launches the command, for example inside a network namespace so
// that the whole server, its JSON gateway included, lives there. Programs
// (benchmarks, the lab) use it directly; tests use StartProcessIn.
func SpawnMember(dir string, start func(*exec.Cmd) error) (*Member, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := start(cmd); err != nil {
		return nil, fmt.Errorf("start etcd child: %w", err)
	}
	m := &Member{Name: "child", proc: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ENDPOINT ") {
		m.Stop()
		return nil, fmt.Errorf("etcd child: no endpoint (%q): %v", line, err)
	}
	m.Endpoint = strings.TrimSpace(strings.TrimPrefix(line, "ENDPOINT "))
	return m, nil
}

// StartProcessIn is SpawnMember for tests: the member is stopped when the
// test ends, and the returned client dials through dial.
func StartProcessIn(tb testing.TB, start func(*exec.Cmd) error, dial func(ctx context.Context, addr string) (net.Conn, error)) *Server {
	tb.Helper()
	m, err := SpawnMember(tb.TempDir(), start)
	if err != nil {
		tb.Fatal(err)
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
