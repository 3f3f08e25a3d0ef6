// Command demo shows brindle's dataplane on one host: it makes a host
// network namespace, attaches two pods through the real `brindle` plugin
// (driven by libcni, as containerd drives it), prints what it made, proves
// reachability by ping and removes everything again. Run it as root:
//
//	make demo
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/plugins/routed"
)

func main() {
	bin := flag.String("bin", "", "directory with the built brindle binary and reference plugins (default: build them)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root to create network namespaces and veths; run `sudo make demo`")
		os.Exit(2)
	}
	if err := run(*bin); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type pod struct {
	name, veth string
	ns         ns.NetNS
	addr       netip.Addr
	rt         *libcni.RuntimeConf
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(bin string) error {
	if bin == "" {
		step("building brindle and the reference plugins")
		d, err := testenv.Build([]string{"brindle"})
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

	step("creating a host namespace (198.18.0.2, default route via a 'world' namespace)")
	host, cleanup, err := testenv.CreateHost()
	if err != nil {
		return err
	}
	defer func() {
		step("tearing down namespaces")
		cleanup()
	}()

	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "demo", "plugins": []any{map[string]any{
		"type": "brindle", "logFile": filepath.Join(dir, "cni.log"),
		"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(dir, "ipam"), "ranges": [][]map[string]string{{{"subnet": "10.244.7.0/24"}}}},
	}}})
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		return err
	}
	cni := testenv.NewCNIConfig(bin, filepath.Join(dir, "cache"))
	inHost := func(f func() error) error { return host.NS.Do(func(ns.NetNS) error { return f() }) }

	var pods []*pod
	for _, name := range []string{"frontend", "backend"} {
		n, c, err := testenv.CreateNS()
		if err != nil {
			return err
		}
		defer c()
		p := &pod{name: name, ns: n, veth: routed.HostVethName("demo", name, ""), rt: &libcni.RuntimeConf{
			ContainerID: "demo-" + name, NetNS: n.Path(), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "demo"}, {"K8S_POD_NAME", name}},
		}}
		step("CNI ADD demo/%s", name)
		var res *current.Result
		err = inHost(func() error {
			r, err := cni.AddNetworkList(context.Background(), list, p.rt)
			if err != nil {
				return err
			}
			res, err = current.NewResultFromResult(r)
			return err
		})
		if err != nil {
			return fmt.Errorf("ADD %s: %w", name, err)
		}
		p.addr, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
		pods = append(pods, p)
	}
	defer func() {
		for _, p := range pods {
			step("CNI DEL demo/%s", p.name)
			if err := inHost(func() error { return cni.DelNetworkList(context.Background(), list, p.rt) }); err != nil {
				fmt.Fprintf(os.Stderr, "DEL %s: %v\n", p.name, err)
			}
		}
	}()

	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "POD\tADDRESS\tHOST VETH\tPOD ROUTES")
	for _, p := range pods {
		var routes []string
		_ = p.ns.Do(func(ns.NetNS) error {
			rs, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
			for _, r := range rs {
				if r.Gw != nil {
					routes = append(routes, "default via "+r.Gw.String())
				} else {
					routes = append(routes, r.Dst.String()+" scope link")
				}
			}
			return nil
		})
		fmt.Fprintf(w, "demo/%s\t%s/32\t%s\t%s\n", p.name, p.addr, p.veth, strings.Join(routes, ", "))
	}
	w.Flush()

	fmt.Println("\nhost routes to pods:")
	_ = inHost(func() error {
		rs, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range rs {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && strings.HasPrefix(l.Attrs().Name, routed.VethPrefix) {
				fmt.Printf("  %s dev %s scope link\n", r.Dst, l.Attrs().Name)
			}
		}
		return nil
	})

	fmt.Println("\nreachability (ping):")
	type end struct {
		name string
		ns   ns.NetNS
		addr netip.Addr
	}
	ends := []end{{"host", host.NS, host.Addr}}
	for _, p := range pods {
		ends = append(ends, end{p.name, p.ns, p.addr})
	}
	w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprint(w, "from \\ to")
	for _, e := range ends {
		fmt.Fprintf(w, "\t%s", e.name)
	}
	fmt.Fprintln(w)
	failed := 0
	for _, from := range ends {
		fmt.Fprint(w, from.name)
		for _, to := range ends {
			if from.name == to.name {
				fmt.Fprint(w, "\t-")
				continue
			}
			if err := testenv.Ping(from.ns, to.addr, 3); err != nil {
				failed++
				fmt.Fprint(w, "\tFAIL")
			} else {
				fmt.Fprint(w, "\tok")
			}
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	fmt.Println()
	if failed > 0 {
		return fmt.Errorf("%d of %d pairs unreachable", failed, len(ends)*(len(ends)-1))
	}
	step("all %d pairs reachable", len(ends)*(len(ends)-1))
	return nil
}
