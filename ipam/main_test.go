package ipam

import (
	"os"
	"testing"

	"github.com/brindle-net/brindle/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}
