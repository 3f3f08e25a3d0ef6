// Package etcdclient builds gRPC etcd clients (clientv3) from brindle's
// configuration, for the long-running daemon and the tools. The CNI plugin
// uses ipam/store/etcdhttp instead, to stay small.
package etcdclient

import (
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/brindle-net/brindle/conf"
)

// DialTimeout bounds connection setup. clientv3.New does not block on it
// (no grpc.WithBlock), so each call's context is what bounds the wait.
const DialTimeout = 2 * time.Second

// New returns a client for cfg. TLS files are read here and never logged.
func New(cfg conf.EtcdConfig) (*clientv3.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	var tlsCfg *tls.Config
	if cfg.CACertFile != "" || cfg.CertFile != "" {
		info := transport.TLSInfo{
			TrustedCAFile: cfg.CACertFile,
			CertFile:      cfg.CertFile,
			KeyFile:       cfg.KeyFile,
		}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcd tls (ca %q, cert %q): %w", cfg.CACertFile, cfg.CertFile, err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		TLS:                  tlsCfg,
		// gRPC's reconnect backoff grows to 2 minutes by default: after an
		// etcd outage the daemon would notice the return that late. Keep
		// retrying every second at most.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: DialTimeout,
		})},
		// zap's default logger writes JSON to stderr; callers log with slog.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return cli, nil
}
