package bgpd

import (
	"context"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchRouteDeletes signals when a route with brindle's protocol is deleted
// by someone else, so that it comes back at once. Route notifications are a
// multicast socket: when brindled itself installs many routes at once, the
// notifications of its own adds can overflow it (ENOBUFS), and the kernel
// then drops messages, a delete perhaps among them. So an overflow is
// signalled too (the sync lists the kernel again), and the watch starts
// over instead of ending.
func WatchRouteDeletes(ctx context.Context, log *slog.Logger) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		for ctx.Err() == nil {
			ch := make(chan netlink.RouteUpdate, 4096)
			failed := make(chan error, 1)
			err := netlink.RouteSubscribeWithOptions(ch, ctx.Done(), netlink.RouteSubscribeOptions{
				ReceiveBufferSize: 32 << 20, ReceiveBufferForceSize: true,
				ErrorCallback: func(err error) {
					select {
					case failed <- err:
					default:
					}
				},
			})
			if err != nil {
				log.Warn("cannot watch routes; relying on periodic resync", "err", err)
				sleepCtx(ctx, 10*time.Second)
				continue
			}
			for u := range ch {
				if u.Type == unix.RTM_DELROUTE && u.Route.Protocol == RouteProtocol {
					signal(out)
				}
			}
			if ctx.Err() != nil {
				return
			}
			select {
			case err := <-failed:
				log.Info("route watch lost messages; resyncing and watching again", "err", err)
			default:
			}
			signal(out) // whatever was missed is found by listing the kernel
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}()
	return out
}
