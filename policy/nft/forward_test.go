package nft

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
)

func run(t *testing.T, n ns.NetNS, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + n.Path()}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestForwardAccept: iptables' FORWARD with policy DROP (what Docker sets)
// and a native nft forward chain with policy drop each get brindle's two
// accept rules at the top, in a form iptables still reads; they go back to
// the top when something is inserted above them, and uninstall removes
// them. Chains with policy accept are left alone.
func TestForwardAccept(t *testing.T) {
	requireNft(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("SKIP: needs iptables (iptables-nft)")
	}
	n := testenv.NewNS(t)
	run(t, n, "iptables", "-P", "FORWARD", "DROP")
	run(t, n, "iptables", "-A", "FORWARD", "-i", "docker0", "-j", "ACCEPT")
	run(t, n, "ip6tables", "-P", "FORWARD", "ACCEPT")
	run(t, n, "nft", "add table inet fw; add chain inet fw fwdchain { type filter hook forward priority 10; policy drop; }")
	w := &Writer{NetNS: int(n.Fd())}

	changed, err := w.EnsureForwardAccept()
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 2 {
		t.Fatalf("changed %v, want ip filter FORWARD and inet fw fwdchain", changed)
	}
	want := []string{
		"-P FORWARD DROP",
		`-A FORWARD -i bri+ -m comment --comment "` + ForwardComment + `" -j ACCEPT`,
		`-A FORWARD -o bri+ -m comment --comment "` + ForwardComment + `" -j ACCEPT`,
		"-A FORWARD -i docker0 -j ACCEPT",
	}
	if got := strings.TrimSpace(run(t, n, "iptables", "-S", "FORWARD")); got != strings.Join(want, "\n") {
		t.Fatalf("iptables -S FORWARD:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if got := run(t, n, "nft", "list", "chain", "inet", "fw", "fwdchain"); !strings.Contains(got, `iifname "bri*" counter packets 0 bytes 0 accept comment "`+ForwardComment+`"`) {
		t.Fatalf("inet fw fwdchain:\n%s", got)
	}
	if got := run(t, n, "ip6tables", "-S", "FORWARD"); strings.Contains(got, "bri") {
		t.Fatalf("ip6tables FORWARD (policy ACCEPT) was changed:\n%s", got)
	}
	if changed, err := w.EnsureForwardAccept(); err != nil || len(changed) != 0 {
		t.Fatalf("second Ensure changed %v (%v), want nothing", changed, err)
	}

	run(t, n, "iptables", "-N", "DOCKER-USER")
	run(t, n, "iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
	if changed, err := w.EnsureForwardAccept(); err != nil || len(changed) != 1 {
		t.Fatalf("after a rule was inserted above: changed %v (%v), want ip filter FORWARD", changed, err)
	}
	if got := run(t, n, "iptables", "-S", "FORWARD"); !strings.HasPrefix(strings.Split(got, "\n")[1], "-A FORWARD -i bri+") {
		t.Fatalf("brindle's rules not back at the top:\n%s", got)
	}

	if _, err := w.RemoveForwardAccept(); err != nil {
		t.Fatal(err)
	}
	if got := run(t, n, "iptables", "-S", "FORWARD") + run(t, n, "nft", "list", "chain", "inet", "fw", "fwdchain"); strings.Contains(got, "bri") {
		t.Fatalf("after Remove:\n%s", got)
	}
}
