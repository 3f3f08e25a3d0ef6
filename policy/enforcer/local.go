package enforcer

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"runtime"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/policy"
)

// discover lists the node's pod attachments from the kernel: brindle's
// host veths and the host routes through them (`<pod ip>/32 dev bri…`),
// which only the CNI plugin writes. A pod cannot change them, so they are
// what anti-spoofing trusts.
func discover(h *netlink.Handle) ([]policy.Local, error) {
	links, err := retry(func() ([]netlink.Link, error) { return h.LinkList() })
	if err != nil {
		return nil, err
	}
	byIndex := map[int]*policy.Local{}
	for _, l := range links {
		a := l.Attrs()
		if _, ok := l.(*netlink.Veth); !ok || !strings.HasPrefix(a.Name, conf.VethPrefix) {
			continue
		}
		byIndex[a.Index] = &policy.Local{Veth: a.Name}
	}
	if len(byIndex) == 0 {
		return nil, nil
	}
	routes, err := retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		l, ok := byIndex[r.LinkIndex]
		if !ok || r.Dst == nil || r.Gw != nil {
			continue
		}
		ones, bits := r.Dst.Mask.Size()
		if ones != bits {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			l.Addrs = append(l.Addrs, a.Unmap())
		}
	}
	var out []policy.Local
	for _, l := range byIndex {
		if len(l.Addrs) == 0 {
			continue // no route yet: the plugin is still making it
		}
		sort.Slice(l.Addrs, func(i, j int) bool { return l.Addrs[i].Less(l.Addrs[j]) })
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Veth < out[j].Veth })
	return out, nil
}

func retry[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		if v, err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// watchKernel signals on every link or route change in the namespace, so
// that a new pod's endpoint is written as soon as its host route exists.
// The subscriptions are made from a thread inside the namespace (when one
// is given), which binds their sockets to it.
func watchKernel(ctx context.Context, nsh netns.NsHandle, log *slog.Logger, signal func()) {
	links := make(chan netlink.LinkUpdate, 256)
	routes := make(chan netlink.RouteUpdate, 256)
	subscribe := func() {
		if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{
			ErrorCallback: func(err error) {
				if ctx.Err() == nil {
					log.Warn("link watch", "err", err)
					signal() // events may have been lost: look again
				}
			}}); err != nil {
			log.Warn("cannot watch links; relying on the periodic check", "err", err)
		}
		if err := netlink.RouteSubscribeWithOptions(routes, ctx.Done(), netlink.RouteSubscribeOptions{
			ErrorCallback: func(err error) {
				if ctx.Err() == nil {
					log.Warn("route watch", "err", err)
					signal()
				}
			}}); err != nil {
			log.Warn("cannot watch routes; relying on the periodic check", "err", err)
		}
	}
	if nsh == 0 {
		subscribe()
	} else {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				log.Warn("cannot watch the namespace", "err", err)
				return // the thread ends locked, in its own namespace
			}
			defer orig.Close()
			if err := netns.Set(nsh); err != nil {
				log.Warn("cannot enter the namespace to watch it", "err", err)
				return
			}
			subscribe()
			// Back home before the thread is reused; a thread that cannot
			// go back stays locked and ends with this goroutine.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		<-done
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-links:
				if !ok {
					links = nil
					continue
				}
				if strings.HasPrefix(u.Attrs().Name, conf.VethPrefix) {
					signal()
				}
			case u, ok := <-routes:
				if !ok {
					routes = nil
					continue
				}
				if u.Route.Dst != nil && u.Route.Gw == nil {
					signal()
				}
			}
		}
	}()
}
