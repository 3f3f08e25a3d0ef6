package nft

import (
	"context"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/nlwatch"
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
	go func() {
		defer close(out)
		_ = nlwatch.Receive(ctx, c, func(error) {
			select {
			case out <- struct{}{}:
			default:
			}
		})
		c.Close()
	}()
	return out, nil
}

// newGenFilter accepts only NFT_MSG_NEWGEN.
func newGenFilter() []bpf.RawInstruction {
	return nlwatch.Filter(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN)
}
