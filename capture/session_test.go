package capture

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
)

// fakeSource replays the frames its filter accepts (as the kernel runs the
// socket filter), then blocks until closed, like a quiet link.
type fakeSource struct {
	filter *Filter
	frames [][]byte
	mu     sync.Mutex
	closed chan struct{}
	once   sync.Once
}

func newFake(frames ...[]byte) *fakeSource {
	return &fakeSource{frames: frames, closed: make(chan struct{})}
}

func (f *fakeSource) ReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	f.mu.Lock()
	for len(f.frames) > 0 {
		fr := f.frames[0]
		f.frames = f.frames[1:]
		if f.filter != nil && !f.filter.Match(fr) {
			continue
		}
		f.mu.Unlock()
		return fr, gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(fr), Length: len(fr)}, nil
	}
	f.mu.Unlock()
	<-f.closed
	return nil, gopacket.CaptureInfo{}, errors.New("closed")
}

func (f *fakeSource) Close() error { f.once.Do(func() { close(f.closed) }); return nil }
func (f *fakeSource) Drops() uint  { return 0 }

func session(t *testing.T, filter string, req Request, srcs map[string]*fakeSource, targets ...Target) (*bytes.Buffer, Result) {
	t.Helper()
	f, err := Compile(filter)
	if err != nil {
		t.Fatal(err)
	}
	if err := DefaultLimits.Check(&req); err != nil {
		t.Fatal(err)
	}
	s := &Session{Targets: targets, Filter: f, Req: req, Open: func(ifname string, f *Filter, _ int) (Source, error) {
		if src, ok := srcs[ifname]; ok {
			src.filter = f
			return src, nil
		}
		return nil, errors.New("no such interface")
	}}
	var buf bytes.Buffer
	res := s.Run(context.Background(), &buf, func() {})
	return &buf, res
}

func TestSessionPcapFilterAndSnaplen(t *testing.T) {
	fr := testFrames(t)
	src := newFake(fr["tcp 10.244.0.5:40000 > 10.244.1.9:80"], fr["udp 10.244.0.5:5353 > 10.96.0.10:53"], fr["tcp 10.244.1.9:80 > 10.244.0.5:40000"])
	buf, res := session(t, "tcp", Request{Namespace: "ns", Pod: "p", DurationMillis: 300, Snaplen: 40},
		map[string]*fakeSource{"bri1": src}, Target{HostVeth: "bri1", Namespace: "ns", Pod: "p", IfName: "eth0"})
	if res.Reason != "duration" || res.Packets != 2 {
		t.Fatalf("result %+v, want 2 tcp packets and the duration", res)
	}
	r, err := pcapgo.NewReader(buf)
	if err != nil {
		t.Fatal(err)
	}
	if r.Snaplen() != 40 {
		t.Errorf("snaplen %d", r.Snaplen())
	}
	n := 0
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != 40 || ci.Length <= 40 {
			t.Errorf("packet %d: %d bytes captured of %d", n, len(data), ci.Length)
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d packets in the file", n)
	}
}

// MaxBytes holds exactly: the stream stops before the record that would
// cross it, and what was written is a valid file.
func TestSessionMaxBytes(t *testing.T) {
	fr := testFrames(t)["udp 10.244.0.5:5353 > 10.96.0.10:53"]
	var frames [][]byte
	for range 100 {
		frames = append(frames, fr)
	}
	max := int64(24 + 3*(16+len(fr)) + 10)
	buf, res := session(t, "", Request{Namespace: "ns", Pod: "p", DurationMillis: 5000, MaxBytes: max},
		map[string]*fakeSource{"bri1": newFake(frames...)}, Target{HostVeth: "bri1"})
	if res.Reason != "size" || res.Packets != 3 || int64(buf.Len()) > max || res.Bytes != int64(buf.Len()) {
		t.Fatalf("result %+v, file %d bytes; want 3 packets within %d", res, buf.Len(), max)
	}
	var out bytes.Buffer
	st, err := CopyRecords(&out, buf, 0, nil)
	if err != nil || st.Packets != 3 {
		t.Fatalf("re-read: %+v %v", st, err)
	}
}

// Several interfaces: one pcapng, each packet on its pod's interface.
func TestSessionPcapng(t *testing.T) {
	fr := testFrames(t)
	srcs := map[string]*fakeSource{
		"briA": newFake(fr["icmp 10.244.0.5 > 10.244.2.3"]),
		"briB": newFake(fr["arp who-has 169.254.1.1 tell 10.244.0.5"], fr["icmp6 fd00::5 > fd00:1::9"]),
	}
	buf, res := session(t, "", Request{AllPods: true, DurationMillis: 300}, srcs,
		Target{HostVeth: "briA", Namespace: "a", Pod: "pa", IfName: "eth0"}, Target{HostVeth: "briB", Namespace: "b", Pod: "pb", IfName: "eth0"})
	if res.Packets != 3 {
		t.Fatalf("result %+v", res)
	}
	r, err := pcapgo.NewNgReader(buf, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for {
		_, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		intf, err := r.Interface(ci.InterfaceIndex)
		if err != nil {
			t.Fatal(err)
		}
		per[intf.Name]++
	}
	if per["a/pa/eth0"] != 1 || per["b/pb/eth0"] != 2 {
		t.Errorf("packets per interface %v", per)
	}
}

func TestSessionOpenFails(t *testing.T) {
	_, res := session(t, "", Request{Namespace: "ns", Pod: "p"}, nil, Target{HostVeth: "gone", Namespace: "ns", Pod: "p", IfName: "eth0"})
	if res.Reason != "error" || res.Error == "" {
		t.Fatalf("result %+v", res)
	}
}

func TestLimits(t *testing.T) {
	l := Limits{MaxDuration: time.Minute, MaxBytes: 1000, MaxConcurrent: 1}
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Namespace: "n", Pod: "p", DurationMillis: 120000}, "above the node's limit of 1m0s"},
		{Request{Namespace: "n", Pod: "p", MaxBytes: 2000}, "above the node's limit of 1000"},
		{Request{Namespace: "n", Pod: "p", Snaplen: 1 << 20}, "snaplen"},
		{Request{Pod: "p"}, "NAMESPACE/POD"},
	} {
		if err := l.Check(&tc.req); err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.req, err, tc.want)
		}
	}
	r := Request{Namespace: "n", Pod: "p"}
	if err := l.Check(&r); err != nil || r.Duration() != time.Minute || r.MaxBytes != 1000 || r.Snaplen != maxSnaplen {
		t.Errorf("defaults: %+v %v", r, err)
	}
}
