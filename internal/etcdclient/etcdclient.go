// Package etcdclient builds etcd clients from brindle's configuration, with
// timeouts that keep a CNI call from hanging when etcd is unreachable.
package etcdclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/brindle-net/brindle/conf"
)

// DialTimeout bounds connection setup. clientv3.New does not block on it
// (no grpc.WithBlock), so a call's context is what really bounds the wait.
const DialTimeout = 2 * time.Second

// New returns a client for cfg. TLS files are read here and never logged.
func New(cfg conf.EtcdConfig) (*clientv3.Client, error) {
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
		// zap's default logger writes JSON to stderr; the CNI plugin keeps
		// stderr for its own slog output.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return cli, nil
}

// ErrUnreachable marks errors caused by etcd not answering in time.
var ErrUnreachable = errors.New("etcd unreachable")

// IsUnavailable reports whether err means etcd did not answer (as opposed to
// answering with an error).
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnreachable) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// Unreachable wraps err with a message naming the endpoints that did not
// answer, so an operator sees at once which etcd the plugin tried.
func Unreachable(endpoints []string, err error) error {
	return fmt.Errorf("%w at %s: %v", ErrUnreachable, strings.Join(endpoints, ","), err)
}
