package main

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/brindle-net/brindle/ipam"
)

func init() {
	register("", func(*app) *cobra.Command {
		return newGroup("ipam", "IPAM inspection and repair: show, check, release, config")
	})
	register("ipam", newIPAMShowCmd)
	register("ipam", newIPAMCheckCmd)
	register("ipam", newIPAMReleaseCmd)
	register("ipam", newIPAMConfigCmd)
}

func newIPAMShowCmd(a *app) *cobra.Command {
	var o outputFlag
	var ip string
	c := &cobra.Command{
		Use:   "show [--ip ADDR]",
		Short: "pools and blocks with their use, or who holds one address",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var addr netip.Addr
			if ip != "" {
				var err error
				if addr, err = netip.ParseAddr(ip); err != nil {
					return usagef(c, "--ip %q: not an IP address", ip)
				}
			}
			return a.withEnv(func(e *env) error {
				if addr.IsValid() {
					info, err := e.alloc.ShowIP(e.ctx, addr)
					if err != nil {
						return err
					}
					return o.print(a.out, info, func(t *table) { ipInfoTable(t, info) })
				}
				pools, blocks, err := e.alloc.Usage(e.ctx)
				if err != nil {
					return err
				}
				data := map[string]any{"pools": pools, "blocks": blocks}
				return o.print(a.out, data, func(t *table) {
					t.header("POOL", "CIDR", "SIZE", "BLOCKS", "IN BLOCKS", "USED", "DISABLED", "|", "FREE IN BLOCKS")
					for _, p := range pools {
						t.row(p.Name, p.CIDR, fmt.Sprint(p.Size), strconv.Itoa(p.Blocks), strconv.Itoa(p.InBlocks),
							strconv.Itoa(p.Used), strconv.FormatBool(p.Disabled), strconv.Itoa(p.InBlocks-p.Used))
					}
					t.line("")
					t.header("BLOCK", "POOL", "AFFINITY", "STATE", "USED", "FREE")
					for _, b := range blocks {
						t.row(b.CIDR, b.Pool, b.Affinity, b.State, strconv.Itoa(b.Used), strconv.Itoa(b.Free))
					}
				})
			})
		},
	}
	c.Flags().StringVar(&ip, "ip", "", "show who holds this address: pool, block, node, handle, pod")
	o.add(c, "table")
	return c
}

func ipInfoTable(t *table, info ipam.IPInfo) {
	t.row("IP", info.IP)
	t.row("POOL", info.Pool)
	t.row("BLOCK", info.Block)
	t.row("AFFINITY", info.Affinity)
	t.row("ALLOCATED", strconv.FormatBool(info.Allocated))
	if info.Allocated {
		t.row("HANDLE", info.Handle)
		t.row("SEQ", strconv.FormatUint(info.Seq, 10))
		keys := make([]string, 0, len(info.Attrs))
		for k := range info.Attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.row(strings.ToUpper(k), info.Attrs[k])
		}
	}
}

func newIPAMCheckCmd(a *app) *cobra.Command {
	var o outputFlag
	c := &cobra.Command{
		Use:   "check",
		Short: "find leaked allocations, endpoints without allocation, blocks of gone nodes",
		Long: "Find leaked allocations, endpoints without allocation and blocks of nodes that are gone,\n" +
			"in one consistent read of etcd. Nothing is changed: `ipam release` releases what check finds.",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return a.withEnv(func(e *env) error {
				r, err := a.check(e)
				if err != nil {
					return err
				}
				return a.printCheck(&o, r)
			})
		},
	}
	o.add(c, "table")
	return c
}

// check runs the IPAM check with progress on a terminal.
func (a *app) check(e *env) (ipam.CheckReport, error) {
	start := time.Now()
	a.progress("checking IPAM records in etcd...")
	r, err := e.alloc.Check(e.ctx)
	a.progressDone()
	if err == nil {
		a.progress("checked in %s\n", time.Since(start).Round(time.Millisecond))
	}
	return r, err
}

