package conf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadIPAMNetConfDefaultsAndEnv(t *testing.T) {
	n, err := LoadIPAMNetConf([]byte(`{"cniVersion":"1.0.0","name":"k8s","type":"brindle",
		"ipam":{"type":"brindle-ipam"},
		"runtimeConfig":{"ips":["10.0.0.5/32"]},
		"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}`),
		envMap(map[string]string{"ETCD_ENDPOINTS": "https://10.0.0.1:2379, https://10.0.0.2:2379", "ETCD_CA_CERT_FILE": "/ca.pem"}))
	if err != nil {
		t.Fatal(err)
	}
	c := n.IPAM
	if strings.Join(c.Etcd.Endpoints, ",") != "https://10.0.0.1:2379,https://10.0.0.2:2379" || c.Etcd.CACertFile != "/ca.pem" {
		t.Errorf("env not applied: %+v", c.Etcd)
	}
	if !c.AssignIPv4 || c.AssignIPv6 || c.Timeout != DefaultIPAMTimeout || c.NodenameFile != DefaultNodenameFile {
		t.Errorf("defaults not applied: %+v", c)
	}
	if len(n.RuntimeIPs) != 1 || len(n.ValidAttachments) != 1 || n.ValidAttachments[0].ContainerID != "c1" {
		t.Errorf("runtime config lost: %+v %+v", n.RuntimeIPs, n.ValidAttachments)
	}
}

func TestLoadIPAMNetConfConfigWinsOverEnv(t *testing.T) {
	n, err := LoadIPAMNetConf([]byte(`{"cniVersion":"1.0.0","name":"k8s","type":"brindle","nodename":"top",
		"ipam":{"type":"brindle-ipam","etcd_endpoints":"http://127.0.0.1:1","assign_ipv6":true,"assign_ipv4":false,"timeout_seconds":2.5,"ipv6_pools":["v6"]}}`),
		envMap(map[string]string{"ETCD_ENDPOINTS": "http://10.0.0.1:2379"}))
	if err != nil {
		t.Fatal(err)
	}
	c := n.IPAM
	if c.Etcd.Endpoints[0] != "http://127.0.0.1:1" || c.AssignIPv4 || !c.AssignIPv6 || c.Timeout != 2500*time.Millisecond || c.Nodename != "top" {
		t.Errorf("config not applied: %+v", c)
	}
}

func TestIPAMConfigErrorsNameField(t *testing.T) {
	for _, tc := range []struct{ ipam, want string }{
		{`{}`, "ipam.etcd_endpoints: empty"},
		{`{"etcd_endpoints":"10.0.0.1:2379"}`, `ipam.etcd_endpoints "10.0.0.1:2379"`},
		{`{"etcd_endpoints":"https://a:1","etcd_cert_file":"/c"}`, `ipam.etcd_cert_file "/c"`},
		{`{"etcd_endpoints":"http://a:1","assign_ipv4":false}`, "ipam.assign_ipv4 and ipam.assign_ipv6"},
		{`{"etcd_endpoints":"http://a:1","timeout_seconds":0}`, "ipam.timeout_seconds 0"},
		{`{"etcd_endpoints":"http://a:1","ipv4_pools":["Bad Pool"]}`, `"Bad Pool"`},
	} {
		_, err := LoadIPAMNetConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"t","ipam":`+tc.ipam+`}`), envMap(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ipam %s: want error containing %q, got %v", tc.ipam, tc.want, err)
		}
	}
}

func TestNodeName(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "nodename")
	c := &IPAMConfig{NodenameFile: f}
	if err := os.WriteFile(f, []byte("node-a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, _, err := c.NodeName(envMap(nil)); err != nil || n != "node-a" {
		t.Errorf("from file: %q %v", n, err)
	}
	c.Nodename = "explicit"
	if n, _, _ := c.NodeName(envMap(nil)); n != "explicit" {
		t.Errorf("config must win: %q", n)
	}
	c = &IPAMConfig{NodenameFile: filepath.Join(dir, "missing"), NodenameFileOptional: true}
	if n, from, _ := c.NodeName(envMap(map[string]string{"NODENAME": "env-node"})); n != "env-node" || !strings.Contains(from, "missing") {
		t.Errorf("env fallback: %q (%s)", n, from)
	}
	if n, from, err := c.NodeName(envMap(nil)); err != nil || n == "" || !strings.HasPrefix(from, "hostname") {
		t.Errorf("hostname fallback: %q (%s) %v", n, from, err)
	}
}

// Defect 12: a missing nodename file must not silently become the hostname
// (brindle-ipam would claim blocks for a node that does not exist).
func TestNodeNameMissingFileRefused(t *testing.T) {
	f := filepath.Join(t.TempDir(), "nodename")
	c := &IPAMConfig{NodenameFile: f}
	n, _, err := c.NodeName(envMap(map[string]string{"NODENAME": "env-node"}))
	if err == nil || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "brindled") {
		t.Fatalf("missing %s: want an error naming the file and brindled, got %q, %v", f, n, err)
	}
}

// Defect 11: http:// endpoints with certificate files set are refused (the
// plugin would otherwise talk to etcd in plaintext though TLS was asked for).
func TestIPAMConfigRefusesPlaintextWithCerts(t *testing.T) {
	for _, extra := range []string{`"etcd_ca_cert_file":"/ca.crt"`, `"etcd_cert_file":"/c.crt","etcd_key_file":"/c.key"`} {
		_, err := LoadIPAMNetConf([]byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"brindle-ipam",
			"etcd_endpoints":"https://10.0.0.1:2379,http://10.0.0.2:2379",`+extra+`}}`), nil)
		if err == nil || !strings.Contains(err.Error(), "http://10.0.0.2:2379") {
			t.Errorf("%s: want a refusal naming the http endpoint, got %v", extra, err)
		}
	}
}
