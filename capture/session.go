package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Request is what a client asks the node for (JSON over the node API).
type Request struct {
	// Namespace and Pod name one pod; AllPods takes every brindle pod on
	// the node instead (brindlectl capture --node).
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	AllPods   bool   `json:"allPods,omitempty"`
	// AllInterfaces takes every brindle interface of the pod, not only
	// eth0.
	AllInterfaces bool `json:"allInterfaces,omitempty"`
	// Filter is a tcpdump-style expression (see filter.go).
	Filter string `json:"filter,omitempty"`
	// Snaplen truncates each packet (0: whole packets).
	Snaplen int `json:"snaplen,omitempty"`
	// Duration and MaxBytes end the capture; 0 takes the node's default.
	DurationMillis int64 `json:"durationMillis,omitempty"`
	MaxBytes       int64 `json:"maxBytes,omitempty"`
}

// Duration is the requested duration.
func (r Request) Duration() time.Duration { return time.Duration(r.DurationMillis) * time.Millisecond }

// Limits are the node's bounds on every capture; a request beyond them is
// refused, naming the limit.
type Limits struct {
	MaxDuration   time.Duration // also the default duration
	MaxBytes      int64         // also the default size
	MaxConcurrent int
}

// DefaultLimits are brindled's defaults (flags --capture-max-*).
var DefaultLimits = Limits{MaxDuration: 10 * time.Minute, MaxBytes: 1 << 30, MaxConcurrent: 4}

// maxSnaplen is libpcap's MAXIMUM_SNAPLEN.
const maxSnaplen = 262144

// Check validates a request against the limits and fills in the defaults.
func (l Limits) Check(r *Request) error {
	switch {
	case r.DurationMillis < 0:
		return fmt.Errorf("duration %s: negative", r.Duration())
	case r.Duration() > l.MaxDuration:
		return fmt.Errorf("duration %s: above the node's limit of %s (brindled --capture-max-duration)", r.Duration(), l.MaxDuration)
	case r.MaxBytes < 0:
		return fmt.Errorf("max size %d: negative", r.MaxBytes)
	case r.MaxBytes > l.MaxBytes:
		return fmt.Errorf("max size %d bytes: above the node's limit of %d (brindled --capture-max-bytes)", r.MaxBytes, l.MaxBytes)
	case r.Snaplen < 0 || r.Snaplen > maxSnaplen:
		return fmt.Errorf("snaplen %d: want 0 (whole packets) to %d", r.Snaplen, maxSnaplen)
	case !r.AllPods && (r.Namespace == "" || r.Pod == ""):
		return errors.New("pod: want NAMESPACE/POD, or all pods of the node")
	}
	if r.DurationMillis == 0 {
		r.DurationMillis = l.MaxDuration.Milliseconds()
	}
	if r.MaxBytes == 0 {
		r.MaxBytes = l.MaxBytes
	}
	if r.Snaplen == 0 {
		r.Snaplen = maxSnaplen
	}
	return nil
}

// Target is one interface to capture on: a pod's host veth.
type Target struct {
	HostVeth  string
	Namespace string
	Pod       string
	IfName    string
}

// Name is how the interface is named in a pcapng file.
func (t Target) Name() string { return t.Namespace + "/" + t.Pod + "/" + t.IfName }

// Result is how a capture ended.
type Result struct {
	Packets int    `json:"packets"`
	Bytes   int64  `json:"bytes"`
	Dropped uint   `json:"dropped"` // by the kernel: the reader fell behind
	Reason  string `json:"reason"`  // duration, size, client, shutdown, error
	Error   string `json:"error,omitempty"`
}

// Source reads packets from one interface; Open is pcapgo's AF_PACKET
// handle in production and a fake in unit tests.
type Source interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	Close() error
	Drops() uint
}

// OpenFunc opens a packet source on an interface with a compiled filter,
// delivering at most snaplen bytes of each packet.
type OpenFunc func(ifname string, f *Filter, snaplen int) (Source, error)

// Session is one capture: targets, filter and limits, written as pcap
// (one target) or pcapng (several, one interface each).
type Session struct {
	Targets []Target
	Filter  *Filter
	Req     Request // checked against the limits
	Open    OpenFunc
	Log     *slog.Logger
}

