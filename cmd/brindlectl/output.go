package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// outputFlag is -o/--output: table (the default of most commands), wide
// (the table with more columns), json or yaml (the same data as the
// table, whole, in the field names of the JSON API).
type outputFlag struct {
	format  string
	allowed []string
	cmd     string
}

// add registers -o on c with a default; allowed defaults to every format.
func (o *outputFlag) add(c *cobra.Command, def string, allowed ...string) {
	if len(allowed) == 0 {
		allowed = []string{"table", "wide", "json", "yaml"}
	}
	o.allowed = allowed
	o.cmd = c.CommandPath()
	c.Flags().StringVarP(&o.format, "output", "o", def, "output format: "+strings.Join(allowed, ", "))
	c.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return allowed, cobra.ShellCompDirectiveNoFileComp
	})
	// Checked before the command runs, so a bad -o never half-runs it.
	prev := c.PreRunE
	c.PreRunE = func(c *cobra.Command, args []string) error {
		if err := o.check(c); err != nil {
			return err
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

func (o *outputFlag) check(c *cobra.Command) error {
	if !slices.Contains(o.allowed, o.format) {
		return usagef(c, "-o %q: want %s", o.format, strings.Join(o.allowed, ", "))
	}
	return nil
}

// structured reports whether the format is json or yaml.
func (o *outputFlag) structured() bool { return o.format == "json" || o.format == "yaml" }

// wide reports whether the wide table is asked for.
func (o *outputFlag) wide() bool { return o.format == "wide" }

// print writes data as json or yaml, or calls table for table and wide.
func (o *outputFlag) print(w io.Writer, data any, table func(t *table)) error {
	switch o.format {
	case "json":
		return writeJSON(w, data)
	case "yaml":
		return writeYAML(w, data)
	}
	t := newTable(w, o.wide())
	table(t)
	return t.flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeYAML writes v through its JSON form, so field names are the same in
// both.
func writeYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// table is a tab-aligned table whose wide columns show only with -o wide.
type table struct {
	tw   *tabwriter.Writer
	Wide bool
	// wideFrom is the index from which header and row cells are wide-only
	// (-1: none).
	wideFrom int
}

func newTable(w io.Writer, wide bool) *table {
	return &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0), Wide: wide, wideFrom: -1}
}

// header starts a table; columns after a "|" entry are wide-only.
func (t *table) header(cols ...string) {
	t.wideFrom = slices.Index(cols, "|")
	if t.wideFrom >= 0 {
		cols = slices.Delete(slices.Clone(cols), t.wideFrom, t.wideFrom+1)
	}
	t.row(cols...)
}

// row writes one row; cells beyond the narrow columns are dropped unless wide.
func (t *table) row(cells ...string) {
	if !t.Wide && t.wideFrom >= 0 && len(cells) > t.wideFrom {
		cells = cells[:t.wideFrom]
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// line writes free text (a title, a blank line) inside the table's flow.
func (t *table) line(format string, args ...any) {
	fmt.Fprintf(t.tw, format+"\n", args...)
}

func (t *table) flush() error { return t.tw.Flush() }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
