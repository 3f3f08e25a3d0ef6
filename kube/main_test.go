package kube

import (
	"testing"

	"github.com/brindle-net/brindle/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
