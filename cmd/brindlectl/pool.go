package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/conf"
)

func init() {
	register("", func(*app) *cobra.Command { return newGroup("pool", "IP pools: apply, get, delete") })
	register("pool", newPoolApplyCmd)
	register("pool", newPoolGetCmd)
	register("pool", newPoolDeleteCmd)
}

// readInput reads a file named by -f, or stdin for "-".
func (a *app) readInput(file string) ([]byte, error) {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(a.in)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return data, nil
}

func newPoolApplyCmd(a *app) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "create or update the IPPools in a YAML file",
		Long: "Create or update the IPPools in a YAML file (several documents separated by ---).\n" +
			"The file is checked against itself and the pools in etcd before anything is written.",
		Example: "  brindlectl pool apply -f pools.yaml\n  brindlectl pool get default -o yaml | brindlectl pool apply -f -",
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if file == "" {
				return usagef(c, "-f FILE is required (- for stdin)")
			}
			data, err := a.readInput(file)
			if err != nil {
				return err
			}
			pools, err := conf.ParseIPPools(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			if err := conf.ValidatePools(pools); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			return a.withEnv(func(e *env) error {
				for _, p := range pools {
					created, err := e.alloc.ApplyPool(e.ctx, p)
					if err != nil {
						return err
					}
					verb := "configured"
					if created {
						verb = "created"
					}
					fmt.Fprintf(a.out, "ippool/%s %s\n", p.Metadata.Name, verb)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "filename", "f", "", "YAML file of IPPool documents, or - for stdin")
	return c
}

func newPoolGetCmd(a *app) *cobra.Command {
	var o outputFlag
	c := &cobra.Command{
		Use:               "get [NAME]",
		Short:             "list the IP pools, with every default written out",
		Args:              maxArgs(1, "one pool NAME"),
		ValidArgsFunction: a.completePools,
		RunE: func(c *cobra.Command, args []string) error {
			return a.withEnv(func(e *env) error {
				pools, err := e.alloc.ListPools(e.ctx)
				if err != nil {
					return err
				}
				if len(args) > 0 {
					var sel []conf.IPPool
					for _, p := range pools {
						if p.Metadata.Name == args[0] {
							sel = append(sel, p)
						}
					}
					if len(sel) == 0 {
						return fmt.Errorf("pool %q: not found", args[0])
					}
					pools = sel
				}
				if o.format == "yaml" {
					// Documents that `pool apply -f` takes back unchanged.
					for i, p := range pools {
						b, err := yaml.Marshal(p)
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
				return o.print(a.out, pools, func(t *table) {
					t.header("NAME", "CIDR", "BLOCKSIZE", "IPIP", "VXLAN", "NAT", "SELECTOR", "DISABLED", "|", "API VERSION")
					for _, p := range pools {
						s := p.Spec
						t.row(p.Metadata.Name, s.CIDR, strconv.Itoa(s.BlockSize), string(s.IPIPMode), string(s.VXLANMode),
							strconv.FormatBool(s.NATOutgoing), s.NodeSelector, strconv.FormatBool(s.Disabled), p.APIVersion)
					}
				})
			})
		},
	}
	o.add(c, "table")
	return c
}

func newPoolDeleteCmd(a *app) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:               "delete NAME",
		Short:             "delete a pool; refused while addresses are allocated unless --force",
		Args:              exactArgs(1, "one pool NAME"),
		ValidArgsFunction: a.completePools,
		RunE: func(c *cobra.Command, args []string) error {
			return a.withEnv(func(e *env) error {
				if err := e.alloc.DeletePool(e.ctx, args[0], force); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "ippool/%s deleted\n", args[0])
				return nil
			})
		},
	}
	c.Flags().BoolVar(&force, "force", false, "delete even while addresses of the pool are allocated")
	return c
}

// completePools completes pool names from etcd (quietly nothing when etcd
// cannot be reached).
func (a *app) completePools(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	var names []string
	if len(args) == 0 {
		a.withEnv(func(e *env) error {
			pools, err := e.alloc.ListPools(e.ctx)
			for _, p := range pools {
				names = append(names, p.Metadata.Name)
			}
			return err
		})
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
