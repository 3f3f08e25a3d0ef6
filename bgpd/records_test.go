package bgpd

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestRecordsKeepLastValid(t *testing.T) {
	var logb bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logb, nil))
	r := NewRecords()
	valid := func(b []byte) error {
		if !strings.HasPrefix(string(b), "ok") {
			return errors.New("not ok")
		}
		return nil
	}
	if got := r.Pick(log, "k", []byte("ok1"), valid); string(got) != "ok1" {
		t.Fatalf("valid value: %q", got)
	}
	for range 3 {
		if got := r.Pick(log, "k", []byte("junk"), valid); string(got) != "ok1" {
			t.Fatalf("invalid value: got %q, want the last valid ok1", got)
		}
	}
	if n := strings.Count(logb.String(), "keeping its last valid value"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, logb.String())
	}
	if got := r.Pick(log, "never", []byte("junk"), valid); got != nil {
		t.Errorf("a key never valid: %q", got)
	}
	r.Forget("", map[string][]byte{"never": nil})
	if got := r.Pick(log, "k", []byte("junk"), valid); got != nil {
		t.Errorf("after the key was deleted: %q", got)
	}
}

// pickRecord decodes an unchanged record once, and still answers what Pick
// would: a new valid value, the last valid one for an invalid value, none
// after the key is forgotten.
func TestPickRecordDecodesOnce(t *testing.T) {
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	r := NewRecords()
	decodes := 0
	decode := func(b []byte) (string, error) {
		decodes++
		if !strings.HasPrefix(string(b), "ok") {
			return "", errors.New("not ok")
		}
		return strings.ToUpper(string(b)), nil
	}
	cases := []struct {
		v       string
		want    string
		ok      bool
		decodes int // decode calls so far
	}{
		{"ok1", "OK1", true, 1},
		{"ok1", "OK1", true, 1},  // unchanged: not decoded again
		{"ok2", "OK2", true, 2},  // changed
		{"junk", "OK2", true, 4}, // invalid: the last valid value, decoded again
		{"junk", "OK2", true, 6}, // still invalid (a warned key is never taken from memory)
		{"ok2", "OK2", true, 7},  // valid again
		{"ok2", "OK2", true, 7},
	}
	for i, c := range cases {
		got, ok := pickRecord(r, log, "k", []byte(c.v), decode)
		if got != c.want || ok != c.ok || decodes != c.decodes {
			t.Fatalf("step %d (%q): got %q %v after %d decodes, want %q %v after %d", i, c.v, got, ok, decodes, c.want, c.ok, c.decodes)
		}
	}
	r.Forget("", map[string][]byte{})
	if got, ok := pickRecord(r, log, "k", []byte("junk"), decode); ok {
		t.Fatalf("after the key was deleted: %q", got)
	}
}
