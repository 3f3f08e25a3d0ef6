// Package benchreport is how the benchmarks (test/bench*) present what they
// measured: tables and targets, printed for people as text, and written as
// markdown when a report file is named (-report, or BRINDLE_BENCH_REPORT),
// so that `make bench` can put every benchmark into one report
// (docs/benchmarks.md; cmd/compose adds the machine and the date).
package benchreport

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/brindle-net/brindle/internal/testenv"
)

// Table is one table of a section.
type Table struct {
	Title  string
	Note   string // under the title: what is measured and how
	Header []string
	Rows   [][]string
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Target is a figure a benchmark is held to, and whether the run met it.
type Target struct {
	Name string // "ADD p50, concurrency 1, vs ptp + host-local"
	Want string // "≤ 1.10x"
	Got  string // "1.04x"
	Met  bool
}

// Section is what one benchmark program reports.
type Section struct {
	Name    string // "bench-cni"
	Command string // "make bench-cni"
	Intro   string
	Tables  []*Table
	Targets []Target
	Notes   []string
	// Output is a benchmark's own text output, for one that does not
	// report tables (shown as printed).
	Output string
}

// Table adds a table to the section and returns it.
func (s *Section) Table(title, note string, header ...string) *Table {
	t := &Table{Title: title, Note: note, Header: header}
	s.Tables = append(s.Tables, t)
	return t
}

// Target records a target.
func (s *Section) Target(name, want, got string, met bool) {
	s.Targets = append(s.Targets, Target{Name: name, Want: want, Got: got, Met: met})
}

// Note adds a line under the section.
func (s *Section) Note(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

// CleanUpOnInterrupt makes SIGINT and SIGTERM remove the namespaces the
// benchmark made before it exits, as its own cleanup would have: a
// benchmark stopped half way leaves nothing behind (its processes die with
// it, by their parent-death signal).
func CleanUpOnInterrupt() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-ch
		fmt.Fprintf(os.Stderr, "\n%s: %v: removing what the benchmark made\n", filepath.Base(os.Args[0]), s)
		testenv.RemoveOwn()
		os.Exit(130)
	}()
}

var reportFlag = flag.String("report", os.Getenv("BRINDLE_BENCH_REPORT"), "also write this section as markdown to this file (make bench does)")

// Emit prints s as text to stdout and, when a report file is named,
// writes it there as markdown, and as JSON to the same name + ".json".
func (s *Section) Emit() error {
	s.Text(os.Stdout)
	if *reportFlag == "" {
		return nil
	}
	f, err := os.Create(*reportFlag)
	if err != nil {
		return err
	}
	s.Markdown(f)
	if err := f.Close(); err != nil {
		return err
	}
	// The section as data too, for the composed report.
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(*reportFlag+".json", b, 0o644)
}

// Text writes s for a terminal.
func (s *Section) Text(w io.Writer) {
	fmt.Fprintf(w, "\n== %s (%s)\n", s.Name, s.Command)
	if s.Intro != "" {
		fmt.Fprintf(w, "%s\n", s.Intro)
	}
	for _, t := range s.Tables {
		fmt.Fprintf(w, "\n%s\n", t.Title)
		if t.Note != "" {
			fmt.Fprintf(w, "%s\n", t.Note)
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(t.Header, "\t"))
		for _, r := range t.Rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		tw.Flush()
	}
	if len(s.Targets) > 0 {
		fmt.Fprintln(w, "\nTargets")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range s.Targets {
			fmt.Fprintf(tw, "%s\t%s\t%s\twant %s\n", metWord(t.Met), t.Name, t.Got, t.Want)
		}
		tw.Flush()
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "NOT MET"
}

// Markdown writes s as a section of the report.
func (s *Section) Markdown(w io.Writer) {
	fmt.Fprintf(w, "## %s\n\n`%s`\n\n", s.Name, s.Command)
	if s.Intro != "" {
		fmt.Fprintf(w, "%s\n\n", s.Intro)
	}
	for _, t := range s.Tables {
		fmt.Fprintf(w, "### %s\n\n", t.Title)
		if t.Note != "" {
			fmt.Fprintf(w, "%s\n\n", t.Note)
		}
		fmt.Fprintf(w, "| %s |\n|", strings.Join(t.Header, " | "))
		for range t.Header {
			fmt.Fprint(w, "---|")
		}
		fmt.Fprintln(w)
		for _, r := range t.Rows {
			cells := make([]string, len(r))
			for i, c := range r {
				cells[i] = strings.ReplaceAll(c, "|", "\\|")
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
		fmt.Fprintln(w)
	}
	if len(s.Targets) > 0 {
		fmt.Fprintf(w, "### Targets\n\n| target | want | measured | |\n|---|---|---|---|\n")
		for _, t := range s.Targets {
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, metWord(t.Met))
		}
		fmt.Fprintln(w)
	}
	if s.Output != "" {
		fmt.Fprintf(w, "```\n%s\n```\n\n", strings.TrimRight(s.Output, "\n"))
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if len(s.Notes) > 0 {
		fmt.Fprintln(w)
	}
}
