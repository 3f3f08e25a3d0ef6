// Command brindlectl is the operator's tool: IP pools, IPAM inspection and
// repair, nodes and BGP, pods and their packets, and the CNI installer the
// DaemonSet runs. Its logic lives in packages (ipam, conf, bgpd, capture);
// this is commands, flags and output, on cobra.
//
// Adding a command. Put it in a file of its own in this directory and
// register it from that file's init:
//
//	func init() { register("", newWidgetCmd) }        // brindlectl widget ...
//	func init() { register("ipam", newIPAMFooCmd) }   // brindlectl ipam foo
//
//	func newWidgetCmd(a *app) *cobra.Command {
//		var o outputFlag
//		c := &cobra.Command{
//			Use:   "widget NAME",
//			Short: "one line for the command list",
//			Args:  exactArgs(1, "NAME"),
//			RunE: func(c *cobra.Command, args []string) error {
//				e, err := a.open() // etcd, with the --timeout context
//				if err != nil {
//					return err
//				}
//				defer e.close()
//				return o.print(a.out, rows, func(t *table) { ... })
//			},
//		}
//		o.add(c, "table") // -o table|wide|json|yaml
//		return c
//	}
//
// The first argument of register names the parent ("" is the root, "ipam"
// the ipam group; a group is made with newGroup). Return usageError for bad
// arguments (exit 2) and a wrapped error for failures (exit 1); data goes to
// a.out, progress through a.progress (stderr, only on a terminal).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes, documented in docs/cli.md.
const (
	exitOK          = 0
	exitFailure     = 1   // the command ran and failed
	exitUsage       = 2   // unknown command, bad flag or argument
	exitInterrupted = 130 // SIGINT/SIGTERM ended a command that had no clean way to stop
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runContext(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	interrupted := ctx.Err() != nil
	stop()
	os.Exit(report(err, interrupted, os.Stderr))
}

// report prints err and returns the exit code for it.
func report(err error, interrupted bool, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if ric, ok := err.(errRanInCluster); ok {
		return ric.code // its own messages are on stderr already
	}
	fmt.Fprintln(stderr, "brindlectl:", err)
	var ue usageError
	switch {
	case errors.As(err, &ue):
		if ue.cmd != "" {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.cmd)
		}
		return exitUsage
	case interrupted:
		return exitInterrupted
	}
	return exitFailure
}

// run is runContext with no stdin and stderr discarded, for tests.
func run(args []string, out io.Writer) error {
	return runContext(context.Background(), args, os.Stdin, out, io.Discard)
}

// runContext runs one brindlectl command line.
func runContext(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) error {
	a := &app{ctx: ctx, in: in, out: out, errOut: errOut, argv0: os.Args[0], args: args}
	root := newRoot(a)
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	return classify(root.ExecuteContext(ctx))
}
