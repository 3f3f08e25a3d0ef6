// Package kube is brindle's Kubernetes side, run by brindled: the pod and
// namespace cache the CNI plugins ask through a unix socket, the CNI
// kubeconfig and its token, the node's labels and InternalIP, and the
// cluster-wide controller (node, IPAM and sticky-address garbage
// collection, Service CIDRs) that one brindled runs at a time under a
// Lease. The CNI plugins never link it: they use kube/podinfo.
package kube

import (
	"fmt"
	"time"

	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Clients are the API clients brindled uses: typed REST clients of the
// few groups it needs (api.go) and the metadata client.
type Clients struct {
	Config *rest.Config
	Typed  *API
	Meta   metadata.Interface
}

// RESTConfig is the in-cluster config, or the kubeconfig file's when one
// is named.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	return cfg, nil
}

// NewClients builds the typed and metadata clients on cfg, with a request
// timeout so that an unreachable apiserver never blocks a caller for long.
func NewClients(cfg *rest.Config) (*Clients, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 20, 40
	}
	cfg.UserAgent = "brindled"
	typed, err := NewAPI(cfg)
	if err != nil {
		return nil, err
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes metadata client: %w", err)
	}
	return &Clients{Config: cfg, Typed: typed, Meta: meta}, nil
}
