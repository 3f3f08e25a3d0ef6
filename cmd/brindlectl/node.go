package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

func init() {
	register("", func(*app) *cobra.Command {
		return newGroup("node", "nodes: list, status (BGP sessions and routes), delete")
	})
	register("node", newNodeListCmd)
	register("node", newNodeStatusCmd)
	register("node", newNodeDeleteCmd)
}

// nodeRow is a node record with the blocks affine to it.
type nodeRow struct {
	conf.Node
	Blocks []string `json:"blocks"`
}

// listNodes reads every node record and its blocks at one revision.
func listNodes(e *env) ([]nodeRow, error) {
	res, err := e.cli.Txn(e.ctx).Then(
		clientv3.OpGet(ipam.Prefix+"nodes/", clientv3.WithPrefix()),
		clientv3.OpGet(ipam.Prefix+"ipam/affinity/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
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
	var rows []nodeRow
	for _, kv := range res.Responses[0].GetResponseRange().Kvs {
		n, err := conf.UnmarshalNode(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		rows = append(rows, nodeRow{n, blocks[n.Name]})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

func newNodeListCmd(a *app) *cobra.Command {
	var o outputFlag
	c := &cobra.Command{
		Use:   "list",
		Short: "registered nodes, their addresses, AS and blocks",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return a.withEnv(func(e *env) error {
				rows, err := listNodes(e)
				if err != nil {
					return err
				}
				if rows == nil {
					rows = []nodeRow{}
				}
				return o.print(a.out, rows, func(t *table) {
					t.header("NAME", "IPV4", "AS", "RR CLUSTER", "BLOCKS", "LABELS", "REGISTERED", "|", "IPV6", "TUNNEL IP", "VTEP MAC")
					for _, n := range rows {
						as := "cluster"
						if n.ASNumber != 0 {
							as = fmt.Sprint(n.ASNumber)
						}
						t.row(n.Name, n.IPv4Address, as, dash(n.RRClusterID()), dash(strings.Join(n.Blocks, ",")),
							dash(labels(n.Labels)), n.Registered.Format(time.RFC3339), dash(n.IPv6Address), dash(n.TunnelIPv4), dash(n.VXLANMAC))
					}
				})
			})
		},
	}
	o.add(c, "table")
	return c
}

func newNodeStatusCmd(a *app) *cobra.Command {
	var o outputFlag
	var addr string
	c := &cobra.Command{
		Use:   "status [--addr HOST:PORT]",
		Short: "this node's BGP sessions and routes (asks the local brindled)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			body, st, err := a.localStatus(addr)
			if err != nil {
				return err
			}
			switch o.format {
			case "json":
				_, err := a.out.Write(body)
				return err
			case "yaml":
				y, err := yaml.JSONToYAML(body)
				if err != nil {
					return err
				}
				_, err = a.out.Write(y)
				return err
			}
			printStatus(a.out, st, o.wide())
			return nil
		},
	}
	c.Flags().StringVar(&addr, "addr", getenv("BRINDLED_ADDR", "127.0.0.1:9099"), "brindled's health address (env BRINDLED_ADDR)")
	o.add(c, "table")
	return c
}

// localStatus reads /status of the brindled at addr.
func (a *app) localStatus(addr string) ([]byte, bgpd.Status, error) {
	var st bgpd.Status
	ctx, cancel := contextTimeout(a)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/status", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, st, fmt.Errorf("brindled at %s: %w (is it running on this node? --addr)", addr, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, st, fmt.Errorf("decode status: %w", err)
	}
	return body, st, nil
}

func printStatus(w io.Writer, st bgpd.Status, wide bool) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY: " + strings.Join(st.NotReady, "; ")
	}
	fmt.Fprintf(w, "node %s  %s  (%s)\n\n", st.Node.Name, st.Node.IPv4Address, ready)
	t := newTable(w, wide)
	t.header("PEER", "NAME", "KIND", "AS", "STATE", "UPTIME", "RECEIVED", "ACCEPTED", "|", "SINCE")
	for _, p := range st.Peers {
		up, since := "-", "-"
		if !p.Since.IsZero() {
			up = time.Since(p.Since).Round(time.Second).String()
			since = p.Since.Format(time.RFC3339)
		}
		t.row(p.Address, dash(p.Name), dash(p.Kind), fmt.Sprint(p.ASN), p.State, up, fmt.Sprint(p.Received), fmt.Sprint(p.Accepted), since)
	}
	t.flush()
	fmt.Fprintf(w, "\nannounced: %s\n", dash(strings.Join(st.Exports, ", ")))
	if wide {
		fmt.Fprintf(w, "learned: %s\n", dash(strings.Join(st.Learned, ", ")))
	}
	fmt.Fprintf(w, "\nroutes (proto %d), last sync %s ago in %s:\n", bgpd.RouteProtocol,
		time.Since(st.LastSync.At).Round(time.Millisecond), st.LastSync.Took.Round(time.Microsecond))
	for _, r := range st.Routes {
		fmt.Fprintf(w, "  %s\n", r)
	}
	for _, er := range st.Errors {
		fmt.Fprintf(w, "error: %s\n", er)
	}
}

func newNodeDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "the node leaves: its peers drop it and its routes (its blocks stay until ipam release)",
		Args:              exactArgs(1, "one node NAME"),
		ValidArgsFunction: a.completeNodes,
		RunE: func(c *cobra.Command, args []string) error {
			return a.withEnv(func(e *env) error {
				res, err := e.cli.Delete(e.ctx, ipam.Prefix+"nodes/"+args[0])
				if err != nil {
					return err
				}
				if res.Deleted == 0 {
					return fmt.Errorf("node %q: not registered", args[0])
				}
				fmt.Fprintf(a.out, "node %s deleted\n", args[0])
				return nil
			})
		},
	}
}

// completeNodes completes registered node names.
func (a *app) completeNodes(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	var names []string
	if len(args) == 0 {
		a.withEnv(func(e *env) error {
			rows, err := listNodes(e)
			for _, n := range rows {
				names = append(names, n.Name)
			}
			return err
		})
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func labels(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
