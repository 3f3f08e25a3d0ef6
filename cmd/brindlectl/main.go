// Command brindlectl is the operator's tool: IP pools, IPAM inspection and
// repair. Its logic lives in packages ipam and conf; this is flags and output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdclient"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
)

const usage = `usage: brindlectl [global flags] <command> [flags]

commands:
  pool apply -f FILE|-           create or update the IPPools in a YAML file
  pool get [NAME] [-o yaml|json|table]
  pool delete NAME [--force]     refused while addresses are allocated unless --force
  ipam show [--ip ADDR] [-o json]
  ipam check [-o json]           leaks, orphan endpoints, blocks of gone nodes
  ipam release [--dry-run]       release what check found
  ipam config [--strict-affinity=BOOL] [--max-blocks-per-host=N] [-o json]
  node list [-o json]            registered nodes, their addresses, AS and blocks
  node status [--addr A] [-o json]  this node's BGP sessions and routes (asks the local brindled)
  node delete NAME               the node leaves: peers drop it and its routes
  bgp apply -f FILE|-            BGPConfiguration and BGPPeer documents
  bgp get [-o yaml|json]         the BGP configuration in force and the peers
  bgp delete-peer NAME
  install-cni [--bin-dir D] [--net-dir D] [--template F] [--mtu N] [--nodename N] ...
                                 put brindle's CNI binaries and network config on
                                 this host (the DaemonSet's init container; no etcd)

global flags (before the command):
  --etcd-endpoints  comma-separated URLs (env ETCD_ENDPOINTS, default http://127.0.0.1:2379)
  --etcd-ca-cert-file, --etcd-cert-file, --etcd-key-file (env ETCD_CA_CERT_FILE, ...)
  --timeout         per command (default 10s)
`

// env is the settings shared by every command.
type env struct {
	out   io.Writer
	cli   *clientv3.Client
	alloc *ipam.Allocator
	ctx   context.Context
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "brindlectl:", err)
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func getenv(k, def string) string {
	if v, ok := os.LookupEnv(k); ok && v != "" {
		return v
	}
	return def
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("brindlectl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	endpoints := fs.String("etcd-endpoints", getenv("ETCD_ENDPOINTS", "http://127.0.0.1:2379"), "")
	ca := fs.String("etcd-ca-cert-file", getenv("ETCD_CA_CERT_FILE", ""), "")
	cert := fs.String("etcd-cert-file", getenv("ETCD_CERT_FILE", ""), "")
	key := fs.String("etcd-key-file", getenv("ETCD_KEY_FILE", ""), "")
	timeout := fs.Duration("timeout", 10*time.Second, "")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	rest := fs.Args()
	cfg := conf.EtcdConfig{CACertFile: *ca, CertFile: *cert, KeyFile: *key}
	for _, ep := range strings.Split(*endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			cfg.Endpoints = append(cfg.Endpoints, ep)
		}
	}
	// install-cni writes the etcd settings into the network config but
	// does not talk to etcd itself.
	if len(rest) > 0 && rest[0] == "install-cni" {
		return installCNI(rest[1:], cfg, out)
	}
	if len(rest) < 2 {
		return usageError{"missing command"}
	}
	cli, err := etcdclient.New(cfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	e := &env{out: out, cli: cli, alloc: ipam.New(etcdgrpc.New(cli)), ctx: ctx}
	cmd := rest[0] + " " + rest[1]
	sub := rest[2:]
	switch cmd {
	case "pool apply":
		return e.poolApply(sub)
	case "pool get":
		return e.poolGet(sub)
	case "pool delete":
		return e.poolDelete(sub)
	case "ipam show":
		return e.ipamShow(sub)
	case "ipam check":
		return e.ipamCheck(sub)
	case "ipam release":
		return e.ipamRelease(sub)
	case "ipam config":
		return e.ipamConfig(sub)
	case "node list":
		return e.nodeList(sub)
	case "node status":
		return e.nodeStatus(sub)
	case "node delete":
		return e.nodeDelete(sub)
	case "bgp apply":
		return e.bgpApply(sub)
	case "bgp get":
		return e.bgpGet(sub)
	case "bgp delete-peer":
		return e.bgpPeerDelete(sub)
	}
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// parseFlags parses a subcommand's flags, allowing them after positional
// arguments too (`pool delete NAME --force`).
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
