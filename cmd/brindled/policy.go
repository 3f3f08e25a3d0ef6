package main

import (
	"context"
	"flag"
	"log/slog"
	"net/netip"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/kube"
	"github.com/brindle-net/brindle/policy/enforcer"
	"github.com/brindle-net/brindle/policy/nft"
)

// policyFlags configure brindle's filter table (table inet brindle).
type policyFlags struct {
	filter, conntrack bool
	kubeconfig        string
	nflogGroup        uint
}

func (p *policyFlags) register() {
	flag.BoolVar(&p.filter, "filter", true, "keep table inet brindle: anti-spoofing on the host veths, the underlay guard, forwarding on hosts whose FORWARD policy is DROP, and NetworkPolicy when in Kubernetes")
	flag.StringVar(&p.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig for brindled's API access: NetworkPolicy, pods' annotations for the CNI plugins, node labels, the cluster-wide controller (default: in-cluster when KUBERNETES_SERVICE_HOST is set; without either, none of them)")
	flag.UintVar(&p.nflogGroup, "nflog-group", 44, "nflog group for sampled drop logs (0: none)")
	flag.BoolVar(&p.conntrack, "policy-conntrack-flush", true, "delete the conntrack entries of connections a removed or tightened policy no longer allows")
}

// startPolicy builds the enforcer of table inet brindle (nil when --filter
// is off). With kc (brindled uses the Kubernetes API) it enforces
// NetworkPolicy too.
func startPolicy(ctx context.Context, p policyFlags, node string, kc *kube.Clients, cache *bgpd.Cache, h *netlink.Handle, reg prometheus.Registerer, log *slog.Logger) (*enforcer.Enforcer, error) {
	if !p.filter {
		return nil, nil
	}
	cfg := enforcer.Config{
		Log: log.With("component", "policy"), Writer: &nft.Writer{}, Netlink: h,
		LogGroup: uint16(p.nflogGroup), FlushConntrack: p.conntrack, Registry: reg,
		Nodes: func() ([]netip.Addr, bool) { return nodeAddrs(cache) },
	}
	if kc != nil {
		cfg.Kube = enforcer.NewKube(kc.Typed.Core, kc.Typed.Networking, node)
		log.Info("NetworkPolicy enforced from the Kubernetes API", "apiserver", kc.Config.Host)
	}
	e := enforcer.New(cfg)
	go func() { _ = e.Run(ctx) }()
	return e, nil
}

// nodeAddrs are the underlay addresses of the nodes registered in etcd.
func nodeAddrs(cache *bgpd.Cache) ([]netip.Addr, bool) {
	if !cache.Synced() {
		return nil, false
	}
	var out []netip.Addr
	for _, v := range cache.Snapshot(ipam.Prefix + "nodes/") {
		n, err := conf.UnmarshalNode(v)
		if err != nil {
			continue
		}
		if p, ok := n.IPv4(); ok {
			out = append(out, p.Addr())
		}
		if p, ok := n.IPv6(); ok {
			out = append(out, p.Addr())
		}
	}
	return out, true
}
