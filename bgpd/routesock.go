package bgpd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteSocket is a raw rtnetlink socket for what route sync does in bulk:
// dumping brindle's routes (filtered by the kernel: only protocol 98 of the
// main table comes back) and applying many changes with one sendmsg per
// few thousand routes, instead of a request and a wait for its answer per
// route. Only brindle's own routes are ever touched: adds are exclusive
// (NLM_F_EXCL), replaces are made only of routes the dump showed as
// brindle's, and deletes name protocol 98, which the kernel matches.
type RouteSocket struct {
	fd  int
	seq uint32
	buf []byte
	rb  []byte // receive buffer of dumps
}

// sendChunk bounds one sendmsg; the socket's send buffer is set above it.
const sendChunk = 128 << 10

// OpenRouteSocket opens a socket in the network namespace of the calling
// thread.
func OpenRouteSocket() (*RouteSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink socket: %w", err)
	}
	s := &RouteSocket{fd: fd}
	// Kernel-side dump filters, short error messages, and room for the
	// errors of a whole chunk (FORCE needs CAP_NET_ADMIN; else the default).
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*sendChunk) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 2*sendChunk)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtnetlink bind: %w", err)
	}
	return s, nil
}

// Close closes the socket.
func (s *RouteSocket) Close() error { return unix.Close(s.fd) }

// RouteOp is one change for Apply.
type RouteOp struct {
	Route *netlink.Route
	// Kind is RouteAdd (exclusive create), RouteReplace or RouteDelete.
	Kind RouteOpKind
}

// RouteOpKind says what a RouteOp does.
type RouteOpKind int

// Route changes.
const (
	RouteAdd RouteOpKind = iota
	RouteReplace
	RouteDelete
)

// Apply makes every change and returns, for each, its error (nil, or a
// syscall.Errno such as EEXIST for an add whose destination is taken).
func (s *RouteSocket) Apply(ops []RouteOp) ([]error, error) {
	errs := make([]error, len(ops))
	for start := 0; start < len(ops); {
		s.buf = s.buf[:0]
		first := s.seq + 1
		end, last := start, 0
		for end < len(ops) && len(s.buf) < sendChunk-256 {
			s.seq++
			last = len(s.buf)
			s.buf = appendRouteMsg(s.buf, ops[end], s.seq)
			end++
		}
		// The last message of the chunk asks for an acknowledgement; the
		// others are answered only when they fail. rtnetlink handles the
		// whole chunk within sendmsg, so once the acknowledgement is read,
		// every error of the chunk has been read before it.
		f := binary.NativeEndian.Uint16(s.buf[last+6:])
		binary.NativeEndian.PutUint16(s.buf[last+6:], f|unix.NLM_F_ACK)
		if err := unix.Sendto(s.fd, s.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return errs, fmt.Errorf("rtnetlink send: %w", err)
		}
		if err := s.readAcks(first, s.seq, func(seq uint32, errno syscall.Errno) {
			errs[start+int(seq-first)] = errno
		}); err != nil {
			return errs, err
		}
		start = end
	}
	return errs, nil
}

// readAcks reads answers until the acknowledgement of last, calling bad
// for each failed message of first..last.
func (s *RouteSocket) readAcks(first, last uint32, bad func(uint32, syscall.Errno)) error {
	rb := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(s.fd, rb, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("rtnetlink receive: %w", err)
		}
		for off := 0; off+unix.NLMSG_HDRLEN <= n; {
			l := int(binary.NativeEndian.Uint32(rb[off:]))
			if l < unix.NLMSG_HDRLEN || off+l > n {
				return errors.New("rtnetlink: truncated message")
			}
			typ := binary.NativeEndian.Uint16(rb[off+4:])
			seq := binary.NativeEndian.Uint32(rb[off+8:])
			if typ == unix.NLMSG_ERROR && l >= unix.NLMSG_HDRLEN+4 && seq >= first && seq <= last {
				code := int32(binary.NativeEndian.Uint32(rb[off+unix.NLMSG_HDRLEN:]))
				if code != 0 {
					bad(seq, syscall.Errno(-code))
				}
				if seq == last {
					return nil
				}
			}
			off += nlmAlign(l)
		}
	}
}

func nlmAlign(n int) int { return (n + 3) &^ 3 }

