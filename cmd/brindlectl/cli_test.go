package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/internal/etcdtest"
)

// allCommands walks the command tree of one invocation.
func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, s := range c.Commands() {
		out = append(out, allCommands(s)...)
	}
	return out
}

// Every command answers --help and `help CMD` with its usage, exit 0.
func TestHelpEverywhere(t *testing.T) {
	root := newRoot(&app{ctx: context.Background(), out: io.Discard, errOut: io.Discard})
	n := 0
	for _, c := range allCommands(root) {
		path := strings.Fields(c.CommandPath())[1:]
		if len(path) == 0 || path[0] == "help" || path[0] == "__complete" {
			continue
		}
		n++
		for _, args := range [][]string{append(path, "--help"), append([]string{"help"}, path...)} {
			var out bytes.Buffer
			if err := run(args, &out); err != nil {
				t.Errorf("brindlectl %v: %v", args, err)
			}
			if !strings.Contains(out.String(), "Usage:") || !strings.Contains(out.String(), c.UseLine()) {
				t.Errorf("brindlectl %v: no usage for %q:\n%s", args, c.CommandPath(), out.String())
			}
		}
	}
	if n < 15 {
		t.Fatalf("only %d commands found", n)
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
		{[]string{"ipam", "nope"}, exitUsage, `unknown command "nope" for "brindlectl ipam"`},
		{[]string{"pool", "get", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"pool", "get", "-o", "xml"}, exitUsage, `-o "xml"`},
		{[]string{"pool", "delete"}, exitUsage, "pool delete: want one pool NAME"},
		{[]string{"pool", "apply"}, exitUsage, "-f FILE is required"},
		{[]string{"ipam", "show", "--ip", "10.0.0.999"}, exitUsage, `--ip "10.0.0.999"`},
		{[]string{"install-cni", "--mtu", "x"}, exitUsage, `--mtu "x"`},
		{[]string{"--etcd-endpoints", "http://127.0.0.1:1", "--timeout", "300ms", "pool", "get"}, exitFailure, "etcd unreachable"},
	} {
		var out, stderr bytes.Buffer
		err := runContext(context.Background(), tc.args, nil, &out, io.Discard)
		code := report(err, false, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("brindlectl %v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("brindlectl %v: wrote %q to stdout", tc.args, out.String())
		}
	}
	if code := report(errors.New("x"), true, io.Discard); code != exitInterrupted {
		t.Errorf("interrupted: exit %d", code)
	}
}

// Completion scripts for the three shells, and completion of pool names
// from etcd.
func TestCompletion(t *testing.T) {
	for sh, want := range map[string]string{"bash": "bash completion", "zsh": "#compdef brindlectl", "fish": "fish completion"} {
		var out bytes.Buffer
		if err := run([]string{"completion", sh}, &out); err != nil || !strings.Contains(out.String(), want) {
			t.Errorf("completion %s: %v %.80q", sh, err, out.String())
		}
	}
	s := etcdtest.Start(t)
	f := filepath.Join(t.TempDir(), "pools.yaml")
	os.WriteFile(f, []byte(poolsYAML), 0o644)
	mustCtl(t, s.Endpoint, "pool", "apply", "-f", f)
	out := mustCtl(t, s.Endpoint, "__complete", "pool", "delete", "")
	if !strings.Contains(out, "default\n") || !strings.Contains(out, "v6\n") {
		t.Errorf("pool name completion:\n%s", out)
	}
	out = mustCtl(t, s.Endpoint, "__complete", "pool", "get", "-o", "")
	if !strings.Contains(out, "wide\n") || !strings.Contains(out, "yaml\n") {
		t.Errorf("-o completion:\n%s", out)
	}
}

// -o json, yaml and wide give the same data as the table.
func TestOutputFormats(t *testing.T) {
	s := etcdtest.Start(t)
	ep := s.Endpoint
	f := filepath.Join(t.TempDir(), "pools.yaml")
	os.WriteFile(f, []byte(poolsYAML), 0o644)
	mustCtl(t, ep, "pool", "apply", "-f", f)
	if _, err := s.Client.Put(t.Context(), "/brindle/v1/nodes/n1", `{"v":1,"name":"n1","ipv4Address":"192.0.2.1/24","tunnelIPv4":"10.244.0.1"}`); err != nil {
		t.Fatal(err)
	}
	narrow, wide := mustCtl(t, ep, "pool", "get"), mustCtl(t, ep, "pool", "get", "-o", "wide")
	if strings.Contains(narrow, "API VERSION") || !strings.Contains(wide, "API VERSION") || !strings.Contains(wide, "brindle.net/v1") {
		t.Errorf("wide columns:\n%s\n%s", narrow, wide)
	}
	if w := mustCtl(t, ep, "node", "list", "-o", "wide"); !strings.Contains(w, "TUNNEL IP") || !strings.Contains(w, "10.244.0.1") {
		t.Errorf("node list -o wide:\n%s", w)
	}
	var nodes []nodeRow
	if err := yaml.Unmarshal([]byte(mustCtl(t, ep, "node", "list", "-o", "yaml")), &nodes); err != nil || len(nodes) != 1 || nodes[0].IPv4Address != "192.0.2.1/24" {
		t.Errorf("node list -o yaml: %+v %v", nodes, err)
	}
	var usage struct {
		Pools []struct {
			Name string `json:"name"`
		} `json:"pools"`
	}
	if err := yaml.Unmarshal([]byte(mustCtl(t, ep, "ipam", "show", "-o", "yaml")), &usage); err != nil || len(usage.Pools) != 2 {
		t.Errorf("ipam show -o yaml: %+v %v", usage, err)
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(mustCtl(t, ep, "ipam", "config", "-o", "json")), &cfg); err != nil || cfg["strictAffinity"] != false {
		t.Errorf("ipam config -o json: %v %v", cfg, err)
	}
	if out := mustCtl(t, ep, "bgp", "get", "-o", "table"); !strings.Contains(out, "PEER") {
		t.Errorf("bgp get -o table:\n%s", out)
	}
}
