package smoke

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var brindlectl = flag.String("brindlectl", "", "brindlectl built from the tree (installed as the kubectl plugin)")

// TestCaptureThroughKubectl: `kubectl brindle capture NS/POD` from outside
// the node, through the apiserver and the kubelet's exec into that node's
// brindle-node pod, returns a pcap of that pod's packets only (checked with
// tshark) while the pod talks to another node's pod and other pods talk too.
func TestCaptureThroughKubectl(t *testing.T) {
	if *brindlectl == "" {
		t.Skip("no -brindlectl: run through test/k8s/smoke.sh")
	}
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark is not installed (scripts/install-deps.sh installs it)")
	}
	c := connect(t)
	w := c.workers()
	client := c.pod("client", w[1].Name, netexec(), nil)
	server := c.pod("server", w[0].Name, netexec(), nil)
	c.pod("noise", w[1].Name, netexec(), nil)

	dir := t.TempDir()
	if out, err := exec.Command(*brindlectl, "install-kubectl-plugin", "--dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("install-kubectl-plugin: %v\n%s", err, out)
	}
	pcap := filepath.Join(dir, "client.pcap")
	cmd := exec.Command("kubectl", "brindle", "capture", c.ns+"/client", "--duration", "20s", "-o", pcap)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "KUBECONFIG="+*kubeconfig)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The capture runs once packets arrive in the file (the kubelet probes
	// the pod every second): only then the pod's own traffic.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if fi, err := os.Stat(pcap); err == nil && fi.Size() > 24 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no packet in %s after 60 s: %s", pcap, stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.sh("client", "ping -c 3 -i 0.2 "+server.Status.PodIP+" && curl -sS -m 5 http://"+server.Status.PodIP+":8080/hostname")
	// Noise the capture must not see: another pod on the same node.
	c.sh("noise", "ping -c 3 -i 0.2 "+server.Status.PodIP+"; curl -sS -m 5 http://"+server.Status.PodIP+":8080/hostname")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kubectl brindle capture: %v\n%s", err, stderr.String())
	}
	out, err := exec.Command("tshark", "-r", pcap, "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type").Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v", pcap, err)
	}
	var packets, requests int
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(l, "\t")
		if len(f) < 2 || f[0] == "" {
			continue // not IPv4 (ARP, link-local IPv6 of the veth)
		}
		packets++
		if f[0] != client.Status.PodIP && f[1] != client.Status.PodIP {
			t.Errorf("a packet neither from nor to the pod (%s): %s -> %s", client.Status.PodIP, f[0], f[1])
		}
		if len(f) > 2 && f[2] == "8" {
			requests++
		}
	}
	if requests != 3 {
		t.Errorf("captured %d echo requests of the pod, want 3 (%d IPv4 packets)", requests, packets)
	}
	t.Logf("kubectl brindle capture: %d IPv4 packets, all the pod's; %d echo requests", packets, requests)
}