// appendRouteMsg encodes one RTM_NEWROUTE or RTM_DELROUTE for op.
func appendRouteMsg(b []byte, op RouteOp, seq uint32) []byte {
	r := op.Route
	typ, flags := uint16(unix.RTM_NEWROUTE), uint16(unix.NLM_F_REQUEST)
	switch op.Kind {
	case RouteAdd:
		flags |= unix.NLM_F_CREATE | unix.NLM_F_EXCL
	case RouteReplace:
		flags |= unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	case RouteDelete:
		typ = unix.RTM_DELROUTE
	}
	family := r.Family
	dst := r.Dst
	var dstIP net.IP
	var ones int
	if dst != nil {
		ones, _ = dst.Mask.Size()
		dstIP = dst.IP
	}
	if family == 0 {
		family = unix.AF_INET
		if dstIP.To4() == nil && dstIP != nil {
			family = unix.AF_INET6
		}
	}
	ipOf := func(ip net.IP) []byte {
		if family == unix.AF_INET {
			return ip.To4()
		}
		return ip.To16()
	}
	start := len(b)
	b = append(b, make([]byte, unix.NLMSG_HDRLEN+unix.SizeofRtMsg)...)
	h := b[start:]
	binary.NativeEndian.PutUint16(h[4:], typ)
	binary.NativeEndian.PutUint16(h[6:], flags)
	binary.NativeEndian.PutUint32(h[8:], seq)
	rt := h[unix.NLMSG_HDRLEN:]
	rt[0] = byte(family)
	rt[1] = byte(ones)
	rt[4] = unix.RT_TABLE_MAIN
	rt[5] = byte(r.Protocol)
	rt[6] = byte(r.Scope)
	rt[7] = byte(r.Type)
	if op.Kind == RouteDelete {
		// Any type and scope: the destination and the protocol decide,
		// and the kernel deletes only a route of brindle's protocol.
		rt[6], rt[7] = unix.RT_SCOPE_NOWHERE, 0
	}
	binary.NativeEndian.PutUint32(rt[8:], uint32(r.Flags))
	if dstIP != nil {
		b = appendAttr(b, unix.RTA_DST, ipOf(dstIP))
	}
	if op.Kind != RouteDelete {
		if r.Gw != nil {
			b = appendAttr(b, unix.RTA_GATEWAY, ipOf(r.Gw))
		}
		if r.LinkIndex != 0 {
			var v [4]byte
			binary.NativeEndian.PutUint32(v[:], uint32(r.LinkIndex))
			b = appendAttr(b, unix.RTA_OIF, v[:])
		}
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

func appendAttr(b []byte, typ uint16, v []byte) []byte {
	l := 4 + len(v)
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(l))
	binary.NativeEndian.PutUint16(h[2:], typ)
	b = append(b, h[:]...)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// Dump returns brindle's routes (protocol 98, main table) of one family
// (unix.AF_INET or AF_INET6), filtered by the kernel.
func (s *RouteSocket) Dump(family int) ([]netlink.Route, error) {
	for range 5 {
		rs, err := s.dump(family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return rs, err
		}
	}
	return nil, netlink.ErrDumpInterrupted
}

// dumpKeys is Dump for route sync: each route's destination and key,
// decoded without allocating per route.
func (s *RouteSocket) dumpKeys(family int, into map[netip.Prefix]routeKey) error {
	for range 5 {
		clear(into)
		err := s.dumpEach(family, func(m []byte) {
			if dst, k, ok := parseKey(m); ok {
				into[dst] = k
			}
		})
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return netlink.ErrDumpInterrupted
}

func (s *RouteSocket) dump(family int) ([]netlink.Route, error) {
	var out []netlink.Route
	err := s.dumpEach(family, func(m []byte) {
		if r, ok := parseRoute(m); ok {
			out = append(out, r)
		}
	})
	return out, err
}

// dumpEach dumps brindle's routes of a family, calling f with each
// RTM_NEWROUTE message (valid only during the call).
func (s *RouteSocket) dumpEach(family int, f func([]byte)) error {
	s.seq++
	seq := s.seq
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofRtMsg)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.RTM_GETROUTE)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], seq)
	rt := req[unix.NLMSG_HDRLEN:]
	rt[0] = byte(family)
	rt[4] = unix.RT_TABLE_MAIN
	rt[5] = byte(RouteProtocol)
	if err := unix.Sendto(s.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("rtnetlink dump: %w", err)
	}
	if s.rb == nil {
		s.rb = make([]byte, 1<<20)
	}
	rb := s.rb
	interrupted := false
	for {
		n, _, err := unix.Recvfrom(s.fd, rb, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("rtnetlink dump: %w", err)
		}
		for off := 0; off+unix.NLMSG_HDRLEN <= n; {
			l := int(binary.NativeEndian.Uint32(rb[off:]))
			if l < unix.NLMSG_HDRLEN || off+l > n {
				return errors.New("rtnetlink dump: truncated message")
			}
			typ := binary.NativeEndian.Uint16(rb[off+4:])
			flags := binary.NativeEndian.Uint16(rb[off+6:])
			mseq := binary.NativeEndian.Uint32(rb[off+8:])
			msg := rb[off+unix.NLMSG_HDRLEN : off+l]
			off += nlmAlign(l)
			if mseq != seq {
				continue
			}
			if flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch typ {
			case unix.NLMSG_DONE:
				if interrupted {
					return netlink.ErrDumpInterrupted
				}
				return nil
			case unix.NLMSG_ERROR:
				if len(msg) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(msg)); code != 0 {
						return fmt.Errorf("rtnetlink dump: %w", syscall.Errno(-code))
					}
				}
			case unix.RTM_NEWROUTE:
				f(msg)
			}
		}
	}
}

