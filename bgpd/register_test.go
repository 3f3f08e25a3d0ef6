package bgpd

import (
	"strings"
	"testing"
)

func TestDetectExplicitAndBad(t *testing.T) {
	cases := []struct {
		v6         bool
		spec, want string
		err        string
	}{
		{false, "192.0.2.10/24", "192.0.2.10/24", ""},
		{true, "fd00::7/64", "fd00::7/64", ""},
		{true, "none", "invalid Prefix", ""},
		{false, "fd00::7/64", "", `--ip "fd00::7/64": want autodetect`},
		{true, "192.0.2.10/24", "", `--ip6 "192.0.2.10/24": want autodetect`},
		{false, "can-reach=fd00::1", "", "--ip can-reach=fd00::1: want an address of the family"},
		{false, "interface=brindle-no-such-if", "", "--ip interface=brindle-no-such-if"},
		{false, "bogus", "", `--ip "bogus"`},
	}
	for _, c := range cases {
		detect := DetectIPv4
		if c.v6 {
			detect = DetectIPv6
		}
		got, err := detect(c.spec)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.spec, err, c.err)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("%q: got %s, %v; want %s", c.spec, got, err, c.want)
		}
	}
}
