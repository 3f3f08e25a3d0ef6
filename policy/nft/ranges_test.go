package nft

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestRanges(t *testing.T) {
	pr := func(s string) Range { return PrefixRange(netip.MustParsePrefix(s)) }
	cases := []struct {
		name string
		got  []Range
		want string
	}{
		{"subtract a /32 from a /24", Subtract(pr("10.0.0.0/24"), []Range{pr("10.0.0.7/32")}), "[10.0.0.0-10.0.0.6 10.0.0.8-10.0.0.255]"},
		{"subtract the start", Subtract(pr("10.0.0.0/24"), []Range{pr("10.0.0.0/25")}), "[10.0.0.128/25]"},
		{"subtract everything", Subtract(pr("10.0.0.0/24"), []Range{pr("10.0.0.0/16")}), "[]"},
		{"subtract another family", Subtract(pr("10.0.0.0/24"), []Range{pr("fd00::/8")}), "[10.0.0.0/24]"},
		{"merge touching and overlapping", Normalize([]Range{pr("10.0.0.2/32"), pr("10.0.0.0/31"), pr("10.0.1.0/24"), pr("10.0.0.128/25"), pr("10.0.1.5/32")}), "[10.0.0.0-10.0.0.2 10.0.0.128-10.0.1.255]"},
		{"families apart", Normalize([]Range{pr("fd00::/64"), pr("0.0.0.0/0"), pr("::/0")}), "[0.0.0.0/0 ::/0]"},
		{"the whole space", Normalize([]Range{pr("255.255.255.255/32"), pr("0.0.0.0/1"), pr("128.0.0.0/1")}), "[0.0.0.0/0]"},
	}
	for _, c := range cases {
		if got := fmt.Sprint(c.got); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	if r, err := ParseRange("10.0.0.1-10.0.0.3"); err != nil || !Contains([]Range{r}, netip.MustParseAddr("10.0.0.2")) || Contains([]Range{r}, netip.MustParseAddr("10.0.0.4")) {
		t.Errorf("ParseRange/Contains: %v %v", r, err)
	}
	if _, err := ParseRange("10.0.0.3-10.0.0.1"); err == nil {
		t.Error("ParseRange accepted a reversed range")
	}
}
