package routed

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadMTUFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		path string
		want int
		ok   bool
	}{
		{"written by brindled", write("vxlan", "1450\n"), 1450, true},
		{"no newline", write("plain", "1480"), 1480, true},
		{"missing", filepath.Join(dir, "nope"), 0, false},
		{"not a number", write("junk", "mtu?\n"), 0, false},
		{"out of range", write("small", "20\n"), 0, false},
		{"unset", "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, ok := readMTUFile(tc.path); got != tc.want || ok != tc.ok {
				t.Errorf("readMTUFile = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
