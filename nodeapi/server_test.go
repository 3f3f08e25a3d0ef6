package nodeapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"

	"github.com/brindle-net/brindle/capture"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/ipam"
)

// quietSource delivers nothing until closed: a pod that does not talk.
type quietSource struct {
	once   sync.Once
	closed chan struct{}
}

func (q *quietSource) ReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	<-q.closed
	return nil, gopacket.CaptureInfo{}, errors.New("closed")
}
func (q *quietSource) Close() error { q.once.Do(func() { close(q.closed) }); return nil }
func (q *quietSource) Drops() uint  { return 0 }

// startServer runs the node API of node n1 on a unix socket, against a
// real etcd holding pods on n1 and n2, with packet sources that stay quiet.
func startServer(t *testing.T, limits capture.Limits) (*Client, string, map[string]int) {
	t.Helper()
	s := etcdtest.Start(t)
	for key, v := range map[string]string{
		"endpoints/n1/c1.eth0": `{"v":1,"node":"n1","namespace":"ns","pod":"a","containerID":"c1","ifname":"eth0","hostVeth":"bri-a","addresses":["10.0.0.1/32"]}`,
		"endpoints/n1/c1.net1": `{"v":1,"node":"n1","namespace":"ns","pod":"a","containerID":"c1","ifname":"net1","hostVeth":"bri-a1","addresses":["10.0.0.9/32"]}`,
		"endpoints/n2/c2.eth0": `{"v":1,"node":"n2","namespace":"ns","pod":"b","containerID":"c2","ifname":"eth0","hostVeth":"bri-b","addresses":["10.0.1.1/32"]}`,
	} {
		if _, err := s.Client.Put(t.Context(), ipam.Prefix+key, v); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	opened := map[string]int{}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	stop, err := Start(ctx, Config{Node: "n1", Etcd: s.Client, Socket: sock, Limits: limits,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Open: func(ifname string, _ *capture.Filter, _ int) (capture.Source, error) {
			mu.Lock()
			opened[ifname]++
			mu.Unlock()
			return &quietSource{closed: make(chan struct{})}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); stop() })
	return NewUnixClient(sock), sock, opened
}

func TestCaptureRequests(t *testing.T) {
	testRoot(t)
	cli, sock, opened := startServer(t, capture.Limits{MaxDuration: time.Minute, MaxBytes: 1 << 20, MaxConcurrent: 1})
	ctx := t.Context()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %v %v: want a socket of mode 0600", fi.Mode(), err)
	}
	for _, tc := range []struct {
		req    capture.Request
		status int
		want   string
	}{
		{capture.Request{Namespace: "ns", Pod: "b"}, http.StatusMisdirectedRequest, "is on node n2, not n1"},
		{capture.Request{Namespace: "ns", Pod: "zz"}, http.StatusNotFound, "no brindle endpoint on any node"},
		{capture.Request{Namespace: "ns", Pod: "a", Filter: "tcp prot 80"}, http.StatusBadRequest, `filter "tcp prot 80"`},
		{capture.Request{Namespace: "ns", Pod: "a", DurationMillis: 3600000}, http.StatusBadRequest, "above the node's limit of 1m0s"},
	} {
		_, _, err := cli.Capture(ctx, tc.req, io.Discard, nil)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != tc.status || !strings.Contains(ae.Msg, tc.want) {
			t.Errorf("%+v: %v, want %d %q", tc.req, err, tc.status, tc.want)
		}
	}
	if node, ok := IsElsewhere(func() error {
		_, _, err := cli.Capture(ctx, capture.Request{Namespace: "ns", Pod: "b"}, io.Discard, nil)
		return err
	}()); !ok || node != "n2" {
		t.Errorf("elsewhere: %q %v", node, ok)
	}

	// One capture at a time here: the second is refused while the first
	// runs, and the first ends at its duration with a valid, empty pcap.
	var buf bytes.Buffer
	done := make(chan capture.Result)
	go func() {
		res, _, _ := cli.Capture(ctx, capture.Request{Namespace: "ns", Pod: "a", DurationMillis: 1500}, &buf, nil)
		done <- res
	}()
	time.Sleep(300 * time.Millisecond)
	if _, _, err := cli.Capture(ctx, capture.Request{Namespace: "ns", Pod: "a", DurationMillis: 100}, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "1 captures already running") {
		t.Errorf("second capture: %v", err)
	}
	res := <-done
	if res.Reason != "duration" || buf.Len() != 24 {
		t.Errorf("first capture: %+v, %d bytes", res, buf.Len())
	}
	// --all-interfaces opens both of the pod's veths and writes pcapng.
	buf.Reset()
	res, _, err = cli.Capture(ctx, capture.Request{Namespace: "ns", Pod: "a", AllInterfaces: true, DurationMillis: 200}, &buf, nil)
	if err != nil || opened["bri-a1"] != 1 || !bytes.HasPrefix(buf.Bytes(), []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		t.Errorf("all interfaces: %+v %v opened %v", res, err, opened)
	}
}

// A second server on a live socket is refused; a stale socket is replaced.
func TestSocketTakeover(t *testing.T) {
	testRoot(t)
	_, sock, _ := startServer(t, capture.DefaultLimits)
	_, err := Start(t.Context(), Config{Node: "n1", Socket: sock, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "another brindled serves it") {
		t.Fatalf("second server: %v", err)
	}
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	stop, err := Start(ctx, Config{Node: "n1", Socket: stale, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	cancel()
	stop()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("socket left behind after stop: %v", err)
	}
}

// The TLS listener does not start without client certificates.
func TestTLSNeedsClientCA(t *testing.T) {
	_, err := Start(t.Context(), Config{Node: "n1", Listen: "127.0.0.1:0", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "never serves without client certificates") {
		t.Fatalf("TLS without a CA: %v", err)
	}
}

// testRoot skips where the peer-credential check would refuse the test's
// own (non-root) connections.
func testRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the node API socket accepts root only; run as root")
	}
}
