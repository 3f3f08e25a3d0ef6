package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/bgpd"
)

// routeWatch timestamps brindle's routes as they arrive in one namespace's
// kernel, from rtnetlink notifications. Notifications are a multicast
// socket: if its buffer overflows (ENOBUFS) messages are lost, and counting
// them would report routes missing that are not. So the watch notes an
// overflow, and every count it reports is confirmed by dumping the table.
type routeWatch struct {
	nsh  ns.NetNS
	done chan struct{}

	mu       sync.Mutex
	seen     map[string]time.Time // first arrival of each destination
	first    time.Time
	last     time.Time
	overflow error
	// naive counts the same notifications on a socket of the default size,
	// as the bench once did: what it ends with shows whether they overflow.
	naive    int
	naiveErr error
}

// watchRoutes starts watching n's kernel for routes with brindle's
// protocol. With naive, a second subscription of the default size counts
// the same notifications, to show whether they overflow.
func watchRoutes(n ns.NetNS, naive bool) (*routeWatch, error) {
	h, err := netns.GetFromPath(n.Path())
	if err != nil {
		return nil, err
	}
	w := &routeWatch{nsh: n, done: make(chan struct{}), seen: map[string]time.Time{}}
	ch := make(chan netlink.RouteUpdate, 65536)
	err = netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{
		Namespace: &h,
		// Room for 100,000 notifications even if this reader falls behind.
		ReceiveBufferSize: 256 << 20, ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			if w.overflow == nil {
				w.overflow = err
			}
			w.mu.Unlock()
		},
	})
	if err != nil {
		h.Close()
		return nil, err
	}
	if !naive {
		h.Close()
		go w.read(ch)
		return w, nil
	}
	naiveCh := make(chan netlink.RouteUpdate, 1024)
	err = netlink.RouteSubscribeWithOptions(naiveCh, w.done, netlink.RouteSubscribeOptions{Namespace: &h,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			if w.naiveErr == nil {
				w.naiveErr = err
			}
			w.mu.Unlock()
		}})
	h.Close()
	if err != nil {
		return nil, err
	}
	go func() {
		for u := range naiveCh {
			if u.Type == unix.RTM_NEWROUTE && u.Route.Protocol == bgpd.RouteProtocol {
				w.mu.Lock()
				w.naive++
				w.mu.Unlock()
			}
		}
	}()
	go w.read(ch)
	return w, nil
}

func (w *routeWatch) read(ch <-chan netlink.RouteUpdate) {
	for u := range ch {
		if u.Type != unix.RTM_NEWROUTE || u.Route.Protocol != bgpd.RouteProtocol || u.Route.Dst == nil {
			continue
		}
		now := time.Now()
		w.mu.Lock()
		if d := u.Route.Dst.String(); w.seen[d].IsZero() {
			w.seen[d] = now
			if w.first.IsZero() {
				w.first = now
			}
			w.last = now
		}
		w.mu.Unlock()
	}
}

// arrived is when dst first arrived (zero if it has not).
func (w *routeWatch) arrived(dst string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen[dst]
}

func (w *routeWatch) close() { close(w.done) }

// waitFor waits until the kernel holds at least n of brindle's routes and
// returns when the first and the last of them arrived. The count is
// confirmed by a dump; after an overflow, the dump alone decides, polled
// every 100 ms, and last is when the dump first showed n.
func (w *routeWatch) waitFor(n int, timeout time.Duration) (first, last time.Time, err error) {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		seen, f, l, of := len(w.seen), w.first, w.last, w.overflow
		w.mu.Unlock()
		if seen >= n || of != nil || time.Now().After(deadline) {
			have, err := countKernel(w.nsh)
			if err != nil {
				return f, l, err
			}
			if have >= n {
				if of != nil || seen < n {
					l = time.Now() // the events were lost: the dump is the only witness
				}
				return f, l, nil
			}
			if time.Now().After(deadline) {
				return f, l, fmt.Errorf("kernel holds %d of %d routes after %v (dump); %d seen as events (overflow: %v)", have, n, timeout, seen, of)
			}
			if of != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countKernel dumps n's main table and counts brindle's routes.
func countKernel(n ns.NetNS) (int, error) {
	count := 0
	err := n.Do(func(ns.NetNS) error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		rs, err := bgpd.Netlink{H: h}.List()
		count = len(rs)
		return err
	})
	return count, err
}
