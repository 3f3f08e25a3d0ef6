package capture

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

func pcapStream(t *testing.T, ng bool, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	fr := testFrames(t)["tcp 10.244.0.5:40000 > 10.244.1.9:80"]
	ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(fr), Length: len(fr)}
	if ng {
		w, err := pcapgo.NewNgWriter(&buf, layers.LinkTypeEthernet)
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			w.WritePacket(ci, fr)
		}
		w.Flush()
	} else {
		w := pcapgo.NewWriter(&buf)
		w.WriteFileHeader(65535, layers.LinkTypeEthernet)
		for range n {
			w.WritePacket(ci, fr)
		}
	}
	return buf.Bytes()
}

// errAfter fails after n bytes, like a connection cut by Ctrl-C.
type errAfter struct {
	r io.Reader
	n int
}

func (e *errAfter) Read(b []byte) (int, error) {
	if e.n <= 0 {
		return 0, errors.New("connection reset")
	}
	if len(b) > e.n {
		b = b[:e.n]
	}
	n, err := e.r.Read(b)
	e.n -= n
	return n, err
}

func TestCopyRecordsWholeRecordsOnly(t *testing.T) {
	for _, ng := range []bool{false, true} {
		stream := pcapStream(t, ng, 10)
		var out bytes.Buffer
		st, err := CopyRecords(&out, bytes.NewReader(stream), 0, nil)
		if err != nil || st.Packets != 10 || !bytes.Equal(out.Bytes(), stream) {
			t.Fatalf("ng=%v: whole stream: %+v %v", ng, st, err)
		}
		// Cut in the middle of the 6th record: five records survive, and
		// the result reads back.
		for _, cut := range []int{len(stream) / 2, len(stream) - 3} {
			out.Reset()
			st, err := CopyRecords(&out, &errAfter{r: bytes.NewReader(stream), n: cut}, 0, nil)
			if err == nil {
				t.Errorf("ng=%v cut %d: no error", ng, cut)
			}
			var again bytes.Buffer
			st2, err := CopyRecords(&again, bytes.NewReader(out.Bytes()), 0, nil)
			if err != nil || st2.Packets != st.Packets || st.Packets == 0 {
				t.Errorf("ng=%v cut %d: %d packets copied, re-read %+v %v", ng, cut, st.Packets, st2, err)
			}
		}
		// A max size stops before the record that would cross it.
		out.Reset()
		st, err = CopyRecords(&out, bytes.NewReader(stream), int64(len(stream)/2), nil)
		if err != nil || !st.Truncated || int64(out.Len()) > int64(len(stream)/2) || st.Packets == 0 {
			t.Errorf("ng=%v max: %+v %v (%d bytes)", ng, st, err, out.Len())
		}
	}
	if _, err := CopyRecords(io.Discard, bytes.NewReader([]byte("GET / HTTP/1.1\r\n")), 0, nil); err == nil {
		t.Error("not pcap: accepted")
	}
}

func FuzzCopyRecords(f *testing.F) {
	f.Add([]byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0})
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a})
	f.Fuzz(func(t *testing.T, b []byte) {
		var out bytes.Buffer
		st, _ := CopyRecords(&out, bytes.NewReader(b), 1<<20, nil)
		if st.Bytes != int64(out.Len()) || out.Len() > len(b) {
			t.Fatalf("wrote %d bytes, says %d, input %d", out.Len(), st.Bytes, len(b))
		}
	})
}
