// Command brindled is brindle's per-node daemon: it registers the node in
// etcd, runs the BGP speaker that announces the node's blocks and learns the
// others', keeps the kernel's routes in sync, and serves health and metrics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/buildinfo"
	"github.com/brindle-net/brindle/internal/etcdclient"
	"github.com/brindle-net/brindle/internal/sysctl"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
	"github.com/brindle-net/brindle/nodeapi"
	"github.com/brindle-net/brindle/uninstall"
)

type flags struct {
	policy                                                                                   policyFlags
	nodename, nodenameFile, mtuFile, stateFile, ip, ip6, rrCluster, labels, listen, logLevel string
	asn                                                                                      uint
	etcd                                                                                     conf.EtcdConfig
	resync, holdMax, etcdWait                                                                time.Duration
	deregister                                                                               bool
	nodeAPI                                                                                  *nodeapi.Config
	kube                                                                                     kubeOpts
}

func main() {
	var f flags
	var endpoints string
	flag.StringVar(&f.nodename, "nodename", os.Getenv("NODENAME"), "node name (default $NODENAME, else the hostname)")
	flag.StringVar(&f.nodenameFile, "nodename-file", "/var/lib/brindle/nodename", "where to write the node name for the CNI plugins")
	flag.StringVar(&f.mtuFile, "mtu-file", "/var/lib/brindle/mtu", "where to write the pods' MTU (the host's less the encapsulation overhead) for the CNI plugin")
	flag.StringVar(&f.stateFile, "state-file", bgpd.DefaultStateFile, "where to keep the last known cluster state, to start from when etcd is down (empty: none)")
	flag.DurationVar(&f.etcdWait, "etcd-wait", 5*time.Second, "at start, wait this long for etcd before starting from the state file")
	flag.StringVar(&f.ip, "ip", envOr("IP", "autodetect"), "node IPv4 address/len, or autodetect, can-reach=ADDR, interface=NAME")
	flag.StringVar(&f.ip6, "ip6", envOr("IP6", "autodetect"), "node IPv6 address/len, or none, autodetect (if there is an IPv6 default route), can-reach=ADDR, interface=NAME")
	flag.UintVar(&f.asn, "as-number", 0, "this node's AS number (default: the cluster's, bgp/config)")
	flag.StringVar(&f.rrCluster, "route-reflector-cluster-id", "", "make this node a route reflector with this cluster ID (mesh off)")
	flag.StringVar(&f.labels, "labels", "", "node labels, k=v,k2=v2 (pools and BGP peers select nodes by them)")
	flag.StringVar(&endpoints, "etcd-endpoints", envOr("ETCD_ENDPOINTS", "http://127.0.0.1:2379"), "etcd endpoints, comma-separated")
	flag.StringVar(&f.etcd.CACertFile, "etcd-ca-cert-file", os.Getenv("ETCD_CA_CERT_FILE"), "etcd CA certificate")
	flag.StringVar(&f.etcd.CertFile, "etcd-cert-file", os.Getenv("ETCD_CERT_FILE"), "etcd client certificate")
	flag.StringVar(&f.etcd.KeyFile, "etcd-key-file", os.Getenv("ETCD_KEY_FILE"), "etcd client key")
	flag.StringVar(&f.listen, "health-listen", "127.0.0.1:9099", "address for /livez, /readyz, /metrics and /status")
	flag.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.DurationVar(&f.resync, "resync", 30*time.Second, "re-apply peers, exports and routes at least this often")
	flag.DurationVar(&f.holdMax, "gr-hold", 60*time.Second, "after a restart, keep routes not yet relearned at most this long")
	flag.BoolVar(&f.deregister, "deregister-on-exit", false, "delete the node record on exit (the node leaves the cluster)")
	f.nodeAPI = nodeapi.Flags(flag.CommandLine)
	f.policy.register()
	f.kube.register()
	version := flag.Bool("version", false, "print the version and exit")
	maxProcs := maxProcsFlag(flag.CommandLine)
	slack := timerSlackFlag(flag.CommandLine)
	flag.Parse()
	if *version {
		fmt.Println("brindled", buildinfo.Version)
		return
	}
	f.etcd.Endpoints = strings.Split(endpoints, ",")
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "brindled: --log-level %q: %v\n", f.logLevel, err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	setMaxProcs(*maxProcs, log)
	setTimerSlack(*slack, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, f, log); err != nil {
		log.Error("brindled failed", "err", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	name := f.nodename
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w", err)
		}
		name = strings.ToLower(h)
	}
	log = log.With("node", name)
	kc, err := f.kube.connect(f.policy.kubeconfig, log)
	if err != nil {
		return err
	}
	flagLabels, err := parseLabels(f.labels)
	if err != nil {
		return err
	}
	labels, err := kubeNode(ctx, kc, &f, name, flagLabels, log)
	if err != nil {
		return err
	}
	addr, err := bgpd.DetectIPv4(f.ip)
	if err != nil {
		return err
	}
	addr6, err := bgpd.DetectIPv6(f.ip6)
	if err != nil {
		return err
	}
	cli, err := etcdclient.New(f.etcd)
	if err != nil {
		return err
	}
	defer cli.Close()
	// The CNI plugins need the node name from the start, etcd or not.
	if err := bgpd.WriteNodename(f.nodenameFile, name); err != nil {
		return fmt.Errorf("write %s: %w", f.nodenameFile, err)
	}
	v6 := ""
	if addr6.IsValid() {
		v6 = addr6.String()
	}
	self := conf.Node{Name: name, IPv4Address: addr.String(), IPv6Address: v6, ASNumber: uint32(f.asn),
		RouteReflectorClusterID: f.rrCluster, Labels: labels, KubernetesNode: kubeNodeName(kc, name)}
	claim := bgpd.NewNameClaim(cli, name, addr.Addr().String(), log)
	claimed := false
	register := func(ctx context.Context) error {
		if !claimed {
			if err := claim.Claim(ctx); err != nil {
				return err
			}
			claimed = true
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		node, err := bgpd.Register(rctx, cli, self)
		if err != nil {
			return fmt.Errorf("register node: %w", err)
		}
		log.Info("node registered", "ipv4", node.IPv4Address, "ipv6", node.IPv6Address, "version", buildinfo.Version)
		return nil
	}

	// A node routes for its pods: forwarding on in both families. What it
	// was before brindle is recorded once, for `brindlectl uninstall
	// --restore-forwarding`.
	if err := uninstall.RecordForwarding(filepath.Dir(f.nodenameFile)); err != nil {
		log.Warn("cannot record the forwarding sysctls", "err", err)
	}
	for _, s := range uninstall.ForwardingSysctls {
		if err := sysctl.Set(s, "1"); err != nil {
			log.Warn("cannot enable forwarding", "err", err)
		}
	}

	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	// Deletions are held after a start (graceful restart) until every
	// session is up, or --gr-hold at most.
	sock, err := bgpd.OpenRouteSocket()
	if err != nil {
		return err
	}
	defer sock.Close()
	fib := bgpd.NewFIB(bgpd.Netlink{H: h, Sock: sock}, log, f.holdMax > 0)
	cache := bgpd.NewCache(cli, log, ipam.Prefix, ipam.Prefix+"nodes/", ipam.Prefix+"bgp/", ipam.Prefix+"ippools/",
		ipam.Prefix+"ipam/affinity/"+name+"/", ipam.Prefix+"endpoints/"+name+"/")
	metrics := bgpd.NewMetrics()
	metrics.WatchCache(cache)
	hostMTU, how, err := bgpd.UnderlayMTU(addr.Addr())
	switch {
	case err != nil:
		log.Warn("cannot find the underlay MTU; tunnels get the kernel's default and pods the plugin's", "err", err)
	case how != "":
		log.Warn("underlay MTU", "mtu", hostMTU, "how", how)
	}
	filter, err := startPolicy(ctx, f.policy, name, kc, cache, h, metrics.Registry, log)
	if err != nil {
		return err
	}
	var ready []func() []string
	if filter != nil {
		ready = append(ready, filter.Ready)
	}
	agent := bgpd.NewAgent(bgpd.AgentConfig{
		Controller: bgpd.ControllerConfig{
			ReadyChecks: ready,
			NodeName:    name, FIB: fib, Cache: cache, Log: log, Metrics: metrics,
			Resync: f.resync, HoldMax: f.holdMax, RouteEvents: bgpd.WatchRouteDeletes(ctx, log),
			Tunnels:     bgpd.NewTunnels(h, log),
			TunnelAddrs: &bgpd.TunnelAddrs{Cli: cli, Alloc: ipam.New(etcdgrpc.New(cli))},
			NAT:         bgpd.NewNAT(log),
			HostMTU:     hostMTU, MTUFile: f.mtuFile,
		},
		Self: self, RouterID: addr.Addr(), Register: register,
		StateFile: f.stateFile, EtcdWait: f.etcdWait,
		Started: func() {
			if filter != nil {
				filter.Trigger() // the node list is there now, from etcd or the state file
			}
		},
	})

	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--health-listen %s: %w", f.listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", bgpd.Handler(agent, cli, metrics))
	if filter != nil {
		mux.Handle("/policy", filter.Handler())
		mux.Handle("/policy/", filter.Handler())
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	f.nodeAPI.Node, f.nodeAPI.Etcd, f.nodeAPI.Log, f.nodeAPI.Learned = name, cli, log, agent.Learned
	if stopAPI, err := nodeapi.Start(ctx, *f.nodeAPI); err != nil {
		log.Error("node API not served: brindlectl capture and pod cannot reach this node", "err", err)
	} else {
		defer stopAPI()
	}
	f.kube.run(ctx, kc, &f, name, flagLabels, cli, metrics.Registry, log)
	err = agent.Run(ctx)

	log.Info("shutting down", "deregister", f.deregister)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if f.deregister {
		if err := bgpd.Deregister(sctx, cli, name); err != nil {
			log.Warn("deregister", "err", err)
		}
	}
	agent.Stop(f.deregister)
	return err
}

func parseLabels(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, errors.New("--labels: want k=v[,k2=v2], got " + kv)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}
