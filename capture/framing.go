package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// maxRecord bounds one pcap record or pcapng block read from a stream, so
// a broken or hostile stream cannot make the reader allocate without end.
const maxRecord = 16 << 20

// CopyStats is what CopyRecords wrote.
type CopyStats struct {
	Bytes   int64 // written to dst, headers included
	Packets int   // packet records (pcap records, pcapng EPB/SPB/PB)
	// Truncated is set when maxBytes stopped the copy before the stream ended.
	Truncated bool
}

// CopyRecords copies a pcap or pcapng stream from src to dst one whole
// record at a time, so whatever stops it — the end of src, an error, a
// cancelled read, maxBytes — dst holds a valid capture file. With maxBytes
// > 0 it stops before the record that would take dst past maxBytes.
// onPacket, if set, is called after each packet record.
func CopyRecords(dst io.Writer, src io.Reader, maxBytes int64, onPacket func(CopyStats)) (CopyStats, error) {
	var st CopyStats
	var magic [4]byte
	if _, err := io.ReadFull(src, magic[:]); err != nil {
		if err == io.EOF {
			return st, errors.New("empty capture stream")
		}
		return st, fmt.Errorf("capture stream header: %w", err)
	}
	write := func(b []byte, packet bool) (bool, error) {
		if maxBytes > 0 && st.Bytes+int64(len(b)) > maxBytes && st.Bytes > 0 {
			st.Truncated = true
			return false, nil
		}
		if _, err := dst.Write(b); err != nil {
			return false, err
		}
		st.Bytes += int64(len(b))
		if packet {
			st.Packets++
			if onPacket != nil {
				onPacket(st)
			}
		}
		return true, nil
	}
	switch {
	case isPcapMagic(magic, binary.LittleEndian), isPcapMagic(magic, binary.BigEndian):
		order := binary.ByteOrder(binary.LittleEndian)
		if isPcapMagic(magic, binary.BigEndian) {
			order = binary.BigEndian
		}
		hdr := make([]byte, 24)
		copy(hdr, magic[:])
		if _, err := io.ReadFull(src, hdr[4:]); err != nil {
			return st, fmt.Errorf("pcap file header: %w", err)
		}
		if _, err := write(hdr, false); err != nil {
			return st, err
		}
		for {
			rec := make([]byte, 16)
			if _, err := io.ReadFull(src, rec); err != nil {
				return st, endOfStream(err)
			}
			n := order.Uint32(rec[8:12])
			if n > maxRecord {
				return st, fmt.Errorf("pcap record of %d bytes: stream is corrupt", n)
			}
			rec = append(rec, make([]byte, n)...)
			if _, err := io.ReadFull(src, rec[16:]); err != nil {
				return st, endOfStream(err)
			}
			if ok, err := write(rec, true); !ok || err != nil {
				return st, err
			}
		}
	case binary.LittleEndian.Uint32(magic[:]) == 0x0a0d0d0a:
		var order binary.ByteOrder = binary.LittleEndian
		first := true
		for {
			var head [8]byte
			copy(head[:], magic[:])
			start := 0
			if first {
				start = 4
			}
			if _, err := io.ReadFull(src, head[start:]); err != nil {
				if first {
					return st, fmt.Errorf("pcapng section header: %w", err)
				}
				return st, endOfStream(err)
			}
			typ := binary.LittleEndian.Uint32(head[:4])
			if typ == 0x0a0d0d0a { // a section header says its byte order
				var bom [4]byte
				if _, err := io.ReadFull(src, bom[:]); err != nil {
					return st, endOfStream(err)
				}
				if binary.BigEndian.Uint32(bom[:]) == 0x1a2b3c4d {
					order = binary.BigEndian
				} else {
					order = binary.LittleEndian
				}
				n := order.Uint32(head[4:8])
				if n < 28 || n > maxRecord || n%4 != 0 {
					return st, fmt.Errorf("pcapng section header of %d bytes: stream is corrupt", n)
				}
				blk := append(append(head[:], bom[:]...), make([]byte, n-12)...)
				if _, err := io.ReadFull(src, blk[12:]); err != nil {
					return st, endOfStream(err)
				}
				if ok, err := write(blk, false); !ok || err != nil {
					return st, err
				}
				first = false
				continue
			}
			if first {
				return st, errors.New("pcapng stream does not start with a section header")
			}
			typ = order.Uint32(head[:4])
			n := order.Uint32(head[4:8])
			if n < 12 || n > maxRecord || n%4 != 0 {
				return st, fmt.Errorf("pcapng block of %d bytes: stream is corrupt", n)
			}
			blk := append(head[:], make([]byte, n-8)...)
			if _, err := io.ReadFull(src, blk[8:]); err != nil {
				return st, endOfStream(err)
			}
			// Enhanced, simple and (obsolete) packet blocks hold packets.
			if ok, err := write(blk, typ == 6 || typ == 3 || typ == 2); !ok || err != nil {
				return st, err
			}
		}
	}
	return st, fmt.Errorf("not a pcap or pcapng stream (starts %x)", magic)
}

func isPcapMagic(m [4]byte, order binary.ByteOrder) bool {
	v := order.Uint32(m[:])
	return v == 0xa1b2c3d4 || v == 0xa1b23c4d
}

// endOfStream is nil at a record boundary (a clean end) and the error
// otherwise; the partial record is not written either way.
func endOfStream(err error) error {
	if err == io.EOF {
		return nil
	}
	if err == io.ErrUnexpectedEOF {
		return errors.New("capture stream ended inside a record (the partial record was dropped)")
	}
	return err
}
