package conf

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultNodenameFile is where brindled writes the node name it chose.
const DefaultNodenameFile = "/var/lib/brindle/nodename"

// DefaultIPAMTimeout bounds one IPAM operation, retries included.
const DefaultIPAMTimeout = 10 * time.Second

// EtcdConfig says how to reach etcd. File names are kept, never the
// contents, so that a config can be logged without leaking credentials.
type EtcdConfig struct {
	Endpoints  []string
	CACertFile string
	CertFile   string
	KeyFile    string
}

// Validate checks the endpoints and the TLS files together; errors name the
// setting (as the network config spells it) and the value. TLS files with
// an http:// endpoint are refused: traffic to that endpoint would go in
// plaintext although TLS was asked for.
func (e EtcdConfig) Validate() error {
	tls := e.CACertFile != "" || e.CertFile != ""
	for _, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("etcd_endpoints %q: want http(s)://host:port", ep)
		}
		if tls && u.Scheme == "http" {
			return fmt.Errorf("etcd_endpoints %q: plain http, but TLS files are set (etcd_ca_cert_file %q, etcd_cert_file %q): use https:// or drop the TLS files",
				ep, e.CACertFile, e.CertFile)
		}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		return fmt.Errorf("etcd_cert_file %q and etcd_key_file %q: give both or neither", e.CertFile, e.KeyFile)
	}
	return nil
}

// IPAMConfig is the `ipam` section brindle-ipam reads, after defaults.
type IPAMConfig struct {
	Type         string
	Etcd         EtcdConfig
	Nodename     string
	NodenameFile string
	// NodenameFileOptional lets a missing nodename file fall back to
	// NODENAME and then the hostname; without it a missing file is an error.
	NodenameFileOptional bool
	IPv4Pools            []string
	IPv6Pools            []string
	AssignIPv4           bool
	AssignIPv6           bool
	Timeout              time.Duration
}

// rawIPAM is the wire form of the ipam section; pointers tell unset from false.
type rawIPAM struct {
	Type           string   `json:"type"`
	EtcdEndpoints  string   `json:"etcd_endpoints"`
	EtcdCACertFile string   `json:"etcd_ca_cert_file"`
	EtcdCertFile   string   `json:"etcd_cert_file"`
	EtcdKeyFile    string   `json:"etcd_key_file"`
	Nodename       string   `json:"nodename"`
	NodenameFile   string   `json:"nodename_file"`
	NodenameOpt    bool     `json:"nodename_file_optional"`
	IPv4Pools      []string `json:"ipv4_pools"`
	IPv6Pools      []string `json:"ipv6_pools"`
	AssignIPv4     *bool    `json:"assign_ipv4"`
	AssignIPv6     *bool    `json:"assign_ipv6"`
	TimeoutSeconds *float64 `json:"timeout_seconds"`
}

// IPAMNetConf is a network configuration as brindle-ipam receives it: the
// generic CNI fields, the ipam section, the `ips` capability and the GC list.
type IPAMNetConf struct {
	types.NetConf
	IPAM             IPAMConfig
	RuntimeIPs       []string
	ValidAttachments []types.GCAttachment
	// LogFile and LogLevel are the network config's top-level logFile and
	// logLevel: the brindle plugin passes its whole config to its IPAM
	// delegate, so both plugins log to one file at one level.
	LogFile, LogLevel string
	// Kubernetes says how brindle-ipam reads pod and namespace
	// annotations; see KubernetesConfig.
	Kubernetes KubernetesConfig
}

// PodSocketName is the name of brindled's socket for the CNI plugins, in
// the directory of the nodename file.
const PodSocketName = "brindled.sock"

// KubernetesConfig is the plugin's `kubernetes` section (Calico puts its
// kubeconfig at the same place): brindle-ipam asks brindled's socket
// first, then the apiserver through the kubeconfig. With neither, pods'
// annotations are not read.
type KubernetesConfig struct {
	// Kubeconfig is the file install-cni writes (JSON, mode 0600).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Socket is brindled's unix socket; default brindled.sock next to
	// the nodename file.
	Socket string `json:"socket,omitempty"`
	// Timeout bounds reading a pod's annotations; default half of
	// timeout_seconds, so that IPAM keeps time for etcd.
	Timeout time.Duration `json:"-"`
	// TimeoutSeconds is Timeout as configured.
	TimeoutSeconds *float64 `json:"timeout_seconds,omitempty"`
}

// LoadIPAMNetConf parses stdin of a CNI call. env looks up environment
// variables (os.LookupEnv in the plugin; a map in tests), which fill in the
// etcd settings and the node name the config leaves out.
func LoadIPAMNetConf(data []byte, env func(string) (string, bool)) (*IPAMNetConf, error) {
	var wire struct {
		types.NetConf
		Nodename      string  `json:"nodename"`
		IPAM          rawIPAM `json:"ipam"`
		RuntimeConfig struct {
			IPs []string `json:"ips"`
		} `json:"runtimeConfig"`
		ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments"`
		LogFile          string               `json:"logFile"`
		LogLevel         string               `json:"logLevel"`
		Kubernetes       KubernetesConfig     `json:"kubernetes"`
	}
	if err := json.Unmarshal(data, &wire); err != nil {
		return nil, fmt.Errorf("parse network config: %w", err)
	}
	if wire.IPAM.Nodename == "" {
		// The brindle plugin's own nodename also names the IPAM node, so the
		// two can never disagree when only one is set.
		wire.IPAM.Nodename = wire.Nodename
	}
	ic, err := buildIPAMConfig(wire.IPAM, env)
	if err != nil {
		return nil, err
	}
	k := wire.Kubernetes
	if k.Socket == "" {
		k.Socket = filepath.Join(filepath.Dir(ic.NodenameFile), PodSocketName)
	}
	k.Timeout = ic.Timeout / 2
	if k.TimeoutSeconds != nil {
		k.Timeout = time.Duration(*k.TimeoutSeconds * float64(time.Second))
		if k.Timeout <= 0 || k.Timeout >= ic.Timeout {
			return nil, fmt.Errorf("kubernetes.timeout_seconds %v: must be positive and less than ipam.timeout_seconds (%v)", *k.TimeoutSeconds, ic.Timeout.Seconds())
		}
	}
	return &IPAMNetConf{
		NetConf:          wire.NetConf,
		IPAM:             *ic,
		RuntimeIPs:       wire.RuntimeConfig.IPs,
		ValidAttachments: wire.ValidAttachments,
		LogFile:          wire.LogFile,
		LogLevel:         wire.LogLevel,
		Kubernetes:       k,
	}, nil
}

