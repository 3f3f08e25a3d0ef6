// Package nodeapi is brindled's API for brindlectl about what only the node
// knows: a pod's packets (capture) and its interface and routes (pod). It
// is served on a unix socket that only root can use and, when configured,
// on a mutual-TLS listener for reaching a node from elsewhere without
// Kubernetes. It never serves without authentication on a network address.
package nodeapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/capture"
)

// DefaultSocket is where brindled serves the node API: in the directory the
// DaemonSet shares with the host, so root on the host and `kubectl exec`
// into the brindled container reach the same socket.
const DefaultSocket = "/var/lib/brindle/nodeapi.sock"

// DefaultPort is the mutual-TLS listener's port when --nodeapi-listen gives
// none and the port a client dials on another node.
const DefaultPort = 9098

// Config is the node API's wiring.
type Config struct {
	Node string
	Etcd *clientv3.Client
	// Socket is the unix socket path ("" for none).
	Socket string
	// Listen, with TLSCert, TLSKey and ClientCA (PEM files), serves mutual
	// TLS: clients must present a certificate signed by ClientCA.
	Listen, TLSCert, TLSKey, ClientCA string
	Limits                            capture.Limits
	Log                               *slog.Logger
	// Open opens packet sources (default capture.OpenAFPacket).
	Open capture.OpenFunc
	// Pod reads a pod's interface and routes (default: netlink in the
	// current network namespace).
	Pod PodReader
	// Learned lists the node's BGP paths learned from peers, "prefix via
	// nexthop from peer" (bgpd.Speaker.Learned); nil leaves them out.
	Learned func(ctx context.Context) ([]string, error)
}

// Start serves the node API until ctx ends; stop waits for the listeners
// to close. An error means nothing is served.
func Start(ctx context.Context, cfg Config) (stop func(), err error) {
	if cfg.Open == nil {
		cfg.Open = capture.OpenAFPacket
	}
	if cfg.Pod == nil {
		cfg.Pod = netlinkPod{}
	}
	if cfg.Limits.MaxConcurrent <= 0 {
		cfg.Limits.MaxConcurrent = capture.DefaultLimits.MaxConcurrent
	}
	s := &server{cfg: cfg, sem: make(chan struct{}, cfg.Limits.MaxConcurrent)}
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	if cfg.Socket != "" {
		ln, err := listenUnix(cfg.Socket)
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
	}
	if cfg.Listen != "" {
		ln, err := listenTLS(cfg)
		if err != nil {
			closeAll()
			return nil, err
		}
		lns = append(lns, ln)
	}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	for _, ln := range lns {
		go func() {
			srv.Serve(ln)
			done <- struct{}{}
		}()
	}
	cfg.Log.Info("node API serving", "socket", cfg.Socket, "tls", cfg.Listen)
	stopped := make(chan struct{})
	go func() {
		<-ctx.Done()
		srv.Close() // captures end: their streams are cut at a record boundary by the client
		for range lns {
			<-done
		}
		if cfg.Socket != "" {
			os.Remove(cfg.Socket)
		}
		close(stopped)
	}()
	return func() { <-stopped }, nil
}

// listenUnix listens on a root-only unix socket, replacing a stale one.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("node API socket %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("node API socket %s: another brindled serves it", path)
	}
	os.Remove(path)
	// Bind in a directory only root can enter, then rename into place, so
	// the socket is never reachable with looser permissions.
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".nodeapi-")
	if err != nil {
		return nil, fmt.Errorf("node API socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	tmpSock := filepath.Join(tmp, "sock")
	ln, err := net.Listen("unix", tmpSock)
	if err != nil {
		return nil, fmt.Errorf("node API socket %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmpSock, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmpSock, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("node API socket %s: %w", path, err)
	}
	return rootOnly{ln.(*net.UnixListener)}, nil
}

// rootOnly accepts connections from uid 0 only (SO_PEERCRED), on top of the
// socket's 0600 mode.
type rootOnly struct{ *net.UnixListener }

func (l rootOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		raw, err := c.SyscallConn()
		if err != nil {
			c.Close()
			continue
		}
		var cred *unix.Ucred
		raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
		if err != nil || cred.Uid != 0 {
			c.Close()
			continue
		}
		return c, nil
	}
}

func listenTLS(cfg Config) (net.Listener, error) {
	if cfg.TLSCert == "" || cfg.TLSKey == "" || cfg.ClientCA == "" {
		return nil, errors.New("node API --nodeapi-listen needs --nodeapi-tls-cert, --nodeapi-tls-key and --nodeapi-client-ca: it never serves without client certificates")
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("node API TLS certificate: %w", err)
	}
	pem, err := os.ReadFile(cfg.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("node API client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("node API client CA %s: no PEM certificate in it", cfg.ClientCA)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("node API --nodeapi-listen %s: %w", cfg.Listen, err)
	}
	return tls.NewListener(ln, &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}), nil
}
