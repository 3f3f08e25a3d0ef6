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
		why  string
	}{
		{"written by brindled", write("vxlan", "1450\n"), 1450, ""},
		{"no newline", write("plain", "1480"), 1480, ""},
		{"missing", filepath.Join(dir, "nope"), 0, "missing"},
		{"not a number", write("junk", "mtu?\n"), 0, `"mtu?" is not a number`},
		{"out of range", write("small", "20\n"), 0, "20 is out of range (68-65535)"},
		{"loopback's", write("lo", "65536\n"), 0, "65536 is out of range (68-65535)"},
		{"unset", "", 0, "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, why := readMTUFile(tc.path); got != tc.want || why != tc.why {
				t.Errorf("readMTUFile = %d, %q; want %d, %q", got, why, tc.want, tc.why)
			}
		})
	}
}