func (a *app) printCheck(o *outputFlag, r ipam.CheckReport) error {
	err := o.print(a.out, r, func(t *table) {
		t.line("LEAKED ALLOCATIONS (%d)", len(r.Leaks))
		if len(r.Leaks) > 0 {
			t.header("IP", "SEQ", "HANDLE", "NODE", "REASON")
			for _, l := range r.Leaks {
				t.row(l.IP, strconv.FormatUint(l.Seq, 10), l.Handle, l.Node, l.Reason)
			}
		}
		t.line("\nENDPOINTS WITHOUT ALLOCATION (%d)", len(r.Orphans))
		if len(r.Orphans) > 0 {
			t.header("NODE", "ID", "ADDRESSES")
			for _, o := range r.Orphans {
				t.row(o.Node, o.ID, strings.Join(o.Addresses, ","))
			}
		}
		t.line("\nBLOCKS OF GONE NODES (%d)", len(r.StaleBlocks))
		if r.NoNodes {
			t.line("(no node records exist at all, so none is called gone; is brindled running?)")
		}
		if len(r.StaleBlocks) > 0 {
			t.header("BLOCK", "NODE", "USED")
			for _, s := range r.StaleBlocks {
				t.row(s.CIDR, s.Node, strconv.Itoa(s.Used))
			}
		}
		if len(r.Unreadable) > 0 {
			t.line("\nUNREADABLE RECORDS (%d): not written by brindle; look at them with etcdctl", len(r.Unreadable))
			for _, u := range r.Unreadable {
				t.line("%s", u)
			}
		}
	})
	if err == nil && !o.structured() && !r.Clean() {
		fmt.Fprintln(a.out, "\nrun `brindlectl ipam release` to release these")
	}
	return err
}

func newIPAMReleaseCmd(a *app) *cobra.Command {
	var dry bool
	var gone []string
	c := &cobra.Command{
		Use:   "release [--dry-run] [--gone-node NODE]...",
		Short: "release what `ipam check` finds, never an address in use",
		Long: "Release what `ipam check` finds. An address borrowed by another node's pod, or whose pod's\n" +
			"endpoint record exists, is kept, and the line says why; --gone-node NODE says a node is gone\n" +
			"for good with its pods, so its endpoint records no longer keep its addresses.",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return a.withEnv(func(e *env) error {
				r, err := a.check(e)
				if err != nil {
					return err
				}
				if r.Clean() {
					fmt.Fprintln(a.out, "nothing to release")
					return nil
				}
				done, err := e.alloc.Repair(e.ctx, r, ipam.RepairOptions{DryRun: dry, GoneNodes: gone})
				for _, d := range done {
					fmt.Fprintln(a.out, d)
				}
				return err
			})
		},
	}
	c.Flags().BoolVar(&dry, "dry-run", false, "print what would be released and kept, change nothing")
	c.Flags().StringArrayVar(&gone, "gone-node", nil, "a node that is gone for good with its pods (repeatable)")
	return c
}

func newIPAMConfigCmd(a *app) *cobra.Command {
	var o outputFlag
	var strict string
	var maxBlocks int
	var serviceCIDRs []string
	c := &cobra.Command{
		Use:   "config [--strict-affinity=BOOL] [--max-blocks-per-host=N] [--service-cidrs=CIDRS]",
		Short: "show or change the IPAM settings (ipam/config)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			switch strict {
			case "", "true", "false":
			default:
				return usagef(c, "--strict-affinity %q: want true or false", strict)
			}
			if c.Flags().Changed("max-blocks-per-host") && maxBlocks < 0 {
				return usagef(c, "--max-blocks-per-host %d: want 0 (no limit) or more", maxBlocks)
			}
			return a.withEnv(func(e *env) error {
				cfg, err := e.alloc.GetConfig(e.ctx)
				if err != nil {
					return err
				}
				changed := false
				if strict != "" {
					cfg.StrictAffinity, changed = strict == "true", true
				}
				if c.Flags().Changed("max-blocks-per-host") {
					cfg.MaxBlocksPerHost, changed = maxBlocks, true
				}
				if c.Flags().Changed("service-cidrs") {
					cfg.ServiceCIDRs, changed = serviceCIDRs, true
				}
				if changed {
					if err := e.alloc.SetConfig(e.ctx, cfg); err != nil {
						return err
					}
				}
				if !o.structured() {
					fmt.Fprintf(a.out, "strictAffinity: %v\nmaxBlocksPerHost: %d\nserviceCIDRs: %s\n", cfg.StrictAffinity, cfg.MaxBlocksPerHost, strings.Join(cfg.ServiceCIDRs, ","))
					return nil
				}
				return o.print(a.out, cfg, nil)
			})
		},
	}
	c.Flags().StringVar(&strict, "strict-affinity", "", "true: never borrow addresses from other nodes' blocks")
	c.Flags().IntVar(&maxBlocks, "max-blocks-per-host", 0, "blocks one node may claim; 0 is no limit")
	c.Flags().StringSliceVar(&serviceCIDRs, "service-cidrs", nil, "the cluster's Service CIDRs, comma-separated; no pool may overlap them (empty clears)")
	o.add(c, "table", "table", "json", "yaml")
	return c
}
