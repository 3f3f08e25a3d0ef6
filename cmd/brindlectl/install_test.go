package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/conf"
)

// installDirs is a fake host: the image's binaries, /opt/cni/bin,
// /etc/cni/net.d and /var/lib/brindle, all under one temp dir.
type installDirs struct {
	src, bin, net, nodename string
}

func newInstallDirs(t *testing.T) installDirs {
	t.Helper()
	root := t.TempDir()
	d := installDirs{
		src:      filepath.Join(root, "usr/local/bin"),
		bin:      filepath.Join(root, "opt/cni/bin"),
		net:      filepath.Join(root, "etc/cni/net.d"),
		nodename: filepath.Join(root, "var/lib/brindle/nodename"),
	}
	os.MkdirAll(d.src, 0o755)
	for _, b := range []string{"brindle", "brindle-ipam", "portmap"} {
		if err := os.WriteFile(filepath.Join(d.src, b), []byte("#!binary "+b+" v2\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (d installDirs) args(extra ...string) []string {
	return append([]string{"install-cni", "--source-dir", d.src, "--bin-dir", d.bin, "--net-dir", d.net, "--nodename-file", d.nodename}, extra...)
}

// readConflist reads the written config and parses its brindle plugin the
// way the plugins do.
func readConflist(t *testing.T, path string) (*conf.NetConf, *conf.IPAMNetConf) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, data)
	}
	var p map[string]any
	json.Unmarshal(list.Plugins[0], &p)
	p["name"], p["cniVersion"] = list.Name, list.CNIVersion
	one, _ := json.Marshal(p)
	nc, err := conf.ParseNetConf(one)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := conf.LoadIPAMNetConf(one, nil)
	if err != nil {
		t.Fatal(err)
	}
	return nc, ic
}

// noTempFiles checks that no temporary file was left behind.
func noTempFiles(t *testing.T, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".tmp") {
				t.Errorf("temporary file %s left in %s", e.Name(), dir)
			}
		}
	}
}

func TestInstallCNI(t *testing.T) {
	d := newInstallDirs(t)
	pki := t.TempDir()
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		os.WriteFile(filepath.Join(pki, f), []byte("pem "+f), 0o400)
	}
	var out bytes.Buffer
	err := run(append([]string{
		"--etcd-endpoints", "https://10.0.0.1:2379,https://10.0.0.2:2379",
		"--etcd-ca-cert-file", filepath.Join(pki, "ca.crt"),
		"--etcd-cert-file", filepath.Join(pki, "tls.crt"),
		"--etcd-key-file", filepath.Join(pki, "tls.key"),
	}, d.args("--binaries", "brindle,brindle-ipam,portmap", "--mtu", "1450", "--nodename", "node-a", "--log-level", "debug")...), &out)
	if err != nil {
		t.Fatalf("install-cni: %v\n%s", err, out.String())
	}
	for _, b := range []string{"brindle", "brindle-ipam", "portmap"} {
		fi, err := os.Stat(filepath.Join(d.bin, b))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", b, fi.Mode())
		}
		if got, _ := os.ReadFile(filepath.Join(d.bin, b)); string(got) != "#!binary "+b+" v2\n" {
			t.Errorf("%s: content %q", b, got)
		}
	}
	nc, ic := readConflist(t, filepath.Join(d.net, "10-brindle.conflist"))
	if nc.MTU != 1450 || nc.LogLevel != "debug" || nc.LogFile != conf.DefaultLogFile {
		t.Errorf("mtu %d, logLevel %q, logFile %q", nc.MTU, nc.LogLevel, nc.LogFile)
	}
	if got := strings.Join(ic.IPAM.Etcd.Endpoints, ","); got != "https://10.0.0.1:2379,https://10.0.0.2:2379" {
		t.Errorf("etcd endpoints %q", got)
	}
	if ic.IPAM.NodenameFile != d.nodename {
		t.Errorf("nodename_file %q, want %q", ic.IPAM.NodenameFile, d.nodename)
	}
	// The TLS files are copied next to the config, readable by root only,
	// and the config names the copies.
	for got, src := range map[string]string{ic.IPAM.Etcd.CACertFile: "ca.crt", ic.IPAM.Etcd.CertFile: "tls.crt", ic.IPAM.Etcd.KeyFile: "tls.key"} {
		if filepath.Dir(got) != filepath.Join(d.net, "brindle-tls") {
			t.Errorf("tls file %q is not in %s/brindle-tls", got, d.net)
		}
		b, err := os.ReadFile(got)
		if err != nil || string(b) != "pem "+src {
			t.Errorf("%s: %q %v", got, b, err)
		}
		if fi, _ := os.Stat(got); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", got, fi.Mode())
		}
	}
	if b, _ := os.ReadFile(d.nodename); string(b) != "node-a\n" {
		t.Errorf("nodename file %q", b)
	}
	noTempFiles(t, d.bin, d.net, filepath.Join(d.net, "brindle-tls"))
}

