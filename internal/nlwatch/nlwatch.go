// Package nlwatch is how brindled listens to the kernel's netlink
// notifications cheaply: a socket filter that lets only the messages a
// watch cares about through (the kernel drops the rest before they wake
// anyone), and a receive loop that survives the socket overflowing.
package nlwatch

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Byte is one byte a filter compares: the message's byte at Off (from the
// start of the netlink header) must be Val.
type Byte struct {
	Off uint32
	Val byte
}

// Filter is a socket filter that passes a message whose netlink header
// type is typ and whose bytes are match, and drops every other. The type
// is in host byte order at offset 4; it is compared byte by byte.
func Filter(typ uint16, match ...Byte) []bpf.RawInstruction {
	var t [2]byte
	binary.NativeEndian.PutUint16(t[:], typ)
	bytes := append([]Byte{{4, t[0]}, {5, t[1]}}, match...)
	drop := uint8(2*len(bytes) + 1) // the index of the last instruction
	var prog []bpf.Instruction
	for _, b := range bytes {
		prog = append(prog,
			bpf.LoadAbsolute{Off: b.Off, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(b.Val), SkipTrue: drop - uint8(len(prog)) - 2})
	}
	prog = append(prog, bpf.RetConstant{Val: 0xffff}, bpf.RetConstant{Val: 0})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err) // a fixed program of loads and compares
	}
	return raw
}

// Receive reads c until ctx ends or c fails, and calls signal after each
// read: with nil for a message the filter passed, with the error when the
// socket overflowed (ENOBUFS: messages were lost, and the watch goes on).
// It returns nil when ctx ended, else the error that ended the watch. c is
// closed when ctx ends.
func Receive(ctx context.Context, c *netlink.Conn, signal func(lost error)) error {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		_, err := c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			signal(nil) // what failed may have been a message
			return err
		}
		signal(err)
	}
}
