package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
)

func init() { register("node", newNodeRRCmd) }

// newNodeRRCmd makes a node a route reflector (or a plain node again) by
// its record's routeReflectorClusterID. brindled keeps a stored value it was
// not given a flag for, so the setting survives restarts, and every node
// re-peers at once (docs/bgp.md, "Route reflectors").
func newNodeRRCmd(a *app) *cobra.Command {
	var clusterID string
	var clear bool
	c := &cobra.Command{
		Use:               "route-reflector NAME (--cluster-id ID | --clear)",
		Short:             "make a node a route reflector with a cluster ID (used when the mesh is off), or a plain node again",
		Args:              exactArgs(1, "one node NAME"),
		ValidArgsFunction: a.completeNodes,
		RunE: func(c *cobra.Command, args []string) error {
			if (clusterID == "") == !clear {
				return errors.New("give --cluster-id ID or --clear")
			}
			return a.withEnv(func(e *env) error {
				key := ipam.Prefix + "nodes/" + args[0]
				res, err := e.cli.Get(e.ctx, key)
				if err != nil {
					return err
				}
				if len(res.Kvs) == 0 {
					return fmt.Errorf("node %q: not registered", args[0])
				}
				n, err := conf.UnmarshalNode(res.Kvs[0].Value)
				if err != nil {
					return err
				}
				n.RouteReflectorClusterID = clusterID
				if err := n.Validate(); err != nil {
					return err
				}
				if n.RRClusterID() != clusterID {
					return fmt.Errorf("node %q: its label %s=%s makes it a reflector; remove the label (brindled --labels) instead",
						n.Name, conf.RouteReflectorLabel, n.Labels[conf.RouteReflectorLabel])
				}
				b, _ := json.Marshal(n)
				tr, err := e.cli.Txn(e.ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", res.Kvs[0].ModRevision)).
					Then(clientv3.OpPut(key, string(b))).Commit()
				if err != nil {
					return err
				}
				if !tr.Succeeded {
					return fmt.Errorf("node %q changed while it was being updated; run the command again", n.Name)
				}
				if clear {
					fmt.Fprintf(a.out, "node %s: not a route reflector\n", n.Name)
				} else {
					fmt.Fprintf(a.out, "node %s: route reflector, cluster ID %s\n", n.Name, clusterID)
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&clusterID, "cluster-id", "", "route-reflector cluster ID, a dotted quad (e.g. 224.0.0.1); reflectors that back each other up share one")
	c.Flags().BoolVar(&clear, "clear", false, "make the node a plain node again")
	return c
}
