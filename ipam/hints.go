package ipam

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// BlockHints remembers between calls which blocks a node holds, so that an
// ADD can read them in its first round trip instead of a second one. A hint
// is only a guess: the claims read in that same round trip decide, and a
// wrong hint costs the read it would have saved, never a wrong answer.
type BlockHints interface {
	Load(node string) []netip.Prefix
	Save(node string, blocks []netip.Prefix)
}

// FileHints keeps hints in Dir/ipam-blocks-<node>, one CIDR a line. Errors
// are ignored: without a hint an ADD just makes one more round trip.
type FileHints struct {
	Dir string
}

func (f FileHints) path(node string) string { return filepath.Join(f.Dir, "ipam-blocks-"+node) }

// Load implements BlockHints.
func (f FileHints) Load(node string) []netip.Prefix {
	b, err := os.ReadFile(f.path(node))
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, l := range strings.Fields(string(b)) {
		if p, err := netip.ParsePrefix(l); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Save implements BlockHints, replacing the file atomically.
func (f FileHints) Save(node string, blocks []netip.Prefix) {
	var sb strings.Builder
	for _, b := range blocks {
		sb.WriteString(b.String() + "\n")
	}
	tmp, err := os.CreateTemp(f.Dir, ".ipam-blocks-*")
	if err != nil {
		return
	}
	_, werr := tmp.WriteString(sb.String())
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), f.path(node)) != nil {
		_ = os.Remove(tmp.Name())
	}
}

// sortedPrefixes returns the keys of m in address order.
func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}
