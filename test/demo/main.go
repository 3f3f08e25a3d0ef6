// Command demo shows brindle end to end on one machine: it builds the lab
// (3 nodes as network namespaces on an underlay, etcd, one real brindled
// per node speaking BGP), attaches 2 pods per node through the real
// brindle + brindle-ipam binaries, prints the pods, a reachability matrix
// measured by ping and one node's BGP sessions and routes, and removes
// everything again. Run it as root: make demo.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

func main() {
	bin := flag.String("bin", "", "directory with the built binaries (default: build them)")
	nodes := flag.Int("nodes", 3, "nodes in the lab")
	perNode := flag.Int("pods", 2, "pods per node")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root to create network namespaces, veths and routes; run `sudo make demo`")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if err := run(ctx, *bin, *nodes, *perNode); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	step("done in %s", time.Since(start).Round(100*time.Millisecond))
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

type endpoint struct {
	name string
	ns   ns.NetNS
	addr netip.Addr
}

func run(ctx context.Context, bin string, nodes, perNode int) error {
	if bin == "" {
		step("building brindle, brindle-ipam, brindled, brindlectl")
		d, err := testenv.Build(nil)
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		bin = d
	}
	dir, err := os.MkdirTemp("", "brindle-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step("starting the lab: %d nodes on 198.19.1.0/24, etcd on the underlay, a brindled (BGP, AS 64512, full mesh) per node", nodes)
	l, err := lab.New(ctx, lab.Config{Nodes: nodes, BinDir: bin, Dir: dir, Log: os.Stdout})
	if err != nil {
		return err
	}
	defer func() {
		step("tearing down: pods (CNI DEL), daemons, namespaces")
		l.Close()
	}()
	step("waiting for every BGP session to be Established")
	if err := l.WaitReady(ctx, 60*time.Second); err != nil {
		return err
	}

	var pods []endpoint
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tPOD\tADDRESS\tHOST VETH")
	for _, n := range l.Nodes {
		for i := range perNode {
			name := fmt.Sprintf("web-%s-%d", n.Name[len("node-"):], i)
			step("CNI ADD default/%s on %s", name, n.Name)
			p, err := n.AddPod(ctx, name)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%s\t%s\t%s/32\t%s\n", n.Name, p.Name, p.Addr, p.HostVeth)
			pods = append(pods, endpoint{p.Name, p.NS, p.Addr})
		}
	}
	fmt.Println()
	w.Flush()

	fmt.Println("\nreachability, by ping (rows ping columns):")
	ends := pods
	for _, n := range l.Nodes {
		ends = append(ends, endpoint{n.Name, n.NS, n.Addr.Addr()})
	}
	failed, total := matrix(pods, ends)
	fmt.Println()

	step("node-1 as the operator sees it: brindlectl node status")
	out, err := l.Nodes[0].Ctl("node", "status")
	fmt.Print(out)
	if err != nil {
		return fmt.Errorf("brindlectl node status: %w", err)
	}
	fmt.Println()
	step("the pool and its blocks: brindlectl ipam show")
	out, err = l.Nodes[0].Ctl("ipam", "show")
	fmt.Print(out)
	if err != nil {
		return fmt.Errorf("brindlectl ipam show: %w", err)
	}
	fmt.Printf("\nlogs of this run were in %s (removed at exit)\n", filepath.Join(dir))
	if failed > 0 {
		return fmt.Errorf("%d of %d pairs unreachable", failed, total)
	}
	step("all %d pairs reachable", total)
	return nil
}

// matrix pings from every pod to every pod and node, in parallel by row,
// and prints the result; it returns the failures and the pairs tried.
func matrix(froms, tos []endpoint) (failed, total int) {
	res := make([][]bool, len(froms))
	var wg sync.WaitGroup
	for i, f := range froms {
		res[i] = make([]bool, len(tos))
		wg.Go(func() {
			for j, t := range tos {
				if f.addr != t.addr {
					res[i][j] = testenv.Ping(f.ns, t.addr, 3) == nil
				}
			}
		})
	}
	wg.Wait()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', 0)
	fmt.Fprint(w, "\t")
	for _, t := range tos {
		fmt.Fprintf(w, "%s\t", t.name)
	}
	fmt.Fprintln(w)
	for i, f := range froms {
		fmt.Fprintf(w, "%s\t", f.name)
		for j, t := range tos {
			switch {
			case f.addr == t.addr:
				fmt.Fprint(w, "-\t")
			case res[i][j]:
				total++
				fmt.Fprint(w, "ok\t")
			default:
				total++
				failed++
				fmt.Fprint(w, "FAIL\t")
			}
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	return failed, total
}
