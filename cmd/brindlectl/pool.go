package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/conf"
)

func (e *env) poolApply(args []string) error {
	fs := flag.NewFlagSet("pool apply", flag.ContinueOnError)
	file := fs.String("f", "", "")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return usageError{"pool apply: -f FILE is required (- for stdin)"}
	}
	var data []byte
	var err error
	if *file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", *file, err)
	}
	pools, err := conf.ParseIPPools(data)
	if err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	// Check the file against itself before anything is written.
	if err := conf.ValidatePools(pools); err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	for _, p := range pools {
		created, err := e.alloc.ApplyPool(e.ctx, p)
		if err != nil {
			return err
		}
		verb := "configured"
		if created {
			verb = "created"
		}
		fmt.Fprintf(e.out, "ippool/%s %s\n", p.Metadata.Name, verb)
	}
	return nil
}

func (e *env) poolGet(args []string) error {
	fs := flag.NewFlagSet("pool get", flag.ContinueOnError)
	output := fs.String("o", "table", "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	pools, err := e.alloc.ListPools(e.ctx)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		var sel []conf.IPPool
		for _, p := range pools {
			if p.Metadata.Name == pos[0] {
				sel = append(sel, p)
			}
		}
		if len(sel) == 0 {
			return fmt.Errorf("pool %q: not found", pos[0])
		}
		pools = sel
	}
	switch *output {
	case "yaml":
		for i, p := range pools {
			b, err := yaml.Marshal(p)
			if err != nil {
				return err
			}
			if i > 0 {
				fmt.Fprintln(e.out, "---")
			}
			e.out.Write(b)
		}
		return nil
	case "json":
		return writeJSON(e.out, pools)
	case "table":
		tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCIDR\tBLOCKSIZE\tIPIP\tVXLAN\tNAT\tSELECTOR\tDISABLED")
		for _, p := range pools {
			s := p.Spec
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%v\t%s\t%v\n", p.Metadata.Name, s.CIDR, s.BlockSize, s.IPIPMode, s.VXLANMode, s.NATOutgoing, s.NodeSelector, s.Disabled)
		}
		return tw.Flush()
	}
	return usageError{fmt.Sprintf("pool get: -o %q: want yaml, json or table", *output)}
}

func (e *env) poolDelete(args []string) error {
	fs := flag.NewFlagSet("pool delete", flag.ContinueOnError)
	force := fs.Bool("force", false, "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"pool delete: exactly one pool name"}
	}
	if err := e.alloc.DeletePool(e.ctx, pos[0], *force); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "ippool/%s deleted\n", pos[0])
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
