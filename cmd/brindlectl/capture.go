package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/brindle-net/brindle/capture"
	"github.com/brindle-net/brindle/nodeapi"
)

func init() { register("", newCaptureCmd) }

type captureOpts struct {
	nodeFlags
	duration      time.Duration
	maxSize       string
	snaplen       int
	filter        string
	ports         []string
	protocol      string
	output        string
	allInterfaces bool
	node          string
}

func newCaptureCmd(a *app) *cobra.Command {
	var o captureOpts
	c := &cobra.Command{
		Use:   "capture NAMESPACE/POD | --node NODE",
		Short: "record one pod's packets (or every pod's on a node) as pcap, on its node",
		Long: `Record the packets of one pod, on its host veth on its node, so that no other pod's
traffic and none of the node's own is in it. The pcap (one interface) or pcapng (several:
--all-interfaces, --node) goes to -o FILE, or to stdout with -o - (tshark -r -, wireshark -k -i -).

The capture ends at --duration, at --max-size, or at Ctrl-C; every way leaves a valid file.
The node enforces its own limits (brindled --capture-max-duration, --capture-max-bytes,
--capture-max-concurrent). Filters are tcpdump expressions (a subset, compiled without
libpcap: docs/cli.md); --ports and --protocol add to --filter.`,
		Example: `  brindlectl capture default/web-0 -o web.pcap --duration 30s
  brindlectl capture default/web-0 --protocol tcp --ports 80,443 -o - | tshark -r -
  brindlectl capture kube-system/coredns-x --filter 'udp port 53 and not host 10.244.0.1' -o dns.pcap
  brindlectl capture --node node-2 -o node-2.pcapng --duration 10s`,
		Args:              maxArgs(1, "one NAMESPACE/POD"),
		ValidArgsFunction: a.completePods,
		RunE: func(c *cobra.Command, args []string) error {
			return a.capture(c, &o, args)
		},
	}
	fs := c.Flags()
	fs.DurationVar(&o.duration, "duration", time.Minute, "stop after this long")
	fs.StringVar(&o.maxSize, "max-size", "100MB", "stop before the file grows past this (B, KB, MB, GB, KiB, MiB, GiB)")
	fs.IntVar(&o.snaplen, "snaplen", 0, "keep at most this many bytes of each packet (0: whole packets)")
	fs.StringVar(&o.filter, "filter", "", "tcpdump-style filter expression, e.g. 'tcp port 80 and not host 10.0.0.1'")
	fs.StringSliceVar(&o.ports, "ports", nil, "only these ports (either direction), e.g. 53,80,8000-8080")
	fs.StringVar(&o.protocol, "protocol", "", "only this protocol: tcp, udp, icmp, icmp6, sctp, arp")
	fs.StringVarP(&o.output, "output", "o", "", "the pcap file to write, or - for stdout (default: stdout when it is not a terminal)")
	fs.BoolVar(&o.allInterfaces, "all-interfaces", false, "every brindle interface of the pod, not only eth0 (pcapng)")
	fs.StringVar(&o.node, "node", "", "every brindle pod on this node, merged into one pcapng with one interface per pod")
	o.nodeFlags.add(c)
	c.RegisterFlagCompletionFunc("node", a.completeNodes)
	c.RegisterFlagCompletionFunc("protocol", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"tcp", "udp", "icmp", "icmp6", "sctp", "arp"}, cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

// parseSize reads 100MB, 1GiB, 512k, 4096.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: want a size such as 100MB or 1GiB", s)
	}
	return int64(n * float64(mult)), nil
}

func splitPod(c *cobra.Command, s string) (string, string, error) {
	ns, pod, ok := strings.Cut(s, "/")
	if !ok || ns == "" || pod == "" || strings.Contains(pod, "/") {
		return "", "", usagef(c, "%q: want NAMESPACE/POD", s)
	}
	return ns, pod, nil
}

// lazyFile opens its file on the first write, so that a capture refused by
// the node leaves no empty file behind.
type lazyFile struct {
	path string
	f    *os.File
}

func (l *lazyFile) Write(b []byte) (int, error) {
	if l.f == nil {
		f, err := os.OpenFile(l.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return 0, err
		}
		l.f = f
	}
	return l.f.Write(b)
}

func (l *lazyFile) Close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}