// routeAttrs calls f with each attribute of a route message, stopping at
// the first malformed one.
// The last attribute may end without its padding (the kernel pads, but
// the message's length need not count it).
func routeAttrs(m []byte, f func(typ uint16, v []byte)) {
	if len(m) < unix.SizeofRtMsg {
		return
	}
	for a := m[unix.SizeofRtMsg:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a))
		if l < 4 || l > len(a) {
			return
		}
		f(binary.NativeEndian.Uint16(a[2:]), a[4:l])
		if nlmAlign(l) >= len(a) {
			return
		}
		a = a[nlmAlign(l):]
	}
}

// parseKey decodes a route message into its destination and key, as
// kernelKey would from the parsed route, without allocating.
func parseKey(m []byte) (netip.Prefix, routeKey, bool) {
	if len(m) < unix.SizeofRtMsg {
		return netip.Prefix{}, routeKey{}, false
	}
	family, dstLen, table := int(m[0]), int(m[1]), int(m[4])
	if netlink.RouteProtocol(m[5]) != RouteProtocol {
		return netip.Prefix{}, routeKey{}, false
	}
	k := routeKey{typ: int(m[7]), onlink: binary.NativeEndian.Uint32(m[8:])&unix.RTNH_F_ONLINK != 0}
	var dst netip.Addr
	routeAttrs(m, func(t uint16, v []byte) {
		switch t {
		case unix.RTA_DST:
			dst, _ = netip.AddrFromSlice(v)
		case unix.RTA_GATEWAY:
			gw, _ := netip.AddrFromSlice(v)
			k.gw = gw.Unmap()
		case unix.RTA_OIF:
			if len(v) >= 4 {
				k.link = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_TABLE:
			if len(v) >= 4 {
				table = int(binary.NativeEndian.Uint32(v))
			}
		}
	})
	if table != unix.RT_TABLE_MAIN {
		return netip.Prefix{}, routeKey{}, false
	}
	if !dst.IsValid() {
		// No destination is the default route, whatever the length says
		// (parseRoute reads it so too).
		dstLen = 0
		dst = netip.IPv4Unspecified()
		if family == unix.AF_INET6 {
			dst = netip.IPv6Unspecified()
		}
	}
	return netip.PrefixFrom(dst.Unmap(), dstLen).Masked(), k, true
}

// parseRoute decodes what route sync compares; it filters again on table
// and protocol, in case the kernel did not (no strict checking).
func parseRoute(m []byte) (netlink.Route, bool) {
	if len(m) < unix.SizeofRtMsg {
		return netlink.Route{}, false
	}
	family, dstLen, table, proto := int(m[0]), int(m[1]), int(m[4]), m[5]
	if netlink.RouteProtocol(proto) != RouteProtocol {
		return netlink.Route{}, false
	}
	r := netlink.Route{Family: family, Protocol: netlink.RouteProtocol(proto), Scope: netlink.Scope(m[6]),
		Type: int(m[7]), Flags: int(binary.NativeEndian.Uint32(m[8:])), Table: table}
	bits := 32
	if family == unix.AF_INET6 {
		bits = 128
	}
	routeAttrs(m, func(t uint16, v []byte) {
		switch t {
		case unix.RTA_DST:
			r.Dst = &net.IPNet{IP: net.IP(append([]byte(nil), v...)), Mask: net.CIDRMask(dstLen, bits)}
		case unix.RTA_GATEWAY:
			r.Gw = net.IP(append([]byte(nil), v...))
		case unix.RTA_OIF:
			if len(v) >= 4 {
				r.LinkIndex = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_TABLE:
			if len(v) >= 4 {
				r.Table = int(binary.NativeEndian.Uint32(v))
			}
		}
	})
	if r.Table != unix.RT_TABLE_MAIN {
		return netlink.Route{}, false
	}
	if r.Dst == nil {
		r.Dst = &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)}
	}
	return r, true
}
