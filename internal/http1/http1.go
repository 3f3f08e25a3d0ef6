// Package http1 reads HTTP/1.1 responses for the CNI plugins, which write
// their few requests by hand. brindle-ipam is started anew for every ADD;
// net/http (its server, HTTP/2 and their package inits) costs it start-up
// time and megabytes on every call for the one function it used,
// ReadResponse. This is that function, for what etcd's JSON gateway, the
// kube-apiserver and brindled send: a status line, headers, and a body
// framed by Content-Length, by chunked transfer coding, or by the server
// closing the connection.
package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Response is one response, its body read whole.
type Response struct {
	StatusCode int
	// Status is the status line after the version: "200 OK".
	Status string
	// Close reports that the server closes the connection after this
	// response (Connection: close, HTTP/1.0, or a body ended by EOF).
	Close bool
	Body  []byte
}

// maxHeaderLine bounds one line of the status or the headers.
const maxHeaderLine = 64 << 10

// ErrTooLarge means a body longer than the caller's limit.
var ErrTooLarge = errors.New("http response body too large")

// ReadResponse reads one response from r, its body up to limit bytes
// (ErrTooLarge beyond). A 1xx response before the final one is skipped.
func ReadResponse(r *bufio.Reader, limit int64) (*Response, error) {
	for {
		res, err := readOne(r, limit)
		if err != nil || res.StatusCode >= 200 {
			return res, err
		}
	}
}

func readOne(r *bufio.Reader, limit int64) (*Response, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	proto, status, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") {
		return nil, fmt.Errorf("malformed http status line %q", line)
	}
	code, err := strconv.Atoi(strings.SplitN(status, " ", 2)[0])
	if err != nil || code < 100 || code > 999 {
		return nil, fmt.Errorf("malformed http status line %q", line)
	}
	res := &Response{StatusCode: code, Status: status, Close: proto == "HTTP/1.0"}
	length, chunked := int64(-1), false
	for {
		h, err := readLine(r)
		if err != nil {
			return nil, err
		}
		if h == "" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("malformed http header line %q", h)
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-length":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("malformed content-length %q", value)
			}
			length = n
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
			if !chunked && !strings.EqualFold(value, "identity") {
				return nil, fmt.Errorf("unsupported transfer-encoding %q", value)
			}
		case "connection":
			for _, t := range strings.Split(value, ",") {
				switch strings.ToLower(strings.TrimSpace(t)) {
				case "close":
					res.Close = true
				case "keep-alive":
					res.Close = false
				}
			}
		}
	}
	switch {
	case code < 200 || code == 204 || code == 304:
		// No body.
	case chunked:
		res.Body, err = readChunked(r, limit)
	case length >= 0:
		if length > limit {
			return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, length)
		}
		res.Body = make([]byte, length)
		_, err = io.ReadFull(r, res.Body)
	default:
		// Neither: the body ends when the server closes the connection.
		res.Close = true
		res.Body, err = readAtMost(r, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("read http body: %w", err)
	}
	return res, nil
}

// readLine reads one CRLF (or LF) terminated line, without its end.
func readLine(r *bufio.Reader) (string, error) {
	var buf []byte
	for {
		frag, err := r.ReadSlice('\n')
		buf = append(buf, frag...)
		if len(buf) > maxHeaderLine {
			return "", errors.New("http header line too long")
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return string(bytes.TrimRight(buf, "\r\n")), nil
}

func readChunked(r *bufio.Reader, limit int64) ([]byte, error) {
	var body []byte
	for {
		line, err := readLine(r)
		if err != nil {
			return nil, err
		}
		size, _, _ := strings.Cut(line, ";") // chunk extensions are ignored
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("malformed chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, up to the blank line
				t, err := readLine(r)
				if err != nil {
					return nil, err
				}
				if t == "" {
					return body, nil
				}
			}
		}
		if n > limit-int64(len(body)) { // not len+n: that can overflow
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
		}
		start := len(body)
		body = append(body, make([]byte, n)...)
		if _, err := io.ReadFull(r, body[start:]); err != nil {
			return nil, err
		}
		if end, err := readLine(r); err != nil || end != "" {
			return nil, fmt.Errorf("malformed chunk end")
		}
	}
}

func readAtMost(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	return b, nil
}
