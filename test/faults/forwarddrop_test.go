package faults

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// FORWARD policy DROP on every node (what Docker sets, for IPv4 and IPv6):
// the mesh reachability test still passes — every pod reaches every other,
// on its own node and across nodes, over IPv4 and IPv6 — because brindled
// puts its accept rules for brindle's interfaces at the top of iptables'
// FORWARD chains. The control run with the filter table off loses the
// traffic that crosses a node's FORWARD.
func TestForwardDropHosts(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("SKIP: needs iptables (iptables-nft) to set the FORWARD policy")
	}
	ok, total := forwardDropMesh(t, true)
	if ok != total {
		t.Errorf("with FORWARD DROP on every node: %d of %d pod pairs reach each other", ok, total)
	}
	cok, ctotal := forwardDropMesh(t, false)
	if cok == ctotal {
		t.Errorf("control without the filter table: all %d pairs reached each other; the scenario cannot tell", ctotal)
	}
	figures(t, "FORWARD DROP (IPv4 and IPv6) on 3 nodes: %d/%d pod pairs reachable with brindle's accept rules, %d/%d (a sample) without", ok, total, cok, ctotal)
}

// forwardDropMesh makes a 3-node dual-stack lab whose nodes drop forwarded
// traffic by policy, 2 pods a node, and pings every pair over both
// families; it returns how many pairs answered, of how many.
func forwardDropMesh(t *testing.T, filter bool) (ok, total int) {
	var args []string
	if !filter {
		args = []string{"--filter=false"}
	}
	l := filterLab(t, lab.Config{Nodes: 3, IPv6: true, DaemonArgs: args})
	ctx := t.Context()
	for _, n := range l.Nodes {
		for _, cmd := range []string{"iptables", "ip6tables"} {
			if out, err := lab.Run(n.NS, cmd, "-P", "FORWARD", "DROP"); err != nil {
				t.Fatalf("%s: %s -P FORWARD DROP: %v %s", n.Name, cmd, err, out)
			}
		}
	}
	if err := l.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	var pods []*lab.Pod
	for _, n := range l.Nodes {
		for i := range 2 {
			p, err := n.AddPod(ctx, fmt.Sprintf("%s-p%d", n.Name, i))
			if err != nil {
				t.Fatal(err)
			}
			pods = append(pods, p)
		}
	}
	if filter {
		for _, n := range l.Nodes {
			err := eventually(5*time.Second, func() error {
				out, err := lab.Run(n.NS, "iptables", "-S", "FORWARD")
				if err != nil || !strings.Contains(out, "-A FORWARD -i bri+") {
					return fmt.Errorf("%s: iptables FORWARD has no brindle rule: %v\n%s", n.Name, err, out)
				}
				out, err = lab.Run(n.NS, "ip6tables", "-S", "FORWARD")
				if err != nil || !strings.Contains(out, "-A FORWARD -o bri+") {
					return fmt.Errorf("%s: ip6tables FORWARD has no brindle rule: %v\n%s", n.Name, err, out)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, from := range pods {
		for _, to := range pods {
			if from == to {
				continue
			}
			for _, dst := range []netip.Addr{to.Addr, to.Addr6} {
				if !filter && total == 8 {
					return ok, total // the control needs only a sample
				}
				total++
				// A few tries: a pod's host veth answers IPv6 neighbour
				// discovery only once its own link-local address has
				// passed DAD, a second or two after the pod was added.
				tries := 1
				if filter {
					tries = 5
				}
				if err := testenv.Ping(from.NS, dst, tries); err == nil {
					ok++
				} else if filter {
					t.Errorf("%s -> %s (%s): %v", from.Name, to.Name, dst, err)
				}
			}
		}
	}
	return ok, total
}
