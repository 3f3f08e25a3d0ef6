package testenv

import (
	"testing"

	"golang.org/x/net/bpf"
)

// FilterPasses runs a socket filter on msg in x/net/bpf's VM and reports
// whether the filter lets it through (keeps any of its bytes).
func FilterPasses(t testing.TB, prog []bpf.RawInstruction, msg []byte) bool {
	t.Helper()
	ins := make([]bpf.Instruction, len(prog))
	for i, r := range prog {
		ins[i] = r.Disassemble()
	}
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatal(err)
	}
	n, err := vm.Run(msg)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}
