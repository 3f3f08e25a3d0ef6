// Command e2esum reads the JSON report of a ginkgo run of e2e.test and
// prints what ran: one line per failed and skipped spec, then the summary
// line "N passed, N failed, N skipped". Specs the run's focus and label
// filter did not select are counted apart ("not selected"), not as skipped.
// Exit status 1 when any spec failed or none ran.
//
//	e2esum report.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/onsi/ginkgo/v2/types"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: e2esum REPORT.json")
		os.Exit(2)
	}
	b, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2esum:", err)
		os.Exit(2)
	}
	var reports []types.Report
	if err := json.Unmarshal(b, &reports); err != nil {
		fmt.Fprintf(os.Stderr, "e2esum: %s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
	var passed, failed, skipped, unselected int
	var failures, skips []string
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if s.LeafNodeType != types.NodeTypeIt {
				if s.State.Is(types.SpecStateFailureStates) {
					failed++
					failures = append(failures, fmt.Sprintf("FAILED %s %s: %s", s.LeafNodeType, s.FullText(), firstLine(s.FailureMessage())))
				}
				continue
			}
			switch {
			case s.State == types.SpecStatePassed:
				passed++
			case s.State.Is(types.SpecStateFailureStates):
				failed++
				failures = append(failures, fmt.Sprintf("FAILED %s: %s", s.FullText(), firstLine(s.FailureMessage())))
			case s.State == types.SpecStateSkipped && s.FailureMessage() != "":
				// Skipped by the test itself (e2eskipper), with its reason.
				skipped++
				skips = append(skips, fmt.Sprintf("SKIPPED %s: %s", s.FullText(), firstLine(s.FailureMessage())))
			default:
				unselected++
			}
		}
	}
	sort.Strings(failures)
	sort.Strings(skips)
	for _, l := range append(skips, failures...) {
		fmt.Println(l)
	}
	fmt.Printf("%d passed, %d failed, %d skipped (%d specs not selected)\n", passed, failed, skipped, unselected)
	if failed > 0 || passed == 0 {
		os.Exit(1)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
