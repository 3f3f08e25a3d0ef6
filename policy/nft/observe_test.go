package nft

import (
	"testing"

	"github.com/brindle-net/brindle/internal/testenv"
)

// Generation keeps one socket between calls and still sees every commit;
// after Close the next call opens another.
func TestGenerationKeptSocket(t *testing.T) {
	requireNft(t)
	n := testenv.NewNS(t)
	w := &Writer{NetNS: int(n.Fd())}
	t.Cleanup(func() { w.Close() })
	g0, err := w.Generation()
	if err != nil {
		t.Fatal(err)
	}
	kept := w.gen
	if kept == nil {
		t.Fatal("Generation kept no socket")
	}
	if _, err := w.Apply(Render(sampleProgram())); err != nil {
		t.Fatal(err)
	}
	g1, err := w.Generation()
	if err != nil {
		t.Fatal(err)
	}
	if g1 == g0 {
		t.Errorf("generation %d before and after a commit, on the kept socket", g0)
	}
	if w.gen != kept {
		t.Error("the second Generation opened another socket")
	}
	if err := w.Close(); err != nil || w.gen != nil {
		t.Fatalf("Close: %v, socket %v", err, w.gen)
	}
	w.Invalidate() // the next Apply rewrites the table: a commit
	if _, err := w.Apply(Render(sampleProgram())); err != nil {
		t.Fatal(err)
	}
	g2, err := w.Generation()
	if err != nil || g2 == g1 || w.gen == nil {
		t.Errorf("after Close and a commit: generation %d (was %d), socket %v, %v", g2, g1, w.gen, err)
	}
}
