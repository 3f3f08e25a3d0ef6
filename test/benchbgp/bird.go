package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/test/lab"
)

// birdRun is one run of n routes from BIRD into a one-node lab.
type birdRun struct {
	n             int
	total, stream time.Duration
	lost          bool // notifications overflowed; the dump timed the last route
	// naive is what a notification socket of the default size counted,
	// and why it stopped.
	naive    int
	naiveErr error
	err      error
}

// birdRoutes runs bgpToKernel runs times for each count.
func birdRoutes(bin string, counts []int, runs int) []birdRun {
	var out []birdRun
	for _, n := range counts {
		for i := range runs {
			fmt.Fprintf(os.Stderr, "%d routes from BIRD to the kernel, run %d of %d ...\n", n, i+1, runs)
			r := bgpToKernel(bin, n)
			if r.err != nil {
				fmt.Fprintf(os.Stderr, "  failed: %v\n", r.err)
			}
			out = append(out, r)
		}
	}
	return out
}

// bgpToKernel: BIRD announces n host routes inside the pool to a one-node
// lab; timed from the peer's configuration (session setup included) and
// from the first route's arrival, to the last route in the kernel.
func bgpToKernel(bin string, n int) (r birdRun) {
	r.n = n
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "benchbgp-")
	defer os.RemoveAll(dir)
	// One pool wide enough for 100,000 host routes (10.241.0.0 onwards).
	pool := conf.IPPool{Metadata: conf.ObjectMeta{Name: "bench-wide"}, Spec: conf.IPPoolSpec{CIDR: "10.240.0.0/12"}}
	pool.Default()
	l, err := lab.New(ctx, lab.Config{Nodes: 1, BinDir: bin, Dir: dir, Pools: []conf.IPPool{pool}})
	if err != nil {
		r.err = err
		return r
	}
	defer l.Close()
	var b strings.Builder
	b.WriteString("router id {{ROUTER_ID}};\nprotocol device {}\nprotocol static many {\n  ipv4;\n")
	base := netip.MustParseAddr("10.241.0.0").As4()
	for i := range n {
		v := (uint32(base[0])<<24 | uint32(base[1])<<16) + uint32(i)
		fmt.Fprintf(&b, "  route %d.%d.%d.%d/32 blackhole;\n", v>>24, v>>16&255, v>>8&255, v&255)
	}
	b.WriteString("}\nprotocol bgp node1 { local as 65001; neighbor 198.19.1.11 as 64512; ipv4 { import none; export all; }; }\n")
	if _, err := l.StartBird("many", netip.MustParseAddr("198.19.1.250"), b.String()); err != nil {
		r.err = err
		return r
	}
	w, err := watchRoutes(l.Nodes[0].NS, true)
	if err != nil {
		r.err = err
		return r
	}
	defer w.close()
	// maxPrefixes: the default limit (10,000 per family) is below what BIRD sends.
	peer := `{"apiVersion":"brindle.net/v1","kind":"BGPPeer","metadata":{"name":"many"},"spec":{"peerIP":"198.19.1.250","asNumber":65001,"maxPrefixes":200000}}`
	start := time.Now()
	if _, err := l.Etcd.Put(ctx, ipam.Prefix+"bgp/peers/many", peer); err != nil {
		r.err = err
		return r
	}
	// The node's own blocks are routes too (blackholes); it has none here.
	first, last, err := w.waitFor(n, 120*time.Second)
	if err != nil {
		st, serr := l.Nodes[0].Status(ctx)
		if serr == nil {
			err = fmt.Errorf("%w; brindled wants %d routes, has learned %d paths, last sync %+v", err, len(st.Routes), len(st.Learned), st.LastSync)
		}
		r.err = err
		return r
	}
	time.Sleep(200 * time.Millisecond) // let the default-size socket's reader finish
	w.mu.Lock()
	r.lost = w.overflow != nil
	r.naive, r.naiveErr = w.naive, w.naiveErr
	w.mu.Unlock()
	r.total, r.stream = last.Sub(start), last.Sub(first)
	return r
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
