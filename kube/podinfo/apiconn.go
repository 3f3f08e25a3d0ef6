package podinfo

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/brindle-net/brindle/internal/http1"
)

// tlsHandshakeTimeout bounds connecting to the apiserver, TCP and TLS.
const tlsHandshakeTimeout = 5 * time.Second

// apiConn is one kept-alive HTTPS connection to the apiserver, for the
// lookup's two GETs.
type apiConn struct {
	t      *apiTarget
	u      *url.URL
	c      net.Conn
	r      *bufio.Reader
	reused bool
}

func dialAPIServer(ctx context.Context, t *apiTarget) (*apiConn, error) {
	u, err := url.Parse(t.server) // checked by loadKubeconfig: https://host[:port][/path]
	if err != nil {
		return nil, fmt.Errorf("kubernetes apiserver %s: %w", t.server, err)
	}
	a := &apiConn{t: t, u: u}
	if err := a.dial(ctx); err != nil {
		return nil, fmt.Errorf("kubernetes apiserver %s: %w", t.server, err)
	}
	return a, nil
}

func (a *apiConn) dial(ctx context.Context) error {
	addr := a.u.Host
	if a.u.Port() == "" {
		addr = net.JoinHostPort(a.u.Hostname(), "443")
	}
	tc := a.t.tls.Clone()
	if tc.ServerName == "" {
		tc.ServerName = a.u.Hostname()
	}
	tc.NextProtos = []string{"http/1.1"}
	dctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer cancel()
	c, err := (&tls.Dialer{Config: tc}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return err
	}
	a.c, a.r, a.reused = c, bufio.NewReader(c), false
	return nil
}

func (a *apiConn) close() {
	if a.c != nil {
		_ = a.c.Close()
		a.c = nil
	}
}

// get sends one GET of the metadata at path and reads the answer. A kept
// connection the server closed meanwhile is dialled again once (a GET can
// be repeated).
func (a *apiConn) get(ctx context.Context, path string) (*http1.Response, error) {
	for {
		if a.c == nil {
			if err := a.dial(ctx); err != nil {
				return nil, err
			}
		}
		res, err := a.roundTrip(ctx, path)
		if err != nil && a.reused && ctx.Err() == nil {
			a.close()
			continue
		}
		if err != nil {
			a.close()
			return nil, err
		}
		if res.Close {
			a.close()
		} else {
			a.reused = true
		}
		return res, nil
	}
}

func (a *apiConn) roundTrip(ctx context.Context, path string) (*http1.Response, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = a.c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = a.c.SetDeadline(time.Now()) })
	defer stop()
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: brindle-ipam\r\n", strings.TrimRight(a.u.EscapedPath(), "/"), path, a.u.Host)
	// Only the metadata: the server sends a PartialObjectMetadata.
	req.WriteString("Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json\r\n")
	if a.t.token != "" {
		req.WriteString("Authorization: Bearer " + a.t.token + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := a.c.Write([]byte(req.String())); err != nil {
		return nil, err
	}
	res, err := http1.ReadResponse(a.r, 4<<20)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return res, err
}
