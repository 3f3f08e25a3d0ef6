// Package etcdhttp is the Store on etcd's JSON gateway (/v3/kv/txn over
// HTTP/1.1 with keep-alive, TLS with client certificates), built on the
// standard library and internal/http1 (no net/http, whose package inits
// and size every brindle-ipam process paid). Each request is written and its response read by
// the calling goroutine on a pooled connection.
//
// Why not clientv3: brindle-ipam is a CNI plugin, started afresh for every
// ADD. The gRPC client and its protobuf registries make the binary several
// times larger and cost ~5 ms of start-up per call; this backend keeps the
// plugin close to host-local's start-up time. etcd serves the gateway on
// its client port by default (--enable-grpc-gateway, on since v3.3).
package etcdhttp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/http1"
	"github.com/brindle-net/brindle/ipam/store"
)

// DialTimeout bounds one TCP (and TLS) connection attempt, so an endpoint
// that drops packets cannot use up the whole call's deadline.
const DialTimeout = 2 * time.Second

// noDeadlineCeiling bounds a request whose context has no deadline.
const noDeadlineCeiling = 30 * time.Second

// Config says how to reach etcd.
type Config struct {
	Endpoints  []string
	CACertFile string
	CertFile   string
	KeyFile    string
}

// Store implements store.Store over HTTP.
type Store struct {
	endpoints []endpoint
	tls       *tls.Config
	prefix    string
	// preferred is the endpoint that answered last; calls start there.
	preferred atomic.Int32
	mu        sync.Mutex
	idle      map[string][]*conn // by endpoint host
}

type endpoint struct {
	url  string // as configured, for messages
	host string // host:port to dial
	tls  bool
}

// conn is one keep-alive connection. Requests are written and responses
// read by the calling goroutine itself: net/http's transport hands every
// response between goroutines, which in a freshly started process costs
// more than the round trip does.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

// New returns a Store for cfg. Credential files are read here and never logged.
func New(cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	s := &Store{prefix: store.Prefix, idle: map[string][]*conn{}}
	for _, e := range cfg.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("etcd endpoint %q: want http(s)://host:port", e)
		}
		s.endpoints = append(s.endpoints, endpoint{url: strings.TrimRight(e, "/"), host: u.Host, tls: u.Scheme == "https"})
	}
	if cfg.CACertFile != "" || cfg.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
		if cfg.CACertFile != "" {
			pem, err := os.ReadFile(cfg.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("etcd ca cert %q: %w", cfg.CACertFile, err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("etcd ca cert %q: no PEM certificate found", cfg.CACertFile)
			}
		}
		if cfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("etcd client cert %q / key %q: %w", cfg.CertFile, cfg.KeyFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		s.tls = tc
	}
	// A fresh process (every CNI call is one) starts at a random member:
	// the load spreads, and a member that is down costs only the calls
	// that happen to start there.
	s.preferred.Store(int32(rand.IntN(len(s.endpoints))))
	return s, nil
}

// Close closes idle connections.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, cs := range s.idle {
		for _, c := range cs {
			_ = c.c.Close()
		}
		delete(s.idle, h)
	}
}

func (s *Store) getConn(ctx context.Context, ep endpoint) (*conn, bool, error) {
	s.mu.Lock()
	if cs := s.idle[ep.host]; len(cs) > 0 {
		c := cs[len(cs)-1]
		s.idle[ep.host] = cs[:len(cs)-1]
		s.mu.Unlock()
		return c, true, nil
	}
	s.mu.Unlock()
	d := net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", ep.host)
	if err != nil {
		return nil, false, err
	}
	if ep.tls {
		tc := s.tls
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
		}
		tc = tc.Clone()
		if h, _, err := net.SplitHostPort(ep.host); err == nil {
			tc.ServerName = h
		}
		tlsConn := tls.Client(nc, tc)
		hctx, cancel := context.WithTimeout(ctx, DialTimeout)
		err := tlsConn.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, false, fmt.Errorf("tls handshake with %s: %w", ep.host, err)
		}
		nc = tlsConn
	}
	return &conn{c: nc, r: bufio.NewReader(nc)}, false, nil
}

func (s *Store) putConn(ep endpoint, c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.idle[ep.host]) >= 64 {
		_ = c.c.Close()
		return
	}
	s.idle[ep.host] = append(s.idle[ep.host], c)
}

type kv struct {
	Key            []byte `json:"key"`
	Value          []byte `json:"value"`
	ModRevision    string `json:"mod_revision"`
	CreateRevision string `json:"create_revision"`
}

type rangeReq struct {
	Key          []byte `json:"key"`
	RangeEnd     []byte `json:"range_end,omitempty"`
	KeysOnly     bool   `json:"keys_only,omitempty"`
	Serializable bool   `json:"serializable,omitempty"`
}

type putReq struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

type deleteReq struct {
	Key []byte `json:"key"`
}

