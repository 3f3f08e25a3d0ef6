package http1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Against a real net/http server: what etcd's gateway, the apiserver and
// brindled (all Go servers) send.
func TestReadResponseFromServer(t *testing.T) {
	big := strings.Repeat("0123456789", 5000) // past the server's 2 KiB: chunked
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			fmt.Fprint(w, `{"ok":true}`)
		case "/big":
			fmt.Fprint(w, big)
		case "/none":
			w.WriteHeader(http.StatusNoContent)
		case "/missing":
			http.Error(w, "not here", http.StatusNotFound)
		case "/close":
			w.Header().Set("Connection", "close")
			fmt.Fprint(w, "bye")
		}
	}))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for _, tc := range []struct {
		path  string
		code  int
		body  string
		close bool
	}{
		{"/small", 200, `{"ok":true}`, false},
		{"/big", 200, big, false},
		{"/none", 204, "", false},
		{"/missing", 404, "not here\n", false},
		{"/small", 200, `{"ok":true}`, false}, // the connection is still usable
		{"/close", 200, "bye", true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", tc.path)
			res, err := ReadResponse(r, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.code || string(res.Body) != tc.body || res.Close != tc.close {
				t.Fatalf("got %d %q close=%v (%d bytes), want %d close=%v (%d bytes)", res.StatusCode, res.Status, res.Close, len(res.Body), tc.code, tc.close, len(tc.body))
			}
		})
	}
}

func TestReadResponseFraming(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		code     int
		body     string
		close    bool
		err      string
	}{
		{name: "chunked with extension and trailer", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n", code: 200, body: "abcde"},
		{name: "bare LF lines", in: "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi", code: 200, body: "hi"},
		{name: "1.0 until EOF", in: "HTTP/1.0 200 OK\r\n\r\nuntil eof", code: 200, body: "until eof", close: true},
		{name: "100 continue skipped", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", code: 201, body: "x"},
		{name: "status without text", in: "HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n", code: 503},
		{name: "too large", in: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", err: "too large"},
		{name: "chunked too large", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n63\r\n", err: "too large"},
		{name: "chunk size that overflows the total", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n7fffffffffffffff\r\n", err: "too large"},
		{name: "cut short", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", err: "unexpected EOF"},
		{name: "not http", in: "SSH-2.0-OpenSSH\r\n\r\n", err: "malformed http status line"},
		{name: "bad length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", err: "malformed content-length"},
		{name: "bad chunk", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", err: "malformed chunk size"},
		{name: "gzip refused", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", err: "unsupported transfer-encoding"},
		{name: "no header end", in: "HTTP/1.1 200 OK\r\nContent-Length: 1", err: "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ReadResponse(bufio.NewReader(strings.NewReader(tc.in)), 64)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want an error with %q", res, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.code || string(res.Body) != tc.body || res.Close != tc.close {
				t.Fatalf("got %d %q close=%v, want %d %q close=%v", res.StatusCode, res.Body, res.Close, tc.code, tc.body, tc.close)
			}
		})
	}
}

// Whatever a server sends, ReadResponse never panics, and when net/http
// reads a response from the same bytes with a body, both read the same
// status and body.
func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 404 Not Found\r\n\r\nno"))
	f.Fuzz(func(t *testing.T, in []byte) {
		res, err := ReadResponse(bufio.NewReader(bytes.NewReader(in)), 1<<16)
		std, serr := http.ReadResponse(bufio.NewReader(bytes.NewReader(in)), nil)
		if err != nil || serr != nil {
			return
		}
		body, berr := io.ReadAll(std.Body)
		if berr != nil || std.StatusCode != res.StatusCode {
			return
		}
		if std.ContentLength < 0 && len(std.TransferEncoding) == 0 {
			return // net/http and this differ on what ends such a body only by design
		}
		if !bytes.Equal(body, res.Body) {
			t.Fatalf("body %q, net/http read %q", res.Body, body)
		}
	})
}
