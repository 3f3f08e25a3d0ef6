package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// WatchGeneration signals (coalesced) each time the kernel commits an
// nftables transaction, anyone's, in the writer's namespace: what polling
// Generation would notice, without waking while nothing changes. It
// listens to the nftables notification group with a socket filter that
// lets only the kernel's new-generation message through (one per commit),
// so a transaction of thousands of elements costs one wake-up, not one per
// element. A lost notification (the socket overflowed) is signalled too.
// The channel is closed when the watch ends (ctx done, or the socket
// failed): the caller then polls.
func (w *Writer) WatchGeneration(ctx context.Context) (<-chan struct{}, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: w.NetNS})
	if err != nil {
		return nil, fmt.Errorf("nftables notifications: %w", err)
	}
	if err := c.SetBPF(newGenFilter()); err != nil {
		c.Close()
		return nil, fmt.Errorf("nftables notifications: filter: %w", err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		c.Close()
		return nil, fmt.Errorf("nftables notifications: join group: %w", err)
	}
	out := make(chan struct{}, 1)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	go func() {
		defer close(out)
		defer stop()
		for {
			_, err := c.Receive()
			if ctx.Err() != nil {
				return
			}
			select {
			case out <- struct{}{}:
			default:
			}
			if err != nil && !isOverflow(err) {
				c.Close()
				return
			}
		}
	}()
	return out, nil
}

// newGenFilter accepts only NFT_MSG_NEWGEN: the netlink header's type
// (host byte order, at offset 4) compared byte by byte.
func newGenFilter() []bpf.RawInstruction {
	var typ [2]byte
	binary.NativeEndian.PutUint16(typ[:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN)
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(typ[0]), SkipTrue: 3},
		bpf.LoadAbsolute{Off: 5, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(typ[1]), SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic(err) // a constant program
	}
	return prog
}

// isOverflow: the socket's buffer overflowed and notifications were lost
// (the watch goes on; the caller looks at the generation again).
func isOverflow(err error) bool { return errors.Is(err, unix.ENOBUFS) }