type requestOp struct {
	Range  *rangeReq  `json:"request_range,omitempty"`
	Put    *putReq    `json:"request_put,omitempty"`
	Delete *deleteReq `json:"request_delete_range,omitempty"`
}

type compare struct {
	Result         string `json:"result"`
	Target         string `json:"target"`
	Key            []byte `json:"key"`
	RangeEnd       []byte `json:"range_end,omitempty"`
	ModRevision    string `json:"mod_revision,omitempty"`
	CreateRevision string `json:"create_revision,omitempty"`
}

type txnReq struct {
	Compare []compare   `json:"compare,omitempty"`
	Success []requestOp `json:"success,omitempty"`
	Failure []requestOp `json:"failure,omitempty"`
}

type txnResp struct {
	Header struct {
		Revision string `json:"revision"`
	} `json:"header"`
	Succeeded bool `json:"succeeded"`
	Responses []struct {
		Range *struct {
			Kvs []kv `json:"kvs"`
		} `json:"response_range"`
	} `json:"responses"`
}

// Read is one transaction of range requests.
func (s *Store) Read(ctx context.Context, gets ...store.Get) ([][]store.KV, error) {
	req := txnReq{}
	for _, g := range gets {
		r := &rangeReq{Key: []byte(s.prefix + g.Key), KeysOnly: g.KeysOnly, Serializable: g.Serializable}
		if g.Prefix {
			r.RangeEnd = []byte(store.PrefixEnd(s.prefix + g.Key))
		}
		req.Success = append(req.Success, requestOp{Range: r})
	}
	var resp txnResp
	if err := s.txn(ctx, req, &resp); err != nil {
		return nil, err
	}
	if len(resp.Responses) != len(gets) {
		return nil, fmt.Errorf("etcd read: %d responses for %d requests", len(resp.Responses), len(gets))
	}
	out := make([][]store.KV, len(gets))
	for i, r := range resp.Responses {
		if r.Range == nil {
			continue
		}
		for _, e := range r.Range.Kvs {
			rev, _ := strconv.ParseInt(e.ModRevision, 10, 64)
			created, _ := strconv.ParseInt(e.CreateRevision, 10, 64)
			out[i] = append(out[i], store.KV{Key: strings.TrimPrefix(string(e.Key), s.prefix), Value: e.Value, ModRevision: rev, CreateRevision: created})
		}
	}
	return out, nil
}

// Commit is one guarded transaction.
func (s *Store) Commit(ctx context.Context, ops ...store.Op) (bool, error) {
	ok, _, err := s.CommitOrGet(ctx, ops...)
	return ok, err
}

// CommitOrGet implements store.CommitGetter: the transaction's failure
// branch reads the guarded keys.
func (s *Store) CommitOrGet(ctx context.Context, ops ...store.Op) (bool, []store.KV, error) {
	ok, _, cur, err := s.CommitRev(ctx, ops...)
	return ok, cur, err
}

// CommitRev implements store.RevCommitter.
func (s *Store) CommitRev(ctx context.Context, ops ...store.Op) (bool, int64, []store.KV, error) {
	req := txnReq{}
	for _, op := range ops {
		k := []byte(s.prefix + op.Key)
		switch {
		case op.Prefix:
			end := []byte(store.PrefixEnd(s.prefix + op.Key))
			req.Compare = append(req.Compare, compare{Result: "LESS", Target: "MOD", Key: k, RangeEnd: end, ModRevision: strconv.FormatInt(op.Rev+1, 10)})
			req.Failure = append(req.Failure, requestOp{Range: &rangeReq{Key: k, RangeEnd: end}})
			continue
		case op.Rev == store.MustNotExist:
			req.Compare = append(req.Compare, compare{Result: "EQUAL", Target: "CREATE", Key: k, CreateRevision: "0"})
			req.Failure = append(req.Failure, requestOp{Range: &rangeReq{Key: k}})
		case op.Rev > 0:
			req.Compare = append(req.Compare, compare{Result: "EQUAL", Target: "MOD", Key: k, ModRevision: strconv.FormatInt(op.Rev, 10)})
			req.Failure = append(req.Failure, requestOp{Range: &rangeReq{Key: k}})
		}
		switch {
		case op.Delete:
			req.Success = append(req.Success, requestOp{Delete: &deleteReq{Key: k}})
		case op.Value != nil:
			req.Success = append(req.Success, requestOp{Put: &putReq{Key: k, Value: op.Value}})
		}
	}
	var resp txnResp
	if err := s.txn(ctx, req, &resp); err != nil {
		return false, 0, nil, err
	}
	rev, _ := strconv.ParseInt(resp.Header.Revision, 10, 64)
	if resp.Succeeded {
		return true, rev, nil, nil
	}
	var cur []store.KV
	for _, r := range resp.Responses {
		if r.Range == nil {
			continue
		}
		for _, e := range r.Range.Kvs {
			mod, _ := strconv.ParseInt(e.ModRevision, 10, 64)
			created, _ := strconv.ParseInt(e.CreateRevision, 10, 64)
			cur = append(cur, store.KV{Key: strings.TrimPrefix(string(e.Key), s.prefix), Value: e.Value, ModRevision: mod, CreateRevision: created})
		}
	}
	return false, rev, cur, nil
}

