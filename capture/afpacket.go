package capture

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket"
	"golang.org/x/sys/unix"
)

// rcvBuf is the packet socket's receive buffer: large, because a reader in
// Go takes a packet per system call, and bursts must wait in the kernel
// rather than be dropped. SO_RCVBUFFORCE lets root go past rmem_max.
const rcvBuf = 32 << 20

// OpenAFPacket opens an AF_PACKET socket on ifname (in the caller's network
// namespace) that delivers only what f accepts, at most snaplen bytes each.
//
// It is opened with protocol 0, which receives nothing; the filter is
// attached; only then is it bound to the interface and ETH_P_ALL. So no
// packet ever reaches it unfiltered, from that interface or any other.
// (pcapgo's EthernetHandle binds first and filters after, and exposes no
// receive buffer size: brindle keeps pcapgo for the file formats.)
func OpenAFPacket(ifname string, f *Filter, snaplen int) (Source, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	fail := func(what string, err error) (Source, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("packet socket on %s: %s: %w", ifname, what, err)
	}
	raw := f.RawSnap(uint32(snaplen))
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return fail("attach filter", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("timestamps", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
		return fail("bind", err)
	}
	return &afpacket{file: os.NewFile(uintptr(fd), "packet:"+ifname), fd: fd, buf: make([]byte, snaplen),
		oob: make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

type afpacket struct {
	file  *os.File
	fd    int
	buf   []byte
	oob   []byte
	once  sync.Once
	drops uint
}

// ReadPacketData reads one packet: its first snaplen bytes, its length on
// the wire and the kernel's receive timestamp.
func (a *afpacket) ReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	rc, err := a.file.SyscallConn()
	if err != nil {
		return nil, gopacket.CaptureInfo{}, err
	}
	var n, oobn int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), a.buf, a.oob, unix.MSG_TRUNC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, gopacket.CaptureInfo{}, err
	}
	ci := gopacket.CaptureInfo{Length: n, CaptureLength: min(n, len(a.buf))}
	if msgs, err := unix.ParseSocketControlMessage(a.oob[:oobn]); err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
				ci.Timestamp = time.Unix(ts.Sec, ts.Nsec)
			}
		}
	}
	if ci.Timestamp.IsZero() {
		ci.Timestamp = time.Now()
	}
	return append([]byte(nil), a.buf[:ci.CaptureLength]...), ci, nil
}

func (a *afpacket) Close() error {
	a.once.Do(func() {
		if st, err := unix.GetsockoptTpacketStats(a.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			a.drops = uint(st.Drops)
		}
		a.file.Close()
	})
	return nil
}

func (a *afpacket) Drops() uint { return a.drops }
