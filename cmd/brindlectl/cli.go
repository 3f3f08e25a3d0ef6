package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/buildinfo"
	"github.com/brindle-net/brindle/internal/etcdclient"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
)

// app is one invocation of brindlectl: the global flags, the streams, and
// the etcd connection the commands open on demand.
type app struct {
	ctx         context.Context
	in          io.Reader
	out, errOut io.Writer

	endpoints, caFile, certFile, keyFile string
	timeout                              time.Duration

	// argv0 is the name brindlectl runs under (kubectl-brindle as a
	// kubectl plugin); args the command line, to run it in the cluster.
	argv0       string
	args        []string
	etcdFlagSet bool
}

// env is what a command that talks to etcd works with; ctx carries the
// --timeout deadline.
type env struct {
	out   io.Writer
	cli   *clientv3.Client
	alloc *ipam.Allocator
	ctx   context.Context
	stop  context.CancelFunc
}

func (e *env) close() {
	e.stop()
	e.cli.Close()
}

// etcdConfig is the etcd settings of the global flags.
func (a *app) etcdConfig() conf.EtcdConfig {
	cfg := conf.EtcdConfig{CACertFile: a.caFile, CertFile: a.certFile, KeyFile: a.keyFile}
	for _, ep := range strings.Split(a.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			cfg.Endpoints = append(cfg.Endpoints, ep)
		}
	}
	return cfg
}

// open connects to etcd; the returned env's context ends after --timeout.
func (a *app) open() (*env, error) {
	cli, err := etcdclient.New(a.etcdConfig())
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithTimeout(a.ctx, a.timeout)
	return &env{out: a.out, cli: cli, alloc: ipam.New(etcdgrpc.New(cli)), ctx: ctx, stop: stop}, nil
}

// withEnv runs f with an open env and closes it after.
func (a *app) withEnv(f func(e *env) error) error {
	if a.etcdInCluster() {
		if err := a.runInCluster(a.args); err != nil {
			return err
		}
		return errRanInCluster{0} // done: the command ran there
	}
	e, err := a.open()
	if err != nil {
		return err
	}
	defer e.close()
	return f(e)
}

// progress writes a progress line to stderr when stderr is a terminal, and
// nothing otherwise: stdout carries only data.
func (a *app) progress(format string, args ...any) {
	if isTerminal(a.errOut) {
		fmt.Fprintf(a.errOut, "\r\033[K"+format, args...)
	}
}

