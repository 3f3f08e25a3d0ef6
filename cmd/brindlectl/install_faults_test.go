package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Defect 11 (issue 12): a TLS directory left by an earlier install with a
// loose mode gets brindle's mode (0700), not just new files inside it.
func TestInstallCNITLSDirMode(t *testing.T) {
	d := newInstallDirs(t)
	pki := t.TempDir()
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		os.WriteFile(filepath.Join(pki, f), []byte("pem "+f), 0o400)
	}
	dir := filepath.Join(d.net, "brindle-tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	var out bytes.Buffer
	err := run(append([]string{"--etcd-endpoints", "https://10.0.0.1:2379",
		"--etcd-ca-cert-file", filepath.Join(pki, "ca.crt"),
		"--etcd-cert-file", filepath.Join(pki, "tls.crt"),
		"--etcd-key-file", filepath.Join(pki, "tls.key"),
	}, d.args()...), &out)
	if err != nil {
		t.Fatalf("install-cni: %v\n%s", err, out.String())
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: mode %v, want 0700", dir, fi.Mode().Perm())
	}
}

// Defect 11 (issue 12): http:// endpoints with certificate files set would
// send etcd traffic in plaintext though TLS was asked for: refused.
func TestInstallCNIRefusesPlaintextWithCerts(t *testing.T) {
	d := newInstallDirs(t)
	pki := t.TempDir()
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		os.WriteFile(filepath.Join(pki, f), []byte("pem "+f), 0o400)
	}
	var out bytes.Buffer
	err := run(append([]string{"--etcd-endpoints", "http://10.0.0.1:2379",
		"--etcd-ca-cert-file", filepath.Join(pki, "ca.crt"),
	}, d.args()...), &out)
	if err == nil || !strings.Contains(err.Error(), "http://10.0.0.1:2379") {
		t.Fatalf("want a refusal naming the endpoint, got %v\n%s", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(d.net, "10-brindle.conflist")); err == nil {
		t.Error("a config was written anyway")
	}
}
