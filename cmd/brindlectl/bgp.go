package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

func init() {
	register("", func(*app) *cobra.Command {
		return newGroup("bgp", "the BGP configuration and peers: apply, get, delete-peer")
	})
	register("bgp", newBGPApplyCmd)
	register("bgp", newBGPGetCmd)
	register("bgp", newBGPDeletePeerCmd)
}

func newBGPApplyCmd(a *app) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "store BGPConfiguration and BGPPeer documents (all or none)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if file == "" {
				return usagef(c, "-f FILE is required (- for stdin)")
			}
			data, err := a.readInput(file)
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
			return a.withEnv(func(e *env) error {
				if _, err := e.cli.Txn(e.ctx).Then(ops...).Commit(); err != nil {
					return err
				}
				for _, c := range cfgs {
					fmt.Fprintf(a.out, "BGPConfiguration %s applied\n", c.Metadata.Name)
				}
				for _, p := range peers {
					fmt.Fprintf(a.out, "BGPPeer %s applied\n", p.Metadata.Name)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "filename", "f", "", "YAML file, or - for stdin")
	return c
}

// bgpDocs reads the configuration in force (defaults written out) and the
// peers, passwords hidden.
func bgpDocs(e *env) (conf.BGPConfiguration, []conf.BGPPeer, error) {
	cfg := conf.DefaultBGPConfiguration()
	res, err := e.cli.Get(e.ctx, ipam.Prefix+"bgp/", clientv3.WithPrefix())
	if err != nil {
		return cfg, nil, err
	}
	var peers []conf.BGPPeer
	for _, kv := range res.Kvs {
		if string(kv.Key) == ipam.Prefix+"bgp/config" {
			if cfg, err = conf.UnmarshalBGPConfiguration(kv.Value); err != nil {
				return cfg, nil, err
			}
			continue
		}
		p, err := conf.UnmarshalBGPPeer(kv.Value)
		if err != nil {
			return cfg, nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		if p.Spec.Password != "" {
			p.Spec.Password = "(set)"
		}
		peers = append(peers, p)
	}
	return cfg, peers, nil
}

func newBGPGetCmd(a *app) *cobra.Command {
	var o outputFlag
	c := &cobra.Command{
		Use:   "get",
		Short: "the BGP configuration in force and the peers",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return a.withEnv(func(e *env) error {
				cfg, peers, err := bgpDocs(e)
				if err != nil {
					return err
				}
				docs := []any{cfg}
				for _, p := range peers {
					docs = append(docs, p)
				}
				switch o.format {
				case "json":
					return writeJSON(a.out, docs)
				case "yaml":
					// Documents that `bgp apply -f` takes back.
					for i, d := range docs {
						b, err := yaml.Marshal(d)
						if err != nil {
							return err
						}
						if i > 0 {
							fmt.Fprintln(a.out, "---")
						}
						a.out.Write(b)
					}
					return nil
				}
				return o.print(a.out, docs, func(t *table) {
					b, _ := json.Marshal(cfg.Spec)
					t.line("BGPConfiguration %s: %s", cfg.Metadata.Name, b)
					t.line("")
					t.header("PEER", "PEER IP", "AS", "NODE SELECTOR", "|", "SPEC")
					for _, p := range peers {
						spec, _ := json.Marshal(p.Spec)
						t.row(p.Metadata.Name, dash(p.Spec.PeerIP), fmt.Sprint(p.Spec.ASNumber), dash(p.Spec.NodeSelector), string(spec))
					}
				})
			})
		},
	}
	o.add(c, "yaml")
	return c
}

func newBGPDeletePeerCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-peer NAME",
		Short: "remove a BGPPeer: the nodes drop the session",
		Args:  exactArgs(1, "one peer NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return a.withEnv(func(e *env) error {
				res, err := e.cli.Delete(e.ctx, ipam.Prefix+"bgp/peers/"+args[0])
				if err != nil {
					return err
				}
				if res.Deleted == 0 {
					return fmt.Errorf("BGP peer %q: not found", args[0])
				}
				fmt.Fprintf(a.out, "BGPPeer %s deleted\n", args[0])
				return nil
			})
		},
	}
}
