package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
	"github.com/brindle-net/brindle/kube"
)

// kubeOpts are brindled's Kubernetes flags.
type kubeOpts struct {
	mode, kubeconfig, cniKubeconfig, cniServiceAccount, namespace, socket string
	controller                                                            bool
	podGrace                                                              time.Duration
}

func (o *kubeOpts) register() {
	flag.StringVar(&o.mode, "kubernetes", envOr("BRINDLE_KUBERNETES", "auto"), "use the Kubernetes API: auto (when running in a pod, or with --kubeconfig), on, off")
	flag.StringVar(&o.cniKubeconfig, "cni-kubeconfig", kube.DefaultCNIKubeconfig, "the CNI plugins' kubeconfig, whose token brindled renews (\"\": none)")
	flag.StringVar(&o.cniServiceAccount, "cni-service-account", kube.DefaultCNIServiceAccount, "the CNI plugins' ServiceAccount")
	flag.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", kube.DefaultNamespace), "brindle's namespace (the controller's Lease, the plugins' ServiceAccount)")
	flag.StringVar(&o.socket, "pod-socket", "", "unix socket the CNI plugins ask for pods (default: "+conf.PodSocketName+" next to --nodename-file)")
	flag.BoolVar(&o.controller, "controller", true, "contend for the Lease of the cluster-wide controller (node and IPAM garbage collection)")
	flag.DurationVar(&o.podGrace, "ipam-gc-grace", kube.DefaultPodGrace, "release an allocation once its pod has been gone from the API this long")
}

// connect returns the API clients, or nil when Kubernetes is off.
// kubeconfig is --kubeconfig (registered with the policy flags; one flag
// for all of brindled's API access).
func (o *kubeOpts) connect(kubeconfig string, log *slog.Logger) (*kube.Clients, error) {
	o.kubeconfig = kubeconfig
	switch o.mode {
	case "off":
		return nil, nil
	case "auto":
		if o.kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
			return nil, nil
		}
	case "on":
	default:
		return nil, fmt.Errorf("--kubernetes %q: want auto, on or off", o.mode)
	}
	cfg, err := kube.RESTConfig(o.kubeconfig)
	if err != nil {
		return nil, err
	}
	c, err := kube.NewClients(cfg)
	if err != nil {
		return nil, err
	}
	// client-go's own messages (leader election, watches) in brindled's
	// log, as JSON like the rest.
	klog.SetSlogLogger(log.With("component", "client-go"))
	log.Info("using the Kubernetes API", "server", cfg.Host)
	return c, nil
}

// kubeNode fills in what the Node says before the node registers: the
// address for --ip/--ip6 kubernetes-internal-ip, and the labels (with
// --labels on top).
func kubeNode(ctx context.Context, kc *kube.Clients, f *flags, name string, labels map[string]string, log *slog.Logger) (map[string]string, error) {
	if kc == nil {
		for _, s := range []string{f.ip, f.ip6} {
			if s == kube.InternalIPSpec {
				return nil, fmt.Errorf("--ip %s needs the Kubernetes API (--kubernetes)", kube.InternalIPSpec)
			}
		}
		return labels, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, spec := range []*string{&f.ip, &f.ip6} {
		if *spec != kube.InternalIPSpec {
			continue
		}
		p, err := kube.InternalIP(ctx, kc, name, spec == &f.ip6)
		if err != nil {
			return nil, err
		}
		*spec = p.String()
	}
	nl, err := kube.NodeLabels(ctx, kc, name)
	if err != nil {
		// Networking must not wait for the apiserver: the label sync
		// copies the Node's labels once it answers.
		log.Warn("cannot read the Node's labels yet; the node registers without them", "node", name, "err", err)
		return labels, nil
	}
	out := maps.Clone(nl)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, labels)
	return out, nil
}

// runKube starts the Kubernetes side (kube.RunAgent) in the background.
func (o *kubeOpts) run(ctx context.Context, kc *kube.Clients, f *flags, name string, extra map[string]string,
	cli *clientv3.Client, reg prometheus.Registerer, log *slog.Logger) {
	if kc == nil {
		return
	}
	sock := o.socket
	if sock == "" {
		sock = filepath.Join(filepath.Dir(f.nodenameFile), conf.PodSocketName)
	}
	go kube.RunAgent(ctx, kube.AgentConfig{Clients: kc, Node: name, Socket: sock, CNIKubeconfig: o.cniKubeconfig,
		CNIServiceAccount: o.cniServiceAccount, Namespace: o.namespace, Etcd: cli, Alloc: ipam.New(ipamStore(cli)),
		ExtraLabels: extra, Controller: o.controller, PodGrace: o.podGrace, Registry: reg, Log: log})
}

// kubeNodeName is the Node a node record is for: set in Kubernetes only.
func kubeNodeName(kc *kube.Clients, name string) string {
	if kc == nil {
		return ""
	}
	return name
}

func ipamStore(cli *clientv3.Client) ipam.Store { return etcdgrpc.New(cli) }
