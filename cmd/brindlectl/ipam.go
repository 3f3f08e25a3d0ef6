package main

import (
	"flag"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
)

func outputFlag(fs *flag.FlagSet) *string { return fs.String("o", "table", "") }

func checkOutput(cmd, o string) error {
	if o != "table" && o != "json" {
		return usageError{fmt.Sprintf("%s: -o %q: want table or json", cmd, o)}
	}
	return nil
}

func (e *env) ipamShow(args []string) error {
	fs := flag.NewFlagSet("ipam show", flag.ContinueOnError)
	ipFlag := fs.String("ip", "", "")
	output := outputFlag(fs)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkOutput("ipam show", *output); err != nil {
		return err
	}
	if *ipFlag != "" {
		ip, err := netip.ParseAddr(*ipFlag)
		if err != nil {
			return fmt.Errorf("--ip %q: %w", *ipFlag, err)
		}
		info, err := e.alloc.ShowIP(e.ctx, ip)
		if err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(e.out, info)
		}
		tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "IP\t%s\nPOOL\t%s\nBLOCK\t%s\nAFFINITY\t%s\nALLOCATED\t%v\n", info.IP, info.Pool, info.Block, info.Affinity, info.Allocated)
		if info.Allocated {
			fmt.Fprintf(tw, "HANDLE\t%s\nSEQ\t%d\n", info.Handle, info.Seq)
			var keys []string
			for k := range info.Attrs {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s\n", strings.ToUpper(k), info.Attrs[k])
			}
		}
		return tw.Flush()
	}
	pools, blocks, err := e.alloc.Usage(e.ctx)
	if err != nil {
		return err
	}
	if *output == "json" {
		return writeJSON(e.out, map[string]any{"pools": pools, "blocks": blocks})
	}
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tCIDR\tSIZE\tBLOCKS\tIN BLOCKS\tUSED\tDISABLED")
	for _, p := range pools {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%v\n", p.Name, p.CIDR, p.Size, p.Blocks, p.InBlocks, p.Used, p.Disabled)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "BLOCK\tPOOL\tAFFINITY\tSTATE\tUSED\tFREE")
	for _, b := range blocks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", b.CIDR, b.Pool, b.Affinity, b.State, b.Used, b.Free)
	}
	return tw.Flush()
}

func (e *env) ipamCheck(args []string) error {
	fs := flag.NewFlagSet("ipam check", flag.ContinueOnError)
	output := outputFlag(fs)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkOutput("ipam check", *output); err != nil {
		return err
	}
	r, err := e.alloc.Check(e.ctx)
	if err != nil {
		return err
	}
	if *output == "json" {
		return writeJSON(e.out, r)
	}
	tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "LEAKED ALLOCATIONS (%d)\n", len(r.Leaks))
	if len(r.Leaks) > 0 {
		fmt.Fprintln(tw, "IP\tSEQ\tHANDLE\tNODE\tREASON")
		for _, l := range r.Leaks {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", l.IP, l.Seq, l.Handle, l.Node, l.Reason)
		}
	}
	fmt.Fprintf(tw, "\nENDPOINTS WITHOUT ALLOCATION (%d)\n", len(r.Orphans))
	if len(r.Orphans) > 0 {
		fmt.Fprintln(tw, "NODE\tID\tADDRESSES")
		for _, o := range r.Orphans {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", o.Node, o.ID, strings.Join(o.Addresses, ","))
		}
	}
	fmt.Fprintf(tw, "\nBLOCKS OF GONE NODES (%d)\n", len(r.StaleBlocks))
	if r.NoNodes {
		fmt.Fprintln(tw, "(no node records exist at all, so none is called gone; is brindled running?)")
	}
	if len(r.StaleBlocks) > 0 {
		fmt.Fprintln(tw, "BLOCK\tNODE\tUSED")
		for _, s := range r.StaleBlocks {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", s.CIDR, s.Node, s.Used)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !r.Clean() {
		fmt.Fprintln(e.out, "\nrun `brindlectl ipam release` to release these")
	}
	return nil
}

func (e *env) ipamRelease(args []string) error {
	fs := flag.NewFlagSet("ipam release", flag.ContinueOnError)
	dry := fs.Bool("dry-run", false, "")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	r, err := e.alloc.Check(e.ctx)
	if err != nil {
		return err
	}
	if r.Clean() {
		fmt.Fprintln(e.out, "nothing to release")
		return nil
	}
	if *dry {
		return e.ipamCheck([]string{})
	}
	done, err := e.alloc.Repair(e.ctx, r)
	for _, d := range done {
		fmt.Fprintln(e.out, d)
	}
	return err
}

func (e *env) ipamConfig(args []string) error {
	fs := flag.NewFlagSet("ipam config", flag.ContinueOnError)
	strict := fs.String("strict-affinity", "", "")
	maxBlocks := fs.Int("max-blocks-per-host", -1, "")
	output := outputFlag(fs)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkOutput("ipam config", *output); err != nil {
		return err
	}
	c, err := e.alloc.GetConfig(e.ctx)
	if err != nil {
		return err
	}
	changed := false
	switch *strict {
	case "":
	case "true", "false":
		c.StrictAffinity, changed = *strict == "true", true
	default:
		return usageError{fmt.Sprintf("--strict-affinity %q: want true or false", *strict)}
	}
	if *maxBlocks >= 0 {
		c.MaxBlocksPerHost, changed = *maxBlocks, true
	}
	if changed {
		if err := e.alloc.SetConfig(e.ctx, c); err != nil {
			return err
		}
	}
	if *output == "json" {
		return writeJSON(e.out, c)
	}
	fmt.Fprintf(e.out, "strictAffinity: %v\nmaxBlocksPerHost: %d\n", c.StrictAffinity, c.MaxBlocksPerHost)
	return nil
}
