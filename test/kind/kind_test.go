// Package kind holds the kind cluster config and the conformance script
// (run-conformance.sh); they need Docker, so this test checks only what
// can be checked without it.
package kind

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/conf"
)

// cluster mirrors the fields of kind's v1alpha4 Cluster
// (sigs.k8s.io/kind/pkg/apis/config/v1alpha4) that kind-config.yaml uses,
// with the same JSON names: decoded strictly, a field kind does not have,
// or a misspelt one, fails here as it would in `kind create cluster`.
type cluster struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Name       string `json:"name"`
	Networking struct {
		DisableDefaultCNI bool   `json:"disableDefaultCNI"`
		PodSubnet         string `json:"podSubnet"`
		ServiceSubnet     string `json:"serviceSubnet"`
		KubeProxyMode     string `json:"kubeProxyMode"`
	} `json:"networking"`
	Nodes []struct {
		Role  string `json:"role"`
		Image string `json:"image"`
	} `json:"nodes"`
}

func decodeStrict(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("%v", strict)
	}
	return nil
}

// manifestDoc returns the document of a conf/k8s file that has this name.
func manifestDoc(t *testing.T, file, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile("../../conf/k8s/" + file)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if md, _ := m["metadata"].(map[string]any); md != nil && md["name"] == name {
			return m
		}
	}
	t.Fatalf("%s: no document named %s", file, name)
	return nil
}

func TestKindConfig(t *testing.T) {
	var c cluster
	if err := decodeStrict("kind-config.yaml", &c); err != nil {
		t.Fatalf("kind-config.yaml: %v", err)
	}
	if c.Kind != "Cluster" || c.APIVersion != "kind.x-k8s.io/v1alpha4" {
		t.Errorf("kind %q apiVersion %q", c.Kind, c.APIVersion)
	}
	if !c.Networking.DisableDefaultCNI {
		t.Error("disableDefaultCNI is off: kindnet would be installed next to brindle")
	}
	workers := 0
	for _, n := range c.Nodes {
		switch n.Role {
		case "worker":
			workers++
		case "control-plane":
		default:
			t.Errorf("node role %q", n.Role)
		}
	}
	if workers < 2 {
		t.Errorf("%d workers: pod-to-pod across nodes needs at least 2", workers)
	}

	// podSubnet is the pool the install applies.
	cm := manifestDoc(t, "10-config.yaml", "brindle-ippools")
	pools, err := conf.ParseIPPools([]byte(cm["data"].(map[string]any)["ippools.yaml"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	if pools[0].Spec.CIDR != c.Networking.PodSubnet {
		t.Errorf("podSubnet %s, IPPool %s %s", c.Networking.PodSubnet, pools[0].Metadata.Name, pools[0].Spec.CIDR)
	}
	// The optional etcd's fixed ClusterIP lies in the service subnet.
	svc := manifestDoc(t, "etcd/etcd.yaml", "brindle-etcd")
	ip := netip.MustParseAddr(svc["spec"].(map[string]any)["clusterIP"].(string))
	if !netip.MustParsePrefix(c.Networking.ServiceSubnet).Contains(ip) {
		t.Errorf("etcd's ClusterIP %s is outside serviceSubnet %s", ip, c.Networking.ServiceSubnet)
	}
	ep := manifestDoc(t, "10-config.yaml", "brindle-config")["data"].(map[string]any)["etcd_endpoints"].(string)
	if u, err := url.Parse(ep); err != nil || u.Hostname() != ip.String() {
		t.Errorf("etcd_endpoints %s does not name the etcd Service %s", ep, ip)
	}
}

func TestConformanceScript(t *testing.T) {
	if out, err := exec.Command("bash", "-n", "run-conformance.sh").CombinedOutput(); err != nil {
		t.Fatalf("bash -n run-conformance.sh: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Log("shellcheck is not installed; only bash -n was run (apt-get install shellcheck)")
	} else if out, err := exec.Command("shellcheck", "run-conformance.sh").CombinedOutput(); err != nil {
		t.Errorf("shellcheck run-conformance.sh: %v\n%s", err, out)
	}
	fi, err := os.Stat("run-conformance.sh")
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("run-conformance.sh is not executable: %v", err)
	}
	script, _ := os.ReadFile("run-conformance.sh")
	// What the script names exists.
	for _, ref := range []string{"kind-config.yaml", "conf/k8s/00-namespace.yaml", "conf/k8s/etcd/", "ghcr.io/brindle-net/brindle:dev"} {
		if !strings.Contains(string(script), ref) {
			t.Errorf("run-conformance.sh does not mention %s", ref)
		}
	}
	ds, _ := os.ReadFile("../../conf/k8s/30-daemonset.yaml")
	if !strings.Contains(string(ds), "image: ghcr.io/brindle-net/brindle:dev") {
		t.Error("the DaemonSet's image is not the one the script builds and loads")
	}
	// An unknown step is refused before anything runs.
	cmd := exec.Command("./run-conformance.sh", "nosuchstep")
	cmd.Env = append(os.Environ(), "USE_KIND=0")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "unknown step nosuchstep") {
		t.Errorf("run-conformance.sh nosuchstep: %v\n%s", err, out)
	}
}
