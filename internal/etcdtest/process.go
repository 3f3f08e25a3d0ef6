package etcdtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/brindle-net/brindle/internal/testenv"
)

// StartProcess runs a one-member etcd in a process of its own — the
// labetcd program in bin — inside network namespace n, listening on host,
// with its data and log in dir. In its own process every socket etcd opens
// is in n, including the connection its JSON gateway (which brindle-ipam
// speaks) makes to its own gRPC listener; an etcd embedded in a test
// process would open that one from the wrong namespace. The process dies
// with its parent.
func StartProcess(n ns.NetNS, bin, dir, host string) (*Member, error) {
	return StartProcessWith(n, bin, dir, host, MemberOptions{})
}

// StartProcessWith is StartProcess with options: a fixed client port (to
// start a stopped member again where its clients look for it) or a member
// of a cluster.
func StartProcessWith(n ns.NetNS, bin, dir, host string, o MemberOptions) (*Member, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	args := []string{"--dir", filepath.Join(dir, "data"), "--host", host}
	if o.ClientPort != 0 {
		args = append(args, "--port", fmt.Sprint(o.ClientPort))
	}
	if o.InitialCluster != "" {
		args = append(args, "--name", o.Name, "--peer-url", o.PeerURL, "--initial-cluster", o.InitialCluster)
	}
	cmd := exec.Command(filepath.Join(bin, "labetcd"), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "etcd.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited, err := testenv.StartIn(n, cmd)
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start labetcd (built by `make testbins`?): %w", err)
	}
	done := make(chan struct{})
	go func() {
		err := <-exited
		fmt.Fprintf(logf, "labetcd exited: %v\n", err)
		logf.Close()
		close(done)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a stalled member must hear the TERM
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	urlc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		urlc <- strings.TrimSpace(line)
	}()
	select {
	case u := <-urlc:
		if u == "" {
			stop()
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("labetcd exited: %s", b)
		}
		return &Member{Name: "process", Endpoint: u, stop: stop, Process: cmd.Process}, nil
	case <-time.After(60 * time.Second):
		stop()
		return nil, fmt.Errorf("labetcd did not start in 40s")
	}
}

// StartProcessIn is StartProcess for tests: the member is stopped when the
// test ends, and the returned client dials from inside n.
func StartProcessIn(tb testing.TB, n ns.NetNS, bin, host string) *Server {
	tb.Helper()
	m, err := StartProcess(n, bin, tb.TempDir(), host)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Stop)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.Endpoint},
		DialTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(DialIn(n))},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return &Server{Member: m, Client: cli}
}

// DialIn connects from inside namespace n.
func DialIn(n ns.NetNS) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := n.Do(func(ns.NetNS) (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
}