type packet struct {
	data []byte
	ci   gopacket.CaptureInfo
	idx  int
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// Run captures until the duration passes, the next packet would take the
// stream past MaxBytes, ctx ends (the client left) or a source fails.
// flush is called when the written data should go out (a batch is done).
func (s *Session) Run(ctx context.Context, w io.Writer, flush func()) (res Result) {
	cw := &countingWriter{w: w}
	snap := uint32(s.Req.Snaplen)
	var srcs []Source
	defer func() {
		for _, src := range srcs {
			src.Close()
			res.Dropped += src.Drops()
		}
	}()
	for _, t := range s.Targets {
		src, err := s.Open(t.HostVeth, s.Filter, s.Req.Snaplen)
		if err != nil {
			return Result{Reason: "error", Error: fmt.Sprintf("open %s (%s): %v", t.HostVeth, t.Name(), err)}
		}
		srcs = append(srcs, src)
	}

	var writePacket func(p packet) error
	var recordSize func(n int) int64
	if len(s.Targets) == 1 {
		pw := pcapgo.NewWriterNanos(cw)
		if err := pw.WriteFileHeader(snap, layers.LinkTypeEthernet); err != nil {
			return Result{Reason: "error", Error: err.Error()}
		}
		writePacket = func(p packet) error { return pw.WritePacket(p.ci, p.data) }
		recordSize = func(n int) int64 { return int64(16 + n) }
	} else {
		intf := func(t Target) pcapgo.NgInterface {
			return pcapgo.NgInterface{Name: t.Name(), Description: "host veth " + t.HostVeth, Filter: s.Filter.Expr,
				OS: "linux", LinkType: layers.LinkTypeEthernet, TimestampResolution: 9, SnapLength: snap}
		}
		ng, err := pcapgo.NewNgWriterInterface(cw, intf(s.Targets[0]), pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{OS: "linux", Application: "brindle capture"}})
		if err != nil {
			return Result{Reason: "error", Error: err.Error()}
		}
		for _, t := range s.Targets[1:] {
			if _, err := ng.AddInterface(intf(t)); err != nil {
				return Result{Reason: "error", Error: err.Error()}
			}
		}
		if err := ng.Flush(); err != nil {
			return Result{Reason: "client", Error: err.Error()}
		}
		writePacket = func(p packet) error {
			p.ci.InterfaceIndex = p.idx
			if err := ng.WritePacket(p.ci, p.data); err != nil {
				return err
			}
			return ng.Flush()
		}
		recordSize = func(n int) int64 { return int64(32 + (n+3)&^3) }
	}
	flush()

	ctx, cancel := context.WithTimeout(ctx, s.Req.Duration())
	defer cancel()
	pkts := make(chan packet, 256)
	errs := make(chan error, len(srcs))
	var wg sync.WaitGroup
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				data, ci, err := src.ReadPacketData()
				if err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("read %s: %w", s.Targets[i].HostVeth, err)
					}
					return
				}
				if len(data) > int(snap) {
					data = data[:snap]
				}
				ci.CaptureLength = len(data)
				select {
				case pkts <- packet{data: data, ci: ci, idx: i}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	// Closing the sources ends the blocked reads.
	defer func() {
		cancel()
		for _, src := range srcs {
			src.Close()
		}
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			res.Reason = "duration"
			if ctx.Err() != context.DeadlineExceeded {
				res.Reason = "client"
			}
			res.Bytes = cw.n
			return res
		case err := <-errs:
			res.Reason, res.Error, res.Bytes = "error", err.Error(), cw.n
			return res
		case p := <-pkts:
			if cw.n+recordSize(len(p.data)) > s.Req.MaxBytes {
				res.Reason, res.Bytes = "size", cw.n
				return res
			}
			if err := writePacket(p); err != nil {
				res.Reason, res.Error, res.Bytes = "client", err.Error(), cw.n
				return res
			}
			res.Packets++
			if len(pkts) == 0 {
				flush()
			}
		}
	}
}
