package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/conf"
)

func init() {
	register("", func(*app) *cobra.Command {
		return newGroup("reservation", "IP reservations: addresses IPAM never hands out automatically")
	})
	register("reservation", newReservationApplyCmd)
	register("reservation", newReservationGetCmd)
	register("reservation", newReservationDeleteCmd)
}

func newReservationApplyCmd(a *app) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "create or update the IPReservations in a YAML file",
		Long: "Create or update IPReservations (brindle's, or Calico's crd.projectcalico.org/v1 and\n" +
			"projectcalico.org/v3 forms). Reserved addresses are never handed out automatically and\n" +
			"are refused when a pod asks for them; addresses allocated already keep their holders\n" +
			"(a warning names each).",
		Example: "  brindlectl reservation apply -f reservations.yaml",
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if file == "" {
				return usagef(c, "-f FILE is required (- for stdin)")
			}
			data, err := a.readInput(file)
			if err != nil {
				return err
			}
			rs, err := conf.ParseIPReservations(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			return a.withEnv(func(e *env) error {
				for _, r := range rs {
					created, inUse, err := e.alloc.ApplyReservation(e.ctx, r)
					if err != nil {
						return err
					}
					verb := "configured"
					if created {
						verb = "created"
					}
					fmt.Fprintf(a.out, "ipreservation/%s %s\n", r.Metadata.Name, verb)
					for _, u := range inUse {
						who := "handle " + u.Handle
						if p := u.Attrs["pod"]; p != "" {
							who = "pod " + u.Attrs["namespace"] + "/" + p
						}
						fmt.Fprintf(a.errOut, "warning: %s is reserved by %s but allocated to %s; it keeps it until released\n", u.IP, r.Metadata.Name, who)
					}
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "filename", "f", "", "YAML file of IPReservation documents, or - for stdin")
	return c
}

func newReservationGetCmd(a *app) *cobra.Command {
	var o outputFlag
	c := &cobra.Command{
		Use:   "get [NAME]",
		Short: "list the IP reservations",
		Args:  maxArgs(1, "one reservation NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return a.withEnv(func(e *env) error {
				rs, err := e.alloc.ListReservations(e.ctx)
				if err != nil {
					return err
				}
				if len(args) > 0 {
					var sel []conf.IPReservation
					for _, r := range rs {
						if r.Metadata.Name == args[0] {
							sel = append(sel, r)
						}
					}
					if len(sel) == 0 {
						return fmt.Errorf("ipreservation %q: not found", args[0])
					}
					rs = sel
				}
				if o.format == "yaml" {
					// Documents that `reservation apply -f` takes back unchanged.
					for i, r := range rs {
						b, err := yaml.Marshal(r)
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
				return o.print(a.out, rs, func(t *table) {
					t.header("NAME", "RESERVED")
					for _, r := range rs {
						t.row(r.Metadata.Name, strings.Join(r.Spec.ReservedCIDRs, ","))
					}
				})
			})
		},
	}
	o.add(c, "table")
	return c
}

func newReservationDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "delete a reservation; its addresses become assignable again",
		Args:  exactArgs(1, "one reservation NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return a.withEnv(func(e *env) error {
				if err := e.alloc.DeleteReservation(e.ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "ipreservation/%s deleted\n", args[0])
				return nil
			})
		},
	}
}
