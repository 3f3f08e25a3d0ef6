package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// TestCapture: a pod on node-2 pings and curls two others (one per node)
// while the node and other pods make noise; `brindlectl capture` run on
// node-1 reaches node-2's brindled over mutual TLS and returns exactly that
// pod's packets, as tshark reads them. Then filters, limits, Ctrl-C, --node
// and the local socket.
func TestCapture(t *testing.T) {
	for _, tool := range []string{"tshark", "curl", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", tool)
		}
	}
	testenv.RequireRoot(t)
	// The lab's node addresses (198.19.1.11 + i, see lab.addNode) go into
	// the nodes' server certificate before the daemons start.
	k := newPKI(t, t.TempDir(), netip.MustParseAddr("198.19.1.11"), netip.MustParseAddr("198.19.1.12"))
	l := newLab(t, lab.Config{Nodes: 2, DaemonArgs: []string{
		"--nodeapi-listen", ":9098", "--nodeapi-tls-cert", k.serverCert, "--nodeapi-tls-key", k.serverKey, "--nodeapi-client-ca", k.ca,
		"--capture-max-concurrent", "2", "--capture-max-duration", "2m"}})
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if err := l.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	n1, n2 := l.Nodes[0], l.Nodes[1]
	add := func(n *lab.Node, name string) *lab.Pod {
		p, err := n.AddPod(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	talker, peer2, noise2 := add(n2, "talker"), add(n2, "peer2"), add(n2, "noise2")
	peer1, noise1 := add(n1, "peer1"), add(n1, "noise1")
	serveHTTP(t, peer1)
	serveHTTP(t, peer2)
	eps := func(ps ...*lab.Pod) (out []endpoint) {
		for _, p := range ps {
			out = append(out, endpoint{p.Name, p.NS, p.Addr})
		}
		return out
	}
	reachAll(t, eps(talker, noise2, noise1), eps(peer1, peer2), 10*time.Second)
	t.Logf("talker %s, peer1 %s (node-1), peer2 %s (node-2), noise %s %s", talker.Addr, peer1.Addr, peer2.Addr, noise1.Addr, noise2.Addr)

	// Noise while captures run: other pods on both nodes, node to node,
	// node to pod.
	noise := func(from ns.NetNS, to netip.Addr) {
		// Until the test ends (killed at cleanup), however long a loaded
		// machine makes it.
		cmd := exec.Command("ping", "-q", "-i", "0.1", to.String())
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if _, err := testenv.StartIn(from, cmd); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
	}
	noise(noise2.NS, peer2.Addr)
	noise(noise2.NS, peer1.Addr)
	noise(noise1.NS, peer1.Addr)
	noise(n2.NS, n1.Addr.Addr())
	noise(n2.NS, peer2.Addr)
	talk := func() {
		run(t, talker.NS, "ping", "-c", "3", "-i", "0.2", peer1.Addr.String())
		run(t, talker.NS, "ping", "-c", "3", "-i", "0.2", peer2.Addr.String())
		for _, p := range []*lab.Pod{peer1, peer2} {
			if out := run(t, talker.NS, "curl", "-sS", "-m", "5", fmt.Sprintf("http://%s:8080/", p.Addr)); !strings.Contains(out, "hello from "+p.Name) {
				t.Fatalf("curl %s: %q", p.Name, out)
			}
		}
	}
	dir := t.TempDir()

	t.Run("exactly the pod's packets, from another node", func(t *testing.T) {
		file := filepath.Join(dir, "talker.pcap")
		wait, _ := startCapture(t, l, n1, k, file, "default/talker", "--duration", "20s")
		talk()
		stderr, err := wait()
		if err != nil || !strings.Contains(stderr, "capture ended (duration)") {
			t.Fatalf("capture: %v\n%s", err, stderr)
		}
		t.Logf("brindlectl: %s", strings.TrimSpace(stderr))
		// The pod's addresses: its IPv4 address; IPv6 link-local traffic
		// on its link only (its eth0's address, its host veth's, or the
		// unspecified source of duplicate address detection): neighbour
		// discovery and MLD between the two ends of the pod's own veth.
		me := talker.Addr.String()
		ll := strings.Fields(run(t, talker.NS, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"))
		if len(ll) < 4 {
			t.Fatalf("no link-local address on the pod's eth0: %v", ll)
		}
		meLL := strings.Split(ll[3], "/")[0]
		hostLL := "fe80::ecee:eeff:feee:eeee" // the host veth's MAC is ee:ee:ee:ee:ee:ee (DESIGN.md)
		rows := tsharkFields(t, file, "", "ip.src", "ip.dst", "arp.src.proto_ipv4", "arp.dst.proto_ipv4", "ipv6.src", "ipv6.dst", "icmpv6.nd.ns.target_address", "_ws.col.Protocol")
		if len(rows) < 12 {
			t.Fatalf("%d packets; want the pings and two HTTP exchanges", len(rows))
		}
		for _, r := range rows {
			f := strings.Split(r, "\t")
			v4 := f[0] == me || f[1] == me || f[2] == me || f[3] == me
			onLink := f[4] == meLL || f[4] == hostLL || f[4] == "::"
			v6 := f[4] == meLL || f[5] == meLL || onLink && (strings.HasPrefix(f[5], "ff02::") || f[5] == meLL || f[5] == hostLL)
			if !v4 && !v6 {
				t.Errorf("a packet not of the pod (%s, %s): %q", me, meLL, r)
			}
		}
		for _, tc := range []struct {
			filter string
			want   int
		}{
			{fmt.Sprintf("icmp.type == 8 && ip.src == %s && ip.dst == %s", me, peer1.Addr), 3},
			{fmt.Sprintf("icmp.type == 0 && ip.dst == %s && ip.src == %s", me, peer2.Addr), 3},
			{"http.request", 2},
			{"http.response.code == 200", 2},
			{fmt.Sprintf("ip.addr == %s || ip.addr == %s || ip.addr == %s", noise1.Addr, noise2.Addr, n1.Addr.Addr()), 0},
		} {
			if got := len(tsharkFields(t, file, tc.filter, "frame.number")); got != tc.want {
				t.Errorf("%q: %d packets, want %d", tc.filter, got, tc.want)
			}
		}
		t.Logf("%d packets, all of %s", len(rows), me)
	})

	t.Run("filters select what they say", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			args  []string
			check string // a tshark filter every packet must pass
			want  string // and one that must match some
		}{
			{"icmp to peer1", []string{"--filter", "icmp and host " + peer1.Addr.String()}, "icmp && ip.addr == " + peer1.Addr.String(), "icmp.type == 8"},
			{"tcp 8080", []string{"--protocol", "tcp", "--ports", "8080"}, "tcp.port == 8080", "http.request"},
			{"not icmp", []string{"--filter", "not icmp and not arp"}, "!icmp && !arp", "tcp"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".pcap")
				wait, cmd := startCapture(t, l, n1, k, file, append([]string{"default/talker", "--duration", "1m"}, tc.args...)...)
				talk()
				if stderr, err := interrupt(cmd, wait); err != nil {
					t.Fatalf("%v\n%s", err, stderr)
				}
				all := len(tsharkFields(t, file, "", "frame.number"))
				pass := len(tsharkFields(t, file, tc.check, "frame.number"))
				some := len(tsharkFields(t, file, tc.want, "frame.number"))
				if all == 0 || pass != all || some == 0 {
					t.Errorf("%d packets, %d pass %q, %d match %q", all, pass, tc.check, some, tc.want)
				}
			})
		}
		cmd := ctlCmd(t, l, n1, k, "capture", "default/talker", "--filter", "tcp prot 80", "-o", filepath.Join(dir, "bad.pcap"))
		out, err := runIn(n1.NS, cmd)
		if code := exitCode(err); code != 2 || !strings.Contains(out, `filter "tcp prot 80": at "prot"`) {
			t.Errorf("bad filter: exit %d\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "bad.pcap")); err == nil {
			t.Error("a refused capture left a file")
		}
	})

	t.Run("limits hold", func(t *testing.T) {
		// Size: a flood of pings, at most 3000 bytes, a valid file.
		file := filepath.Join(dir, "size.pcap")
		wait, _ := startCapture(t, l, n1, k, file, "default/talker", "--duration", "20s", "--max-size", "3000B")
		start := time.Now()
		run(t, talker.NS, "ping", "-c", "50", "-i", "0.01", "-s", "200", peer1.Addr.String())
		stderr, err := wait()
		fi, _ := os.Stat(file)
		if err != nil || !strings.Contains(stderr, "(size)") || fi.Size() > 3000 || time.Since(start) > 15*time.Second {
			t.Errorf("size limit: %v, %d bytes in %s\n%s", err, fi.Size(), time.Since(start), stderr)
		}
		if n := len(tsharkFields(t, file, "", "frame.number")); n == 0 {
			t.Error("size-limited file has no packets")
		}
		// The node refuses what is past its own limits, naming them.
		out, err := runIn(n1.NS, ctlCmd(t, l, n1, k, "capture", "default/talker", "--duration", "5m", "-o", filepath.Join(dir, "long.pcap")))
		if exitCode(err) != 1 || !strings.Contains(out, "above the node's limit of 2m0s") {
			t.Errorf("duration over the node's limit: %v\n%s", err, out)
		}
		// Concurrency: two at once run, a third is refused.
		w1, c1 := startCapture(t, l, n1, k, filepath.Join(dir, "c1.pcap"), "default/talker", "--duration", "1m")
		w2, c2 := startCapture(t, l, n2, k, filepath.Join(dir, "c2.pcap"), "default/talker", "--duration", "1m", "--via", "local")
		out, err = runIn(n1.NS, ctlCmd(t, l, n1, k, "capture", "default/talker", "--duration", "2s", "-o", filepath.Join(dir, "c3.pcap")))
		if exitCode(err) != 1 || !strings.Contains(out, "2 captures already running") {
			t.Errorf("third capture: %v\n%s", err, out)
		}
		talk()
		cmds := []*exec.Cmd{c1, c2}
		for i, w := range []func() (string, error){w1, w2} {
			if stderr, err := interrupt(cmds[i], w); err != nil {
				t.Errorf("capture %d: %v\n%s", i+1, err, stderr)
			}
		}
		a, b := len(tsharkFields(t, filepath.Join(dir, "c1.pcap"), "http.request", "frame.number")), len(tsharkFields(t, filepath.Join(dir, "c2.pcap"), "http.request", "frame.number"))
		if a != 2 || b != 2 {
			t.Errorf("concurrent captures: %d and %d HTTP requests, want 2 each", a, b)
		}
	})

	t.Run("Ctrl-C leaves a valid file", func(t *testing.T) {
		file := filepath.Join(dir, "interrupted.pcap")
		wait, cmd := startCapture(t, l, n1, k, file, "default/talker", "--duration", "1m")
		talk()
		stderr, err := interrupt(cmd, wait)
		if err != nil || !strings.Contains(stderr, "(interrupted)") {
			t.Fatalf("after SIGINT: %v\n%s", err, stderr)
		}
		if n := len(tsharkFields(t, file, "http.request", "frame.number")); n != 2 {
			t.Errorf("%d HTTP requests in the interrupted capture, want 2", n)
		}
	})

	t.Run("every pod of a node", func(t *testing.T) {
		file := filepath.Join(dir, "node-2.pcapng")
		wait, cmd := startCapture(t, l, n1, k, file, "--node", "node-2", "--duration", "1m")
		talk()
		if stderr, err := interrupt(cmd, wait); err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		names := map[string]bool{}
		for _, r := range tsharkFields(t, file, "", "frame.interface_name") {
			names[r] = true
		}
		for _, want := range []string{"default/talker/eth0", "default/peer2/eth0", "default/noise2/eth0"} {
			if !names[want] {
				t.Errorf("no packets on interface %s: %v", want, names)
			}
		}
		if names["default/peer1/eth0"] {
			t.Errorf("node-1's pod in node-2's capture: %v", names)
		}
	})

	t.Run("all interfaces of a pod", func(t *testing.T) {
		multi := add(n2, "multi")
		addr1, veth1, err := n2.AddInterface(ctx, multi, "net1")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("multi: eth0 %s (%s), net1 %s (%s)", multi.Addr, multi.HostVeth, addr1, veth1)
		file := filepath.Join(dir, "multi.pcapng")
		wait, cmd := startCapture(t, l, n1, k, file, "default/multi", "--all-interfaces", "--protocol", "icmp", "--duration", "1m")
		run(t, peer2.NS, "ping", "-c", "3", "-i", "0.2", multi.Addr.String())
		lab.Run(peer2.NS, "ping", "-c", "3", "-i", "0.2", "-W", "1", addr1.String()) // replies leave by eth0: only the requests matter
		if stderr, err := interrupt(cmd, wait); err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		per := map[string]int{}
		for _, r := range tsharkFields(t, file, "icmp.type == 8", "frame.interface_name", "ip.dst") {
			per[r]++
		}
		if per["default/multi/eth0\t"+multi.Addr.String()] != 3 || per["default/multi/net1\t"+addr1.String()] != 3 || len(per) != 2 {
			t.Errorf("echo requests per interface and destination: %v", per)
		}
	})

	t.Run("pod view", func(t *testing.T) {
		talk()
		out, err := runIn(n1.NS, ctlCmd(t, l, n1, k, "pod", "default/talker", "-o", "json"))
		if err != nil {
			t.Fatalf("pod: %v\n%s", err, out)
		}
		var v struct {
			Node       string `json:"node"`
			NodeError  string `json:"nodeError"`
			PolicyNote string `json:"policyNote"`
			Interfaces []struct {
				HostVeth string `json:"hostVeth"`
				IPAM     []struct {
					Handle, Block, Affinity string
				} `json:"ipam"`
				Host struct {
					Up     bool     `json:"up"`
					Routes []string `json:"routes"`
					Stats  struct {
						RxPackets, TxPackets uint64
					} `json:"stats"`
				} `json:"host"`
			} `json:"interfaces"`
			Blocks []struct {
				Block string `json:"block"`
				Nodes []struct {
					Node            string
					Learned, Kernel []string
					Error           string
				} `json:"nodes"`
			} `json:"blocks"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if v.Node != "node-2" || v.NodeError != "" || len(v.Interfaces) != 1 || len(v.Blocks) != 1 {
			t.Fatalf("pod view:\n%s", out)
		}
		ifc := v.Interfaces[0]
		if ifc.HostVeth != talker.HostVeth || !ifc.Host.Up || ifc.Host.Stats.RxPackets < 8 || ifc.Host.Stats.TxPackets < 8 {
			t.Errorf("host veth %s up %v counters %+v", ifc.HostVeth, ifc.Host.Up, ifc.Host.Stats)
		}
		if len(ifc.Host.Routes) != 1 || !strings.HasPrefix(ifc.Host.Routes[0], talker.Addr.String()+"/32 dev "+talker.HostVeth) {
			t.Errorf("route on node-2: %v", ifc.Host.Routes)
		}
		if len(ifc.IPAM) != 1 || ifc.IPAM[0].Handle == "" || ifc.IPAM[0].Affinity != "node-2" {
			t.Errorf("ipam: %+v", ifc.IPAM)
		}
		b := v.Blocks[0]
		if len(b.Nodes) != 1 || b.Nodes[0].Node != "node-1" || b.Nodes[0].Error != "" ||
			len(b.Nodes[0].Learned) != 1 || !strings.Contains(b.Nodes[0].Learned[0], "via 198.19.1.12") ||
			len(b.Nodes[0].Kernel) != 1 || !strings.Contains(b.Nodes[0].Kernel[0], b.Block+" via 198.19.1.12") {
			t.Errorf("block %s on the other nodes: %+v", b.Block, b.Nodes)
		}
		table, err := runIn(n1.NS, ctlCmd(t, l, n1, k, "pod", "default/talker"))
		if err != nil || !strings.Contains(table, talker.HostVeth) || !strings.Contains(table, "BLOCK "+b.Block) {
			t.Errorf("pod table: %v\n%s", err, table)
		}
		t.Logf("brindlectl pod default/talker:\n%s", table)
		list, err := runIn(n1.NS, ctlCmd(t, l, n1, k, "pod", "list", "--node", "node-2"))
		// talker, peer2, noise2, and multi with two interfaces.
		if err != nil || strings.Count(list, "node-2") != 5 || !strings.Contains(list, "net1") || strings.Contains(list, "peer1") {
			t.Errorf("pod list --node node-2: %v\n%s", err, list)
		}
	})

	// --via kube: the node API over `kubectl exec ... brindlectl
	// node-proxy`. A stand-in for kubectl answers the two lookups and runs
	// the exec as kubectl would, in the node (its network namespace): the
	// pipe, node-proxy and HTTP over it are the real ones.
	t.Run("via kubectl exec", func(t *testing.T) {
		bin := testenv.BinDir(t)
		script := "#!/bin/sh\ncase \"$*\" in\n"
		for _, n := range l.Nodes {
			script += fmt.Sprintf("*\"get pods\"*\"spec.nodeName=%s\"*) echo brindle-%s ;;\n", n.Name, n.Name)
		}
		script += "*\"get pod talker\"*) echo node-2 ;;\n"
		for _, n := range l.Nodes {
			script += fmt.Sprintf("*\"exec -i brindle-%s -c brindled -- brindlectl node-proxy\"*) exec nsenter --net=%s %s/brindlectl node-proxy --nodeapi-socket %s ;;\n",
				n.Name, n.NS.Path(), bin, n.NodeAPISocket())
		}
		script += "*) echo \"unexpected: $*\" >&2; exit 1 ;;\nesac\n"
		kubectl := filepath.Join(dir, "kubectl")
		if err := os.WriteFile(kubectl, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "kube.pcap")
		cmd := exec.Command(filepath.Join(bin, "brindlectl"), "capture", "default/talker", "--via", "kube", "--kubectl", kubectl,
			"--nodeapi-socket", filepath.Join(dir, "none.sock"), "--duration", "1m", "-o", file)
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- cmd.Wait() }()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if fi, err := os.Stat(file); err == nil && fi.Size() >= 24 {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("capture --via kube: no pcap header after 1m\n%s", out)
			}
		}
		talk()
		wait := func() (string, error) { err := <-errc; return out.String(), err }
		if o, err := interrupt(cmd, wait); err != nil || !strings.Contains(o, "(interrupted)") {
			t.Fatalf("capture --via kube: %v\n%s", err, o)
		}
		if n := len(tsharkFields(t, file, "http.request", "frame.number")); n != 2 {
			t.Errorf("--via kube: %d HTTP requests, want 2", n)
		}
		pv := ctlCmd(t, l, n1, k, "pod", "default/talker", "--via", "kube", "--kubectl", kubectl, "-o", "json")
		pv.Env = append(pv.Env, "BRINDLE_NODEAPI_SOCKET="+filepath.Join(dir, "none.sock"))
		o, err := runIn(n1.NS, pv)
		if err != nil || !strings.Contains(o, `"hostVeth": "`+talker.HostVeth+`"`) || !strings.Contains(o, "via 198.19.1.12 from 198.19.1.12") {
			t.Errorf("pod --via kube: %v\n%s", err, o)
		}
	})

	t.Run("TLS listener refuses clients without a certificate", func(t *testing.T) {
		err := n1.NS.Do(func(ns.NetNS) error {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", n2.Addr.Addr().String()+":9098", &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			fmt.Fprintf(c, "POST /v1/capture HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
			_, err = c.Read(make([]byte, 1))
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("a client without a certificate got %v, want a TLS certificate error", err)
		}
	})
}

func runIn(n ns.NetNS, cmd *exec.Cmd) (string, error) {
	var out []byte
	err := n.Do(func(ns.NetNS) error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	return string(out), err
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
