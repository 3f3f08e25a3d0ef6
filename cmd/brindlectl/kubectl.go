package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// As a kubectl plugin (the binary installed as kubectl-brindle, run as
// `kubectl brindle ...`), brindlectl usually runs where etcd cannot be
// reached. Then a command that reads etcd runs itself inside a brindle-node
// pod, whose brindled container has the etcd endpoints and TLS files, by
// `kubectl exec` (Kubernetes authenticates and authorizes it: pods/exec in
// brindle-system). Capture needs no etcd: it reaches the pod's node's
// brindled through `kubectl exec ... brindlectl node-proxy` directly.

// pluginName is the name brindlectl is run under when kubectl runs it.
const pluginName = "kubectl-brindle"

// isPlugin reports whether this process is the kubectl plugin.
func (a *app) isPlugin() bool {
	return strings.HasPrefix(filepath.Base(a.argv0), pluginName)
}

// etcdInCluster reports whether etcd commands should run in the cluster:
// as the plugin, with no etcd endpoints given by flag or environment.
func (a *app) etcdInCluster() bool {
	return a.isPlugin() && !a.etcdFlagSet && os.Getenv("ETCD_ENDPOINTS") == ""
}

// errRanInCluster carries the exit code of a command run in a brindle-node
// pod; its output has gone to ours already.
type errRanInCluster struct{ code int }

func (e errRanInCluster) Error() string {
	return fmt.Sprintf("in-cluster brindlectl exited with status %d", e.code)
}

// runInCluster runs this command line in a brindle-node pod.
func (a *app) runInCluster(args []string) error { return a.runInClusterTo(args, a.out) }

// runInClusterTo runs a brindlectl command line in a brindle-node pod, its
// stdout to stdout; a failure is an
// errRanInCluster with its exit code, and success nil.
func (a *app) runInClusterTo(args []string, stdout io.Writer) error {
	kubectl := getenv("BRINDLE_KUBECTL", "kubectl")
	ns := "brindle-system"
	sel := "status.phase=Running"
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	out, err := exec.CommandContext(ctx, kubectl, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/name=brindle-node",
		"--field-selector", sel, "-o", "jsonpath={.items[0].metadata.name}").Output()
	cancel()
	pod := strings.TrimSpace(string(out))
	if err != nil || pod == "" {
		var ee *exec.ExitError
		msg := ""
		if errors.As(err, &ee) {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return fmt.Errorf("no running brindle-node pod in %s to run this in (give --etcd-endpoints to use etcd directly): %v %s", ns, err, msg)
	}
	// A file named by -f is here, not in the pod: send it as stdin.
	args = slices.Clone(args)
	in := a.in
	for i, arg := range args {
		file, ok := "", false
		switch {
		case (arg == "-f" || arg == "--filename") && i+1 < len(args):
			file, ok = args[i+1], true
			if file != "-" {
				args[i+1] = "-"
			}
		case strings.HasPrefix(arg, "--filename="), strings.HasPrefix(arg, "-f="):
			_, file, _ = strings.Cut(arg, "=")
			ok = true
			if file != "-" {
				args[i] = "-f=-"
			}
		}
		if ok && file != "-" {
			b, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("read %s: %w", file, err)
			}
			in = bytes.NewReader(b)
		}
	}
	cmd := exec.CommandContext(a.ctx, kubectl, append([]string{"-n", ns, "exec", "-i", pod, "-c", "brindled", "--", "brindlectl"}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, stdout, a.errOut
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return errRanInCluster{ee.ExitCode()}
		}
		return fmt.Errorf("%s exec: %w", kubectl, err)
	}
	return nil
}

// completeScript is kubectl_complete-brindle, which kubectl (>= 1.26) runs
// to complete `kubectl brindle ...` (make install-kubectl-plugin installs it).
const completeScript = `#!/bin/sh
exec kubectl-brindle __complete "$@"
`

func init() { register("", newInstallPluginCmd) }

// newInstallPluginCmd installs this binary as kubectl's brindle plugin.
func newInstallPluginCmd(a *app) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "install-kubectl-plugin [--dir DIR]",
		Short: "install this brindlectl as the kubectl plugin: `kubectl brindle ...`, with completion",
		Long: "Copy this binary to DIR/kubectl-brindle and write DIR/kubectl_complete-brindle, which\n" +
			"kubectl (1.26 and later) runs to complete `kubectl brindle ...`. DIR must be on PATH.",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			dst := filepath.Join(dir, pluginName)
			if err := copyAtomic(self, dst, 0o755); err != nil {
				return fmt.Errorf("install %s: %w", dst, err)
			}
			comp := filepath.Join(dir, "kubectl_complete-brindle")
			if err := writeAtomic(comp, []byte(completeScript), 0o755); err != nil {
				return fmt.Errorf("install %s: %w", comp, err)
			}
			fmt.Fprintf(a.out, "installed %s and %s\n", dst, comp)
			if !slices.Contains(filepath.SplitList(os.Getenv("PATH")), dir) {
				fmt.Fprintf(a.errOut, "warning: %s is not on PATH; kubectl finds plugins on PATH\n", dir)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "/usr/local/bin", "a directory on PATH")
	return c
}
