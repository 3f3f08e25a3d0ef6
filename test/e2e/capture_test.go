package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/test/lab"
)

// pki writes a CA, one server certificate naming the given addresses and a
// client certificate, as PEM files in dir.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T, dir string, ips ...netip.Addr) pki {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "brindle node API CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(k)
		return der, kder
	}
	var nips []net.IP
	for _, ip := range ips {
		nips = append(nips, ip.AsSlice())
	}
	sc, sk := leaf(2, "brindle-node", x509.ExtKeyUsageServerAuth, nips)
	cc, ck := leaf(3, "operator", x509.ExtKeyUsageClientAuth, nil)
	return pki{ca: write("ca.crt", "CERTIFICATE", caDER),
		serverCert: write("server.crt", "CERTIFICATE", sc), serverKey: write("server.key", "EC PRIVATE KEY", sk),
		clientCert: write("client.crt", "CERTIFICATE", cc), clientKey: write("client.key", "EC PRIVATE KEY", ck)}
}

// serveHTTP serves "hello" on port 8080 of a pod until the test ends.
func serveHTTP(t *testing.T, p *lab.Pod) {
	t.Helper()
	var ln net.Listener
	if err := p.NS.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(p.Addr.String(), "8080"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello from", p.Name) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// ctlCmd is brindlectl on node n with the node API flags of this lab.
func ctlCmd(t *testing.T, l *lab.Lab, n *lab.Node, k pki, args ...string) *exec.Cmd {
	binDir := testenv.BinDir(t)
	base := []string{filepath.Join(binDir, "brindlectl"), "--etcd-endpoints", l.EtcdURL}
	cmd := exec.Command(base[0], append(base[1:], args...)...)
	cmd.Env = append(os.Environ(), "BRINDLE_NODEAPI_SOCKET="+n.NodeAPISocket(),
		"BRINDLE_NODEAPI_CA="+k.ca, "BRINDLE_NODEAPI_CERT="+k.clientCert, "BRINDLE_NODEAPI_KEY="+k.clientKey)
	return cmd
}

// startCapture starts brindlectl capture on node n and waits until the
// pcap header is in the file (the capture runs on the pod's node).
func startCapture(t *testing.T, l *lab.Lab, n *lab.Node, k pki, file string, args ...string) (wait func() (string, error), cmd *exec.Cmd) {
	t.Helper()
	cmd = ctlCmd(t, l, n, k, append([]string{"capture", "-o", file}, args...)...)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done, err := testenv.StartIn(n.NS, cmd)
	if err != nil {
		t.Fatal(err)
	}
	// Generous: on a loaded machine the CLI, the node API and the
	// sockets of every interface can take a while; the capture is live
	// once the header is written (all sources are open by then).
	deadline := time.Now().Add(60 * time.Second)
	for {
		if fi, err := os.Stat(file); err == nil && fi.Size() >= 24 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("brindlectl capture %v ended before capturing: %v\n%s", args, err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("brindlectl capture %v: no pcap header after 60s\n%s", args, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() (string, error) {
		select {
		case err := <-done:
			return stderr.String(), err
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			return stderr.String(), fmt.Errorf("brindlectl capture %v did not end", args)
		}
	}, cmd
}

// interrupt ends a capture started with a long --duration the way Ctrl-C
// does, once the traffic it should hold has been sent (a second for the
// last packets to reach the file), and returns what wait returns. Tests
// that are not about the duration limit end captures this way, so that a
// slow machine cannot end them before the traffic.
func interrupt(cmd *exec.Cmd, wait func() (string, error)) (string, error) {
	time.Sleep(time.Second)
	_ = cmd.Process.Signal(os.Interrupt)
	return wait()
}

// lockedBuffer is a bytes.Buffer safe to read while a process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tsharkFields reads a capture file with tshark and returns one line per
// packet of the given fields (tab-separated).
func tsharkFields(t *testing.T, file, display string, fields ...string) []string {
	t.Helper()
	args := []string{"-r", file, "-T", "fields"}
	if display != "" {
		args = append(args, "-Y", display)
	}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("tshark", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %v: %v\n%s", args, err, stderr.String())
	}
	s := strings.TrimRight(string(out), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func run(t *testing.T, n ns.NetNS, args ...string) string {
	t.Helper()
	out, err := lab.Run(n, args...)
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return out
}
