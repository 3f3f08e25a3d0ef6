package benchreport

import (
	"bytes"
	"strings"
	"testing"
)

func TestSectionMarkdownAndText(t *testing.T) {
	s := &Section{Name: "bench-x", Command: "make bench-x", Intro: "what it measures"}
	tab := s.Table("Latency", "how", "what", "p50")
	tab.Add("a|b", "1.0 ms")
	s.Target("p50 of a", "< 2 ms", "1.0 ms", true)
	s.Target("p50 of b", "< 1 ms", "3.0 ms", false)
	s.Note("left %d", 0)
	var md, txt bytes.Buffer
	s.Markdown(&md)
	s.Text(&txt)
	for _, want := range []string{"## bench-x", "`make bench-x`", "### Latency", "| what | p50 |", "| a\\|b | 1.0 ms |",
		"| p50 of a | < 2 ms | 1.0 ms | met |", "| p50 of b | < 1 ms | 3.0 ms | NOT MET |", "- left 0"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	for _, want := range []string{"== bench-x (make bench-x)", "NOT MET  p50 of b", "met      p50 of a"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, txt.String())
		}
	}
}