// A second install replaces binaries and config by rename: a process that
// has the old binary open (running) keeps its inode and old content.
func TestInstallCNIReplacesAtomically(t *testing.T) {
	d := newInstallDirs(t)
	os.MkdirAll(d.bin, 0o755)
	os.MkdirAll(d.net, 0o755)
	old := filepath.Join(d.bin, "brindle")
	os.WriteFile(old, []byte("old brindle\n"), 0o755)
	os.WriteFile(filepath.Join(d.net, "10-brindle.conflist"), []byte("{ broken"), 0o644)
	running, err := os.Open(old)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	var out bytes.Buffer
	if err := run(append([]string{"--etcd-endpoints", "http://10.96.232.136:6666"}, d.args()...), &out); err != nil {
		t.Fatalf("install-cni: %v\n%s", err, out.String())
	}
	var buf [64]byte
	n, _ := running.Read(buf[:])
	if string(buf[:n]) != "old brindle\n" {
		t.Errorf("the old binary's open file now reads %q: it was overwritten in place", buf[:n])
	}
	if b, _ := os.ReadFile(old); string(b) != "#!binary brindle v2\n" {
		t.Errorf("new binary %q", b)
	}
	nc, ic := readConflist(t, filepath.Join(d.net, "10-brindle.conflist"))
	if nc.MTU != 0 || ic.IPAM.Etcd.CACertFile != "" || ic.IPAM.Etcd.Endpoints[0] != "http://10.96.232.136:6666" {
		t.Errorf("defaults: mtu %d, ca %q, endpoints %v", nc.MTU, ic.IPAM.Etcd.CACertFile, ic.IPAM.Etcd.Endpoints)
	}
	if _, err := os.Stat(filepath.Join(d.bin, "portmap")); err == nil {
		t.Error("portmap installed without being asked for")
	}
	noTempFiles(t, d.bin, d.net)
}

// Bad input is refused before anything is written.
func TestInstallCNIRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"endpoint without scheme", []string{"--etcd-endpoints", "10.0.0.1:2379"}, nil, "etcd_endpoints"},
		{"cert without key", []string{"--etcd-endpoints", "https://e:2379", "--etcd-cert-file", "/x.crt"}, nil, "etcd_key_file"},
		{"mtu out of range", []string{"--etcd-endpoints", "http://e:2379", "install-cni", "--mtu", "20"}, nil, "mtu"},
		{"bad log level", []string{"--etcd-endpoints", "http://e:2379", "install-cni", "--log-level", "loud"}, nil, "logLevel"},
		{"missing binary", []string{"--etcd-endpoints", "http://e:2379", "install-cni", "--binaries", "brindle,bandwidth"}, nil, "bandwidth not found"},
		{"template not JSON", []string{"--etcd-endpoints", "http://e:2379"}, map[string]string{"CNI_NETWORK_CONFIG": `{"plugins": [`}, "rendered network config"},
		{"brindle not first", []string{"--etcd-endpoints", "http://e:2379"}, map[string]string{"CNI_NETWORK_CONFIG": `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"portmap"},{"type":"brindle","ipam":{"type":"host-local"}}]}`}, "plugins[0].type"},
		{"unsupported cniVersion", []string{"--etcd-endpoints", "http://e:2379"}, map[string]string{"CNI_NETWORK_CONFIG": `{"cniVersion":"2.0.0","name":"n","plugins":[{"type":"brindle","ipam":{"type":"host-local"}}]}`}, "cniVersion"},
		{"ipam missing", []string{"--etcd-endpoints", "http://e:2379"}, map[string]string{"CNI_NETWORK_CONFIG": `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"brindle"}]}`}, "ipam.type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			d := newInstallDirs(t)
			args := tc.args
			if i := indexOf(args, "install-cni"); i >= 0 {
				args = append(append(args[:i:i], d.args()...), args[i+1:]...)
			} else {
				args = append(args, d.args()...)
			}
			var out bytes.Buffer
			err := run(args, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %q", err, tc.want)
			}
			for _, dir := range []string{d.bin, d.net, filepath.Dir(d.nodename)} {
				if _, err := os.Stat(dir); err == nil {
					t.Errorf("%s was created although the install was refused", dir)
				}
			}
		})
	}
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

// The template the DaemonSet gives the installer (from the ConfigMap in
// conf/k8s) installs, and a config that sorts before it is reported.
func TestInstallCNIManifestTemplate(t *testing.T) {
	data, err := os.ReadFile("../../conf/k8s/10-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal([]byte(strings.Split(string(data), "\n---\n")[0]), &cm); err != nil {
		t.Fatal(err)
	}
	tmpl := cm.Data["cni_network_config"]
	if !strings.Contains(tmpl, "__ETCD_ENDPOINTS__") {
		t.Fatalf("no template in brindle-config: %v", cm.Data)
	}
	t.Setenv("CNI_NETWORK_CONFIG", tmpl)
	t.Setenv("CNI_MTU", cm.Data["veth_mtu"])
	d := newInstallDirs(t)
	os.MkdirAll(d.net, 0o755)
	os.WriteFile(filepath.Join(d.net, "05-other.conflist"), []byte("{}"), 0o644)
	var out bytes.Buffer
	if err := run(append([]string{"--etcd-endpoints", cm.Data["etcd_endpoints"]}, d.args("--binaries", "brindle,brindle-ipam,portmap")...), &out); err != nil {
		t.Fatalf("install-cni: %v\n%s", err, out.String())
	}
	_, ic := readConflist(t, filepath.Join(d.net, "10-brindle.conflist"))
	if ic.IPAM.Etcd.Endpoints[0] != cm.Data["etcd_endpoints"] {
		t.Errorf("endpoints %v", ic.IPAM.Etcd.Endpoints)
	}
	written, _ := os.ReadFile(filepath.Join(d.net, "10-brindle.conflist"))
	if !strings.Contains(string(written), `"portmap"`) || strings.Contains(string(written), "__") {
		t.Errorf("written config:\n%s", written)
	}
	if !strings.Contains(out.String(), "warning: 05-other.conflist sorts before 10-brindle.conflist") {
		t.Errorf("no warning about 05-other.conflist:\n%s", out.String())
	}
}
