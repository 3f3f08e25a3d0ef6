package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

// nodeList prints every registered node with its blocks.
func (e *env) nodeList(args []string) error {
	fs := flag.NewFlagSet("node list", flag.ContinueOnError)
	output := fs.String("o", "table", "table or json")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	res, err := e.cli.Txn(e.ctx).Then(
		clientv3.OpGet(ipam.Prefix+"nodes/", clientv3.WithPrefix()),
		clientv3.OpGet(ipam.Prefix+"ipam/affinity/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return fmt.Errorf("read nodes: %w", err)
	}
	blocks := map[string][]string{}
	for _, kv := range res.Responses[1].GetResponseRange().Kvs {
		rest := strings.TrimPrefix(string(kv.Key), ipam.Prefix+"ipam/affinity/")
		node, cidr, ok := strings.Cut(rest, "/")
		if ok {
			if i := strings.LastIndex(cidr, "-"); i >= 0 {
				cidr = cidr[:i] + "/" + cidr[i+1:]
			}
			blocks[node] = append(blocks[node], cidr)
		}
	}
	var nodes []conf.Node
	for _, kv := range res.Responses[0].GetResponseRange().Kvs {
		n, err := conf.UnmarshalNode(kv.Value)
		if err != nil {
			return fmt.Errorf("%s: %w", kv.Key, err)
		}
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	if *output == "json" {
		type row struct {
			conf.Node
			Blocks []string `json:"blocks"`
		}
		var rows []row
		for _, n := range nodes {
			rows = append(rows, row{n, blocks[n.Name]})
		}
		return writeJSON(e.out, rows)
	}
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIPV4\tAS\tRR CLUSTER\tBLOCKS\tLABELS\tREGISTERED")
	for _, n := range nodes {
		as := "cluster"
		if n.ASNumber != 0 {
			as = fmt.Sprint(n.ASNumber)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.IPv4Address, as, dash(n.RouteReflectorClusterID),
			dash(strings.Join(blocks[n.Name], ",")), dash(labels(n.Labels)), n.Registered.Format(time.RFC3339))
	}
	return tw.Flush()
}

// nodeStatus asks the local brindled for its sessions and routes.
func (e *env) nodeStatus(args []string) error {
	fs := flag.NewFlagSet("node status", flag.ContinueOnError)
	addr := fs.String("addr", getenv("BRINDLED_ADDR", "127.0.0.1:9099"), "brindled's health address")
	output := fs.String("o", "table", "table or json")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(e.ctx, "GET", "http://"+*addr+"/status", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("brindled at %s: %w (is it running on this node? --addr)", *addr, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if *output == "json" {
		_, err := e.out.Write(body)
		return err
	}
	var st bgpd.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("decode status: %w", err)
	}
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY: " + strings.Join(st.NotReady, "; ")
	}
	fmt.Fprintf(e.out, "node %s  %s  (%s)\n\n", st.Node.Name, st.Node.IPv4Address, ready)
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tNAME\tKIND\tAS\tSTATE\tUPTIME\tRECEIVED\tACCEPTED")
	for _, p := range st.Peers {
		up := "-"
		if !p.Since.IsZero() {
			up = time.Since(p.Since).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\n", p.Address, dash(p.Name), dash(p.Kind), p.ASN, p.State, up, p.Received, p.Accepted)
	}
	tw.Flush()
	fmt.Fprintf(e.out, "\nannounced: %s\n", dash(strings.Join(st.Exports, ", ")))
	fmt.Fprintf(e.out, "\nroutes (proto %d), last sync %s ago in %s:\n", bgpd.RouteProtocol,
		time.Since(st.LastSync.At).Round(time.Millisecond), st.LastSync.Took.Round(time.Microsecond))
	for _, r := range st.Routes {
		fmt.Fprintf(e.out, "  %s\n", r)
	}
	for _, er := range st.Errors {
		fmt.Fprintf(e.out, "error: %s\n", er)
	}
	return nil
}

// nodeDelete removes a node's record: the other nodes drop their sessions
// with it and its routes. Its blocks stay until `ipam check`/`release`.
func (e *env) nodeDelete(args []string) error {
	fs := flag.NewFlagSet("node delete", flag.ContinueOnError)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"node delete: want one node name"}
	}
	res, err := e.cli.Delete(e.ctx, ipam.Prefix+"nodes/"+pos[0])
	if err != nil {
		return err
	}
	if res.Deleted == 0 {
		return fmt.Errorf("node %q: not registered", pos[0])
	}
	fmt.Fprintf(e.out, "node %s deleted\n", pos[0])
	return nil
}

// bgpApply stores BGPConfiguration and BGPPeer documents.
func (e *env) bgpApply(args []string) error {
	fs := flag.NewFlagSet("bgp apply", flag.ContinueOnError)
	file := fs.String("f", "", "YAML file, or - for stdin")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	var data []byte
	var err error
	switch *file {
	case "":
		return usageError{"bgp apply: -f FILE is required"}
	case "-":
		data, err = io.ReadAll(os.Stdin)
	default:
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return err
	}
	cfgs, peers, err := conf.ParseBGPDocs(data)
	if err != nil {
		return err
	}
	var ops []clientv3.Op
	for _, c := range cfgs {
		b, _ := json.Marshal(c)
		ops = append(ops, clientv3.OpPut(ipam.Prefix+"bgp/config", string(b)))
	}
	for _, p := range peers {
		b, _ := json.Marshal(p)
		ops = append(ops, clientv3.OpPut(ipam.Prefix+"bgp/peers/"+p.Metadata.Name, string(b)))
	}
	// All documents or none.
	if _, err := e.cli.Txn(e.ctx).Then(ops...).Commit(); err != nil {
		return err
	}
	for _, c := range cfgs {
		fmt.Fprintf(e.out, "BGPConfiguration %s applied\n", c.Metadata.Name)
	}
	for _, p := range peers {
		fmt.Fprintf(e.out, "BGPPeer %s applied\n", p.Metadata.Name)
	}
	return nil
}

// bgpGet prints the BGP configuration in force and the peers.
func (e *env) bgpGet(args []string) error {
	fs := flag.NewFlagSet("bgp get", flag.ContinueOnError)
	output := fs.String("o", "yaml", "yaml or json")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	res, err := e.cli.Txn(e.ctx).Then(clientv3.OpGet(ipam.Prefix+"bgp/", clientv3.WithPrefix())).Commit()
	if err != nil {
		return err
	}
	cfg := conf.DefaultBGPConfiguration()
	var docs []any
	var peers []any
	for _, kv := range res.Responses[0].GetResponseRange().Kvs {
		if string(kv.Key) == ipam.Prefix+"bgp/config" {
			if cfg, err = conf.UnmarshalBGPConfiguration(kv.Value); err != nil {
				return err
			}
			continue
		}
		p, err := conf.UnmarshalBGPPeer(kv.Value)
		if err != nil {
			return fmt.Errorf("%s: %w", kv.Key, err)
		}
		if p.Spec.Password != "" {
			p.Spec.Password = "(set)"
		}
		peers = append(peers, p)
	}
	docs = append(append(docs, cfg), peers...)
	if *output == "json" {
		return writeJSON(e.out, docs)
	}
	for i, d := range docs {
		b, err := yaml.Marshal(d)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(e.out, "---")
		}
		e.out.Write(b)
	}
	return nil
}

// bgpPeerDelete removes a BGPPeer: the nodes drop the session.
func (e *env) bgpPeerDelete(args []string) error {
	fs := flag.NewFlagSet("bgp delete-peer", flag.ContinueOnError)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"bgp delete-peer: want one peer name"}
	}
	res, err := e.cli.Delete(e.ctx, ipam.Prefix+"bgp/peers/"+pos[0])
	if err != nil {
		return err
	}
	if res.Deleted == 0 {
		return fmt.Errorf("BGP peer %q: not found", pos[0])
	}
	fmt.Fprintf(e.out, "BGPPeer %s deleted\n", pos[0])
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func labels(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
