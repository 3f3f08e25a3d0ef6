package routed_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/internal/testenv"
)

// gatedIPAM puts an IPAM plugin "gated-ipam" (the shell script body) in
// front of the rig's binaries, so that a test decides when IPAM answers
// relative to the plugin's veth step: ADD runs the two side by side.
func gatedIPAM(t *testing.T, r *rig, body string) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("SKIP: needs ip (Debian package iproute2) in the test IPAM plugin")
	}
	dir := t.TempDir()
	script := "#!/bin/sh\n# gated-ipam: a test IPAM plugin (plugins/routed/rollback_test.go).\n" + body
	if err := os.WriteFile(filepath.Join(dir, "gated-ipam"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := testenv.BinDir(t, "brindle")
	exe := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	r.cni = libcni.NewCNIConfigWithCacheDir([]string{dir, bin}, filepath.Join(r.dir, "cache"), exe)
}

// leftovers fails the test if the attachment left anything: a host veth,
// an interface in the pod, an address held by host-local.
func leftovers(t *testing.T, r *rig, p *pod) {
	t.Helper()
	if links := r.hostLinks("bri"); len(links) != 0 {
		t.Errorf("host veths left: %v", links)
	}
	if ips := r.allocated(); len(ips) != 0 {
		t.Errorf("addresses left allocated: %v", ips)
	}
	_ = p.ns.Do(func(ns.NetNS) error {
		links, _ := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				t.Errorf("pod interface left: %s", l.Attrs().Name)
			}
		}
		return nil
	})
}

// TestAddIPAMFailsAfterVeth: the IPAM plugin fails only once the plugin
// has made the veth pair (it waits for the host veth to appear): the pair
// goes, nothing is left.
func TestAddIPAMFailsAfterVeth(t *testing.T) {
	r := newRig(t)
	p := r.newPod("ipamfails")
	gatedIPAM(t, r, `cat >/dev/null
[ "$CNI_COMMAND" = ADD ] || exit 0
i=0
until ip link show dev `+p.veth()+` >/dev/null 2>&1; do
	i=$((i+1))
	if [ $i -gt 6000 ]; then
		echo '{"cniVersion":"1.0.0","code":11,"msg":"gated-ipam: gave up waiting for the host veth"}'
		exit 1
	fi
	sleep 0.01
done
echo '{"cniVersion":"1.0.0","code":11,"msg":"gated-ipam: failing with the host veth in place"}'
exit 1
`)
	l := r.list("1.1.0", map[string]any{"type": "gated-ipam"}, nil)
	_, err := r.add(l, p)
	errContains(t, err, `ipam plugin "gated-ipam" ADD`, "failing with the host veth in place")
	t.Logf("error: %v", err)
	leftovers(t, r, p)
}

// TestAddVethFailsWhileIPAMRuns: the veth step fails (the host veth's name
// is taken by a bridge brindle did not make) while the IPAM plugin is still
// running; IPAM then hands out an address. ADD fails naming the device, the
// address is released (IPAM DEL runs) and nothing else is left.
func TestAddVethFailsWhileIPAMRuns(t *testing.T) {
	r := newRig(t)
	p := r.newPod("vethfails")
	marker := filepath.Join(r.dir, "gated-ipam.calls")
	hostLocal := filepath.Join(testenv.BinDir(t, "brindle"), "host-local")
	gatedIPAM(t, r, `in=$(cat)
seen=no
if [ "$CNI_COMMAND" = ADD ]; then
	i=0
	until grep -q 'veth step failed' '`+r.logFile+`' 2>/dev/null; do
		i=$((i+1))
		[ $i -gt 6000 ] && break
		sleep 0.01
	done
	grep -q 'veth step failed' '`+r.logFile+`' && seen=yes
fi
out=$(printf '%s' "$in" | '`+hostLocal+`')
rc=$?
echo "$CNI_COMMAND rc=$rc after-veth-failure=$seen" >> '`+marker+`'
printf '%s' "$out"
exit $rc
`)
	if err := r.in(func() error {
		a := netlink.NewLinkAttrs()
		a.Name = p.veth()
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: a})
	}); err != nil {
		t.Fatal(err)
	}
	ipam := r.hostLocal("10.95.0.0/24")
	ipam["type"] = "gated-ipam"
	l := r.list("1.1.0", ipam, nil)
	_, err := r.add(l, p)
	errContains(t, err, "taken by a bridge device that brindle did not create")
	t.Logf("error: %v", err)
	b, _ := os.ReadFile(marker)
	calls := strings.TrimSpace(string(b))
	if !strings.Contains(calls, "ADD rc=0 after-veth-failure=yes") || !strings.Contains(calls, "DEL rc=0") {
		t.Errorf("IPAM calls:\n%s\nwant an ADD that gave an address after the veth step failed, then a DEL", calls)
	}
	if err := r.in(func() error {
		l, err := netlink.LinkByName(p.veth())
		if err != nil {
			return err
		}
		if l.Type() != "bridge" {
			t.Errorf("%s is a %s now; the bridge in the way must be left alone", p.veth(), l.Type())
		}
		return netlink.LinkDel(l)
	}); err != nil {
		t.Errorf("the bridge in the way is gone: %v", err)
	}
	leftovers(t, r, p)
}
