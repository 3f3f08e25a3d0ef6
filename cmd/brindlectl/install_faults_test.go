package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
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

// containerd16Versions are the config versions libcni v1.1.x accepts: the
// libcni that containerd 1.6 and 1.7 vendor (a newer cniVersion fails there
// with "unsupported CNI result version"). containerd >= 2.0 adds 1.1.0.
var containerd16Versions = []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"}

// Defect 14 (issue 12): the README's example network config and
// install-cni's default work on the runtimes users have (containerd 1.6/1.7).
func TestExampleConfigsWorkOnContainerd16(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := ""
	for _, part := range strings.Split(string(readme), "```json")[1:] {
		if b, _, ok := strings.Cut(part, "```"); ok && strings.Contains(b, `"plugins"`) {
			block = b
			break
		}
	}
	if block == "" {
		t.Fatal("README.md has no example network config")
	}
	for name, text := range map[string]string{"README.md": block, "install-cni's default": strings.ReplaceAll(defaultConflist, "__MTU__", "0")} {
		var v struct {
			CNIVersion string `json:"cniVersion"`
		}
		if err := json.Unmarshal([]byte(text), &v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Contains(containerd16Versions, v.CNIVersion) {
			t.Errorf("%s: cniVersion %q fails on containerd 1.6/1.7 (libcni v1.1 accepts %v)", name, v.CNIVersion, containerd16Versions)
		}
	}
}
