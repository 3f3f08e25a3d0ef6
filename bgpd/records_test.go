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