// progressDone ends a progress line.
func (a *app) progressDone() {
	if isTerminal(a.errOut) {
		fmt.Fprint(a.errOut, "\r\033[K")
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func getenv(k, def string) string {
	if v, ok := os.LookupEnv(k); ok && v != "" {
		return v
	}
	return def
}

// commandMakers are the registered commands by parent path, in
// registration order.
var commandMakers []struct {
	parent string
	make   func(*app) *cobra.Command
}

// register adds a command under parent: "" for the root, or the path of a
// group below it ("ipam", "policy"). Call it from init.
func register(parent string, make func(*app) *cobra.Command) {
	commandMakers = append(commandMakers, struct {
		parent string
		make   func(*app) *cobra.Command
	}{parent, make})
}

// newRoot builds the command tree for one invocation.
func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "brindlectl",
		Short:         "brindle's operator tool: pools, IPAM, nodes, BGP, pods and their packets",
		Version:       buildinfo.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		// A group or the root with an unknown subcommand is a usage error.
		Args: noArgs,
		RunE: func(c *cobra.Command, args []string) error { return c.Help() },
	}
	if a.isPlugin() {
		// kubectl's plugin convention: help and completion say
		// `kubectl brindle`; see docs/cli.md.
		root.Use = pluginName
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl brindle"}
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.endpoints, "etcd-endpoints", getenv("ETCD_ENDPOINTS", "http://127.0.0.1:2379"), "etcd endpoints, comma-separated (env ETCD_ENDPOINTS)")
	pf.StringVar(&a.caFile, "etcd-ca-cert-file", getenv("ETCD_CA_CERT_FILE", ""), "etcd CA certificate (env ETCD_CA_CERT_FILE)")
	pf.StringVar(&a.certFile, "etcd-cert-file", getenv("ETCD_CERT_FILE", ""), "etcd client certificate (env ETCD_CERT_FILE)")
	pf.StringVar(&a.keyFile, "etcd-key-file", getenv("ETCD_KEY_FILE", ""), "etcd client key (env ETCD_KEY_FILE)")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "time limit of one command's etcd and node requests")
	root.PersistentPreRun = func(c *cobra.Command, _ []string) {
		for _, f := range []string{"etcd-endpoints", "etcd-ca-cert-file", "etcd-cert-file", "etcd-key-file"} {
			a.etcdFlagSet = a.etcdFlagSet || c.Flags().Changed(f)
		}
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{msg: err.Error(), cmd: c.CommandPath()}
	})
	root.CompletionOptions.HiddenDefaultCmd = false

	byPath := map[string]*cobra.Command{"": root}
	// Parents before children: a maker registered under "ipam" needs the
	// ipam group, whichever file's init ran first.
	pending := commandMakers
	for len(pending) > 0 {
		var later []struct {
			parent string
			make   func(*app) *cobra.Command
		}
		for _, m := range pending {
			parent, ok := byPath[m.parent]
			if !ok {
				later = append(later, m)
				continue
			}
			c := m.make(a)
			parent.AddCommand(c)
			path := strings.TrimSpace(m.parent + " " + c.Name())
			byPath[path] = c
		}
		if len(later) == len(pending) {
			panic(fmt.Sprintf("brindlectl: commands registered under unknown parent %q", later[0].parent))
		}
		pending = later
	}
	return root
}

// newGroup makes a command that only holds subcommands: alone it prints
// its help; with an unknown subcommand it is a usage error.
func newGroup(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  noArgs,
		RunE:  func(c *cobra.Command, args []string) error { return c.Help() },
	}
}

// usageError is a command line brindlectl cannot run: exit code 2.
type usageError struct{ msg, cmd string }

func (u usageError) Error() string { return u.msg }

// classify turns cobra's own errors about the command line into usage errors.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var ue usageError
	if errors.As(err, &ue) {
		return err
	}
	if s := err.Error(); strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.Contains(s, "flag needs an argument") {
		return usageError{msg: s}
	}
	return err
}

// noArgs refuses positional arguments, naming an unknown subcommand as such.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if c.HasSubCommands() {
		return usageError{msg: fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath()), cmd: c.CommandPath()}
	}
	return usageError{msg: fmt.Sprintf("%s: unexpected argument %q", cmdName(c), args[0]), cmd: c.CommandPath()}
}

// exactArgs wants n positional arguments, named in the error.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{msg: fmt.Sprintf("%s: want %s, got %d argument(s)", cmdName(c), names, len(args)), cmd: c.CommandPath()}
		}
		return nil
	}
}

// maxArgs allows at most n positional arguments.
func maxArgs(n int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) > n {
			return usageError{msg: fmt.Sprintf("%s: want at most %s, got %d arguments", cmdName(c), names, len(args)), cmd: c.CommandPath()}
		}
		return nil
	}
}

// usagef is a usage error of command c.
func usagef(c *cobra.Command, format string, args ...any) error {
	return usageError{msg: cmdName(c) + ": " + fmt.Sprintf(format, args...), cmd: c.CommandPath()}
}

// cmdName is c's path below the root ("pool get"), for messages that
// already start with "brindlectl:".
func cmdName(c *cobra.Command) string {
	return strings.TrimPrefix(c.CommandPath(), c.Root().CommandPath()+" ")
}

// contextTimeout is the invocation's context with the --timeout deadline.
func contextTimeout(a *app) (context.Context, context.CancelFunc) {
	return context.WithTimeout(a.ctx, a.timeout)
}