func (a *app) capture(c *cobra.Command, o *captureOpts, args []string) error {
	if err := o.check(c); err != nil {
		return err
	}
	req := capture.Request{AllInterfaces: o.allInterfaces, Snaplen: o.snaplen, DurationMillis: o.duration.Milliseconds()}
	switch {
	case len(args) == 1 && o.node != "":
		return usagef(c, "give NAMESPACE/POD or --node, not both")
	case len(args) == 1:
		var err error
		if req.Namespace, req.Pod, err = splitPod(c, args[0]); err != nil {
			return err
		}
	case o.node != "":
		req.AllPods = true
	default:
		return usagef(c, "want NAMESPACE/POD or --node NODE")
	}
	if o.duration <= 0 {
		return usagef(c, "--duration %s: want more than 0", o.duration)
	}
	if o.snaplen < 0 {
		return usagef(c, "--snaplen %d: want 0 (whole packets) or more", o.snaplen)
	}
	var err error
	if req.MaxBytes, err = parseSize(o.maxSize); err != nil {
		return usagef(c, "--max-size %v", err)
	}
	if _, err := capture.Compile(o.filter); err != nil {
		return usagef(c, "--filter: %v", err)
	}
	if req.Filter, err = capture.Expression(o.filter, o.ports, o.protocol); err != nil {
		return usagef(c, "%v", err)
	}
	if _, err := capture.Compile(req.Filter); err != nil {
		return usagef(c, "%v", err)
	}
	var out io.Writer
	name := o.output
	switch o.output {
	case "":
		if isTerminal(a.out) {
			return usagef(c, "stdout is a terminal: give -o FILE, or -o - to write pcap to it anyway")
		}
		out, name = a.out, "stdout"
	case "-":
		out, name = a.out, "stdout"
	default:
		lf := &lazyFile{path: o.output}
		defer lf.Close()
		out = lf
	}

	cli, err := a.captureClient(o, req)
	if err != nil {
		return err
	}
	res, err := a.runCapture(cli, req, out)
	if err != nil {
		if node, ok := nodeapi.IsElsewhere(err); ok {
			// The local socket answered for another node.
			if cli, err = a.remote(a.ctx, &o.nodeFlags, node); err != nil {
				return err
			}
			res, err = a.runCapture(cli, req, out)
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(a.errOut, "capture ended (%s): %d packets, %d bytes to %s", res.Reason, res.Packets, res.Bytes, name)
	if res.Dropped > 0 {
		fmt.Fprintf(a.errOut, "; %d dropped by the kernel (the node could not keep up)", res.Dropped)
	}
	fmt.Fprintln(a.errOut)
	return nil
}

// captureClient picks the node to ask: this node's socket first when it
// may hold the pod (a pod elsewhere is then redirected), else the pod's
// node by TLS or Kubernetes.
func (a *app) captureClient(o *captureOpts, req capture.Request) (*nodeapi.Client, error) {
	local := o.via == "local" || o.via == "auto" && o.haveSocket()
	if req.AllPods {
		if local && (o.via == "local" || o.node == o.localNode()) {
			return o.local(), nil
		}
		return a.remote(a.ctx, &o.nodeFlags, o.node)
	}
	if local {
		return o.local(), nil
	}
	node, err := a.podNode(&o.nodeFlags, req.Namespace, req.Pod)
	if err != nil {
		return nil, err
	}
	return a.remote(a.ctx, &o.nodeFlags, node)
}

// podNode finds the node of a pod: from Kubernetes for --via kube, else
// from the endpoint records in etcd.
func (a *app) podNode(nf *nodeFlags, namespace, pod string) (string, error) {
	if nf.via == "kube" || nf.via == "auto" && !nf.tls.Configured() && nf.kubeUsable() {
		return nf.kubePodNode(a.ctx, namespace, pod)
	}
	var node string
	err := a.withEnv(func(e *env) error {
		eps, err := nodeapi.Endpoints(e.ctx, e.cli, "")
		if err != nil {
			return err
		}
		mine := nodeapi.PodEndpoints(eps, namespace, pod)
		if len(mine) == 0 {
			return fmt.Errorf("pod %s/%s: no brindle endpoint on any node", namespace, pod)
		}
		node = mine[0].Node
		return nil
	})
	return node, err
}

// runCapture streams one capture with progress on a terminal.
func (a *app) runCapture(cli *nodeapi.Client, req capture.Request, out io.Writer) (capture.Result, error) {
	start := time.Now()
	last := time.Time{}
	a.progress("capturing via %s...", cli.Via)
	// The node ends the capture at its duration; this is only a backstop
	// for a node that does not.
	ctx, cancel := context.WithTimeout(a.ctx, req.Duration()+time.Minute)
	defer cancel()
	res, _, err := cli.Capture(ctx, req, out, func(st capture.CopyStats) {
		if now := time.Now(); now.Sub(last) > 200*time.Millisecond {
			last = now
			a.progress("captured %d packets, %d bytes in %s", st.Packets, st.Bytes, now.Sub(start).Round(time.Second))
		}
	})
	a.progressDone()
	if err == nil && a.ctx.Err() != nil {
		res.Reason = "interrupted"
	}
	return res, err
}

// completePods completes NAMESPACE/POD from the endpoint records in etcd.
func (a *app) completePods(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	var names []string
	if len(args) == 0 {
		a.withEnv(func(e *env) error {
			eps, err := nodeapi.Endpoints(e.ctx, e.cli, "")
			seen := map[string]bool{}
			for _, ep := range eps {
				if n := ep.Namespace + "/" + ep.Pod; ep.Pod != "" && !seen[n] {
					seen[n] = true
					names = append(names, n)
				}
			}
			return err
		})
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
