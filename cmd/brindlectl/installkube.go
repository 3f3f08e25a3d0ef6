package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/brindle-net/brindle/kube"
)

// kubeFlags are install-cni's Kubernetes settings: where the CNI plugins'
// kubeconfig goes and whose token it holds.
type kubeFlags struct {
	mode, kubeconfig, path, namespace, serviceAccount string
}

func (k *kubeFlags) flags(fs *pflag.FlagSet) {
	fs.StringVar(&k.mode, "kubernetes", getenv("CNI_KUBERNETES", "auto"),
		"write the CNI plugins' kubeconfig: auto (when run in a pod with a ServiceAccount token), on, off (env CNI_KUBERNETES)")
	fs.StringVar(&k.kubeconfig, "kubeconfig", getenv("KUBECONFIG", ""), "install-cni's own access to the API (default: the pod's ServiceAccount)")
	fs.StringVar(&k.path, "cni-kubeconfig", getenv("CNI_KUBECONFIG", ""), "where to write the plugins' kubeconfig (default: --net-dir/brindle-kubeconfig)")
	fs.StringVar(&k.namespace, "cni-service-account-namespace", getenv("CNI_SERVICE_ACCOUNT_NAMESPACE", kube.DefaultNamespace), "namespace of the plugins' ServiceAccount")
	fs.StringVar(&k.serviceAccount, "cni-service-account", getenv("CNI_SERVICE_ACCOUNT", kube.DefaultCNIServiceAccount), "the plugins' ServiceAccount")
}

// kubeInstall is the resolved plan: nil when no kubeconfig is written.
type kubeInstall struct {
	ensure *kube.CNIKubeconfig
}

const saTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// resolve decides whether to write a kubeconfig, and connects when so.
func (k *kubeFlags) resolve(netDir string) (*kubeInstall, error) {
	switch k.mode {
	case "off":
		return nil, nil
	case "auto":
		if _, err := os.Stat(saTokenFile); (err != nil || os.Getenv("KUBERNETES_SERVICE_HOST") == "") && k.kubeconfig == "" {
			return nil, nil
		}
	case "on":
	default:
		return nil, fmt.Errorf("install-cni: --kubernetes %q: want auto, on or off", k.mode)
	}
	cfg, err := kube.RESTConfig(k.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("install-cni: %w", err)
	}
	cl, err := kube.NewClients(cfg)
	if err != nil {
		return nil, fmt.Errorf("install-cni: %w", err)
	}
	path := k.path
	if path == "" {
		path = filepath.Join(netDir, "brindle-kubeconfig")
	}
	return &kubeInstall{ensure: &kube.CNIKubeconfig{Clients: cl, Path: path, Namespace: k.namespace, ServiceAccount: k.serviceAccount}}, nil
}

func (ki *kubeInstall) path() string {
	if ki == nil {
		return ""
	}
	return ki.ensure.Path
}

// write puts the kubeconfig in place (a fresh token only when needed).
func (ki *kubeInstall) write(out io.Writer) error {
	if ki == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wrote, err := ki.ensure.Ensure(ctx)
	if err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	if wrote {
		fmt.Fprintf(out, "wrote %s (token of serviceaccount %s/%s)\n", ki.ensure.Path, ki.ensure.Namespace, ki.ensure.ServiceAccount)
	} else {
		fmt.Fprintf(out, "kept %s (its token is fresh)\n", ki.ensure.Path)
	}
	return nil
}
