package nodeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/brindle-net/brindle/capture"
)

// Client talks to one node's API.
type Client struct {
	http *http.Client
	base string
	// Via says how the node is reached, for messages.
	Via string
}

// NewUnixClient reaches the node API on this node's socket.
func NewUnixClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{http: &http.Client{Transport: tr}, base: "http://node", Via: "unix socket " + path}
}

// TLSFiles are the client's mutual-TLS material (PEM files).
type TLSFiles struct{ CA, Cert, Key string }

// Configured reports whether any file is set.
func (f TLSFiles) Configured() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// NewTLSClient reaches a node API's mutual-TLS listener at addr (host:port);
// the node's certificate must be signed by CA and name the address.
func NewTLSClient(addr string, f TLSFiles) (*Client, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("node API over TLS needs a CA, a client certificate and its key (--nodeapi-ca, --nodeapi-cert, --nodeapi-key)")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("node API client certificate: %w", err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("node API CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("node API CA %s: no PEM certificate in it", f.CA)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}}
	return &Client{http: &http.Client{Transport: tr}, base: "https://" + addr, Via: "mutual TLS to " + addr}, nil
}

// NewConnClient sends its requests over connections made by dial (one
// request per connection), e.g. a `kubectl exec` of `brindlectl node-proxy`.
func NewConnClient(via string, dial func(ctx context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DisableKeepAlives: true,
	}
	return &Client{http: &http.Client{Transport: tr}, base: "http://node", Via: via}
}

func decodeError(res *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var e apiError
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = fmt.Sprintf("node API: %s: %s", res.Status, bytes.TrimSpace(body))
	}
	return &APIError{Status: res.StatusCode, Msg: e.Error, Node: e.Node}
}

// Capture streams a capture into w, whole records only. It returns when the
// node ends the capture (a limit), ctx ends (Ctrl-C: Reason "interrupted",
// no error) or the stream fails.
func (c *Client) Capture(ctx context.Context, req capture.Request, w io.Writer, onPacket func(capture.CopyStats)) (capture.Result, capture.CopyStats, error) {
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, "POST", c.base+"/v1/capture", bytes.NewReader(body))
	if err != nil {
		return capture.Result{}, capture.CopyStats{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	res, err := c.http.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return capture.Result{Reason: "interrupted"}, capture.CopyStats{}, nil
		}
		return capture.Result{}, capture.CopyStats{}, fmt.Errorf("node API via %s: %w", c.Via, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return capture.Result{}, capture.CopyStats{}, decodeError(res)
	}
	st, cerr := capture.CopyRecords(w, res.Body, req.MaxBytes, onPacket)
	var result capture.Result
	if t := res.Trailer.Get(ResultTrailer); t != "" {
		json.Unmarshal([]byte(t), &result)
	}
	switch {
	case ctx.Err() != nil:
		result.Reason = "interrupted"
		cerr = nil
	case st.Truncated:
		result.Reason = "size"
	case cerr == nil && result.Reason == "":
		result.Reason = "end of stream"
	}
	result.Packets, result.Bytes = st.Packets, st.Bytes
	if cerr == nil && result.Reason == "error" {
		cerr = errors.New(result.Error)
	}
	return result, st, cerr
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("node API via %s: %w", c.Via, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return decodeError(res)
	}
	return json.NewDecoder(res.Body).Decode(v)
}

// Pod asks the node for a pod's interfaces, counters and routes.
func (c *Client) Pod(ctx context.Context, namespace, pod string) (PodInfo, error) {
	var info PodInfo
	err := c.getJSON(ctx, "/v1/pod", url.Values{"namespace": {namespace}, "pod": {pod}}, &info)
	return info, err
}

// Routes asks the node what it holds for a prefix: BGP paths and kernel routes.
func (c *Client) Routes(ctx context.Context, prefix string) (RouteInfo, error) {
	var info RouteInfo
	err := c.getJSON(ctx, "/v1/routes", url.Values{"prefix": {prefix}}, &info)
	return info, err
}