func buildIPAMConfig(r rawIPAM, env func(string) (string, bool)) (*IPAMConfig, error) {
	get := func(v, key string) string {
		if v != "" {
			return v
		}
		if env != nil {
			if e, ok := env(key); ok {
				return e
			}
		}
		return ""
	}
	c := &IPAMConfig{
		Type: r.Type,
		Etcd: EtcdConfig{
			CACertFile: get(r.EtcdCACertFile, "ETCD_CA_CERT_FILE"),
			CertFile:   get(r.EtcdCertFile, "ETCD_CERT_FILE"),
			KeyFile:    get(r.EtcdKeyFile, "ETCD_KEY_FILE"),
		},
		Nodename:             r.Nodename,
		NodenameFile:         r.NodenameFile,
		NodenameFileOptional: r.NodenameOpt,
		IPv4Pools:            r.IPv4Pools,
		IPv6Pools:            r.IPv6Pools,
		AssignIPv4:           true,
		AssignIPv6:           false,
		Timeout:              DefaultIPAMTimeout,
	}
	eps := get(r.EtcdEndpoints, "ETCD_ENDPOINTS")
	for _, ep := range strings.Split(eps, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			c.Etcd.Endpoints = append(c.Etcd.Endpoints, ep)
		}
	}
	if c.NodenameFile == "" {
		c.NodenameFile = DefaultNodenameFile
	}
	if r.AssignIPv4 != nil {
		c.AssignIPv4 = *r.AssignIPv4
	}
	if r.AssignIPv6 != nil {
		c.AssignIPv6 = *r.AssignIPv6
	}
	if r.TimeoutSeconds != nil {
		c.Timeout = time.Duration(*r.TimeoutSeconds * float64(time.Second))
	}
	return c, c.Validate()
}

// Validate checks the ipam section; errors name the field and the value.
func (c *IPAMConfig) Validate() error {
	if len(c.Etcd.Endpoints) == 0 {
		return fmt.Errorf("ipam.etcd_endpoints: empty (set it in the config or ETCD_ENDPOINTS)")
	}
	if err := c.Etcd.Validate(); err != nil {
		return fmt.Errorf("ipam.%w", err)
	}
	if !c.AssignIPv4 && !c.AssignIPv6 {
		return fmt.Errorf("ipam.assign_ipv4 and ipam.assign_ipv6: both false, nothing to assign")
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("ipam.timeout_seconds %v: must be positive", c.Timeout.Seconds())
	}
	for _, n := range append(append([]string{}, c.IPv4Pools...), c.IPv6Pools...) {
		if !nameRE.MatchString(n) {
			return fmt.Errorf("ipam.ipv4_pools/ipv6_pools %q: not a pool name", n)
		}
	}
	return nil
}

// NodeName returns the node this config allocates for and where the name
// came from: the configured name; else the contents of the nodename file
// brindled writes. A missing file is an error — the plugin would otherwise
// claim blocks for a node that brindled never registered — unless
// nodename_file_optional is set: then NODENAME, else the hostname (the
// order brindled chooses its name in), and from says so, for a warning.
func (c *IPAMConfig) NodeName(env func(string) (name string, ok bool)) (name, from string, err error) {
	if c.Nodename != "" {
		return c.Nodename, "ipam.nodename", nil
	}
	b, err := os.ReadFile(c.NodenameFile)
	switch {
	case err == nil:
		if n := strings.TrimSpace(string(b)); n != "" {
			return n, c.NodenameFile, nil
		}
		if !c.NodenameFileOptional {
			return "", "", fmt.Errorf("ipam.nodename_file %q: empty (brindled writes the node name there)", c.NodenameFile)
		}
	case !os.IsNotExist(err):
		return "", "", fmt.Errorf("read ipam.nodename_file %q: %w", c.NodenameFile, err)
	case !c.NodenameFileOptional:
		return "", "", fmt.Errorf("ipam.nodename_file %q does not exist: brindled writes it when it starts (is brindled running on this node?); "+
			"set ipam.nodename, or ipam.nodename_file_optional: true to fall back to NODENAME or the hostname", c.NodenameFile)
	}
	if env != nil {
		if n, ok := env("NODENAME"); ok && n != "" {
			return n, "NODENAME (" + c.NodenameFile + " missing)", nil
		}
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", "", fmt.Errorf("no node name: ipam.nodename unset, %s missing, hostname: %v", c.NodenameFile, err)
	}
	// brindled lower-cases the hostname (node names are DNS labels): so
	// must this fallback, or the two disagree on a host named in capitals.
	return strings.ToLower(h), "hostname (" + c.NodenameFile + " missing)", nil
}
