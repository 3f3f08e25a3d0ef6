package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brindle-net/brindle/internal/testenv"
)

// kubectlBinary finds a real kubectl: on PATH, or the test cluster's build.
func kubectlBinary(t *testing.T) string {
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	p := "/var/cache/brindle-k8s/v1.34.4/bin/kubectl"
	if _, err := os.Stat(p); err != nil {
		t.Skip("no kubectl on PATH or in /var/cache/brindle-k8s (test/k8s/build.sh builds it)")
	}
	return p
}

// The real kubectl finds brindlectl installed as kubectl-brindle, runs it
// as `kubectl brindle`, and completes through kubectl_complete-brindle.
func TestKubectlPlugin(t *testing.T) {
	kubectl := kubectlBinary(t)
	dir := t.TempDir()
	inst := exec.Command(filepath.Join(testenv.BinDir(t), "brindlectl"), "install-kubectl-plugin", "--dir", dir)
	if out, err := inst.CombinedOutput(); err != nil || !strings.Contains(string(out), "installed "+dir+"/kubectl-brindle") {
		t.Fatalf("install-kubectl-plugin: %v\n%s", err, out)
	}
	env := append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "KUBECONFIG="+filepath.Join(dir, "none"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"plugin", "list"}, filepath.Join(dir, "kubectl-brindle")},
		{[]string{"brindle", "--help"}, "kubectl brindle [command]"},
		{[]string{"brindle", "capture", "--help"}, "kubectl brindle capture NAMESPACE/POD"},
		{[]string{"__complete", "brindle", "ipa"}, "ipam"},
	} {
		cmd := exec.Command(kubectl, tc.args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("kubectl %v: %v, want %q in:\n%s", tc.args, err, tc.want, out)
		}
	}
}

// As the plugin without etcd settings, an etcd command runs in a
// brindle-node pod through kubectl exec; a file given with -f goes as
// stdin, and the remote exit code is ours. (A kubectl stand-in records
// what it was asked: the logic under test is brindlectl's.)
func TestPluginRunsInCluster(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "kubectl")
	script := `#!/bin/sh
case "$*" in
*"get pods"*) echo brindle-node-x7k ;;
*exec*) echo "$*" > ` + dir + `/args; cat > ` + dir + `/stdin; echo remote-output; exit 3 ;;
esac
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BRINDLE_KUBECTL", fake)
	t.Setenv("ETCD_ENDPOINTS", "")
	pools := filepath.Join(dir, "pools.yaml")
	os.WriteFile(pools, []byte(poolsYAML), 0o644)
	var out bytes.Buffer
	a := &app{ctx: context.Background(), in: strings.NewReader(""), out: &out, errOut: io.Discard, argv0: "/usr/local/bin/kubectl-brindle",
		args: []string{"pool", "apply", "-f", pools}}
	root := newRoot(a)
	root.SetArgs(a.args)
	err := classify(root.ExecuteContext(a.ctx))
	if code := report(err, false, io.Discard); code != 3 {
		t.Errorf("exit %d (%v), want the remote 3", code, err)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	stdin, _ := os.ReadFile(filepath.Join(dir, "stdin"))
	if !strings.Contains(string(args), "-n brindle-system exec -i brindle-node-x7k -c brindled -- brindlectl pool apply -f -") || string(stdin) != poolsYAML {
		t.Errorf("exec args %q, stdin %q", args, stdin)
	}
	if out.String() != "remote-output\n" {
		t.Errorf("stdout %q", out.String())
	}
	// With etcd given, nothing runs in the cluster.
	a = &app{ctx: context.Background(), out: io.Discard, errOut: io.Discard, argv0: "kubectl-brindle"}
	root = newRoot(a)
	root.SetArgs([]string{"--etcd-endpoints", "http://127.0.0.1:1", "--timeout", "200ms", "pool", "get"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "etcd unreachable") {
		t.Errorf("with --etcd-endpoints: %v", err)
	}
}
