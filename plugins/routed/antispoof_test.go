package routed_test

import (
	"fmt"
	"os/exec"
	"testing"

	"github.com/brindle-net/brindle/internal/testenv"
)

// TestCheckReportsLooseHost (issue 12, defect 4): with
// net.ipv4.conf.all.rp_filter=2 the kernel's reverse-path filter is loose
// whatever the veth says; CHECK fails unless brindle's filter table holds
// the attachment, and fails too when the table exists without it.
func TestCheckReportsLooseHost(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIP: needs the nft binary (Debian package nftables) to make a filter table")
	}
	r := newRig(t)
	l := r.list("1.0.0", r.hostLocal("10.244.9.0/24"), nil)
	p := r.newPod("loose")
	res := r.mustAdd(l, p)
	ip := podAddr(t, res, false)
	if err := r.check(l, p); err != nil {
		t.Fatalf("CHECK on a strict host: %v", err)
	}
	writeSysctlIn(t, r.host.NS, "net/ipv4/conf/all/rp_filter", "2")
	errContains(t, r.check(l, p), "loose host", "rp_filter in force is 2")

	nft := func(script string) {
		t.Helper()
		if err := testenv.Do(t, r.host.NS, func() error {
			out, err := exec.Command("nft", script).CombinedOutput()
			if err != nil {
				return fmt.Errorf("nft: %v %s", err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	nft("add table inet brindle; add set inet brindle eps4 { type ifname . ipv4_addr; }; add set inet brindle eps6 { type ifname . ipv6_addr; }")
	errContains(t, r.check(l, p), "table inet brindle does not hold")
	nft(fmt.Sprintf(`add element inet brindle eps4 { "%s" . %s }`, p.veth(), ip))
	if err := r.check(l, p); err != nil {
		t.Fatalf("CHECK with the attachment in table inet brindle: %v", err)
	}
}
