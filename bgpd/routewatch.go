package bgpd

import (
	"context"
	"log/slog"
	"time"

	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/internal/nlwatch"
)

// WatchRouteDeletes signals when a route with brindle's protocol is deleted
// by someone else, so that it comes back at once. It listens to the
// kernel's route notifications (IPv4 and IPv6) through a socket filter
// that lets only the deletion of a brindle route through: the
// notifications of every route brindled itself adds (one per learned
// path, on every node, and 100,000 at once when a peer sends a big table)
// are dropped by the kernel instead of waking brindled to be read and
// thrown away. Should the socket still overflow (ENOBUFS), messages were
// lost, a delete perhaps among them: that is signalled too (the sync lists
// the kernel again) and the watch goes on; a socket that fails otherwise
// is opened again.
func WatchRouteDeletes(ctx context.Context, log *slog.Logger) <-chan struct{} {
	return watchRouteDeletes(ctx, log, dialRouteDeletes)
}

func watchRouteDeletes(ctx context.Context, log *slog.Logger, dial func() (*mdnetlink.Conn, error)) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		for ctx.Err() == nil {
			c, err := dial()
			if err != nil {
				log.Warn("cannot watch routes; relying on periodic resync", "err", err)
				sleepCtx(ctx, 10*time.Second)
				continue
			}
			err = nlwatch.Receive(ctx, c, func(lost error) {
				signal(out)
				if lost != nil {
					log.Info("route watch lost messages; resyncing", "err", lost)
				}
			})
			if err != nil {
				log.Info("route watch failed; resyncing and watching again", "err", err)
			}
			c.Close()
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}()
	return out
}

// dialRouteDeletes opens the filtered notification socket, in the calling
// thread's network namespace.
func dialRouteDeletes() (*mdnetlink.Conn, error) {
	c, err := mdnetlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, err
	}
	// Room for a burst of deletes (someone flushing 100,000 routes),
	// beyond the system's default maximum.
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20) })
	}
	if err := c.SetBPF(routeDeleteFilter()); err != nil {
		c.Close()
		return nil, err
	}
	for _, g := range []uint32{unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE} {
		if err := c.JoinGroup(g); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// routeDeleteFilter accepts RTM_DELROUTE of protocol RouteProtocol (the
// protocol byte of the rtmsg after the 16-byte netlink header).
func routeDeleteFilter() []bpf.RawInstruction {
	return nlwatch.Filter(unix.RTM_DELROUTE, nlwatch.Byte{Off: unix.NLMSG_HDRLEN + 5, Val: byte(RouteProtocol)}) // rtm_protocol
}