// minAttempt is the least time an endpoint is given (unless less is left).
const minAttempt = time.Second

// attemptContext is ctx with a deadline at its share of what is left for
// the n endpoints still to try.
func attemptContext(ctx context.Context, n int) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok || n <= 1 {
		return context.WithCancel(ctx)
	}
	share := time.Until(dl) / time.Duration(n)
	if share < minAttempt {
		share = minAttempt
	}
	return context.WithTimeout(ctx, share)
}

// gatewayError is the body the gateway sends with a non-200 status.
type gatewayError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// HTTP statuses the gateway answers with.
const (
	statusOK          = 200
	statusUnavailable = 503
)

// grpcUnavailable is codes.Unavailable: no leader, leader changed, stopping.
const grpcUnavailable = 14

// txn posts one transaction, trying each endpoint in turn (starting with the
// one that answered last) until one answers or ctx ends.
func (s *Store) txn(ctx context.Context, req txnReq, resp *txnResp) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("etcd txn: encode: %w", err)
	}
	start := int(s.preferred.Load())
	var lastErr error
	for i := range s.endpoints {
		idx := (start + i) % len(s.endpoints)
		// Each endpoint gets its share of what is left of the deadline,
		// so one member that accepts and never answers (stalled, or cut
		// off from its leader) cannot use up the whole call while the
		// others could answer it.
		actx, cancel := attemptContext(ctx, len(s.endpoints)-i)
		err := s.post(actx, s.endpoints[idx], body, resp)
		cancel()
		if err == nil {
			s.preferred.Store(int32(idx))
			return nil
		}
		var ge *gatewayError
		if errors.As(err, &ge) && ge.Code != grpcUnavailable {
			return fmt.Errorf("etcd %s: %s", s.endpoints[idx].url, ge.Message)
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	var urls []string
	for _, e := range s.endpoints {
		urls = append(urls, e.url)
	}
	return store.Unreachable(urls, lastErr)
}

func (e *gatewayError) Error() string { return fmt.Sprintf("code %d: %s", e.Code, e.Message) }

func (s *Store) post(ctx context.Context, ep endpoint, body []byte, resp *txnResp) error {
	c, reused, err := s.getConn(ctx, ep)
	if err != nil {
		return err
	}
	status, data, err := s.roundTrip(ctx, ep, c, body)
	if err != nil && reused && ctx.Err() == nil {
		// The server may have closed an idle connection. Sending again is
		// safe even if the first request was applied: its guards then fail
		// and the caller re-reads.
		_ = c.c.Close()
		if c, _, err = s.getConn(ctx, ep); err != nil {
			return err
		}
		status, data, err = s.roundTrip(ctx, ep, c, body)
	}
	if err != nil {
		_ = c.c.Close()
		return err
	}
	s.putConn(ep, c)
	if status != statusOK {
		ge := &gatewayError{}
		if json.Unmarshal(data, ge) != nil || ge.Message == "" {
			ge.Message = fmt.Sprintf("http %d: %.200s", status, data)
		}
		if status == statusUnavailable && ge.Code == 0 {
			ge.Code = grpcUnavailable
		}
		return ge
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return fmt.Errorf("decode txn response: %w", err)
	}
	return nil
}

// roundTrip writes one request and reads its response on c, within ctx's deadline.
func (s *Store) roundTrip(ctx context.Context, ep endpoint, c *conn, body []byte) (int, []byte, error) {
	// Reads and writes are bounded by the deadline only (no goroutine
	// watches ctx); callers always set one, and without it a ceiling
	// still keeps a dead server from hanging the plugin.
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(noDeadlineCeiling)
	}
	if err := c.c.SetDeadline(dl); err != nil {
		return 0, nil, err
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "POST /v3/kv/txn HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", ep.host, len(body))
	req.Write(body)
	if _, err := c.c.Write(req.Bytes()); err != nil {
		return 0, nil, err
	}
	r, err := http1.ReadResponse(c.r, maxResponse)
	if err != nil {
		return 0, nil, err
	}
	if r.Close {
		return 0, nil, errors.New("server closed the connection")
	}
	return r.StatusCode, r.Body, nil
}

// maxResponse bounds one response (every block of a large cluster, for GC).
const maxResponse = 1 << 30

// Connect opens a Store on a CNI config's etcd settings; the func closes
// it. It is how brindle-ipam reaches etcd, whether executed or run inside
// the brindle plugin.
func Connect(c conf.EtcdConfig) (store.Store, func(), error) {
	s, err := New(Config{Endpoints: c.Endpoints, CACertFile: c.CACertFile, CertFile: c.CertFile, KeyFile: c.KeyFile})
	if err != nil {
		return nil, nil, err
	}
	return s, s.Close, nil
}
