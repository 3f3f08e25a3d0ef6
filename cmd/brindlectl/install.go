package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/spf13/cobra"

	"github.com/brindle-net/brindle/bgpd"
	"github.com/brindle-net/brindle/conf"
)

// defaultConflist is the network config install-cni writes when it is given
// no template. conf/k8s/10-config.yaml ships the same text in its ConfigMap.
// cniVersion 1.0.0 is understood by containerd 1.6 and 1.7 (libcni v1.1)
// and CRI-O; set 1.1.0 (GC, STATUS) where the runtime is containerd >= 2.0.
const defaultConflist = `{
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "plugins": [
    {
      "type": "brindle",
      "mtu": __MTU__,
      "logFile": "__LOG_FILE__",
      "logLevel": "__LOG_LEVEL__",
      "ipam": {
        "type": "brindle-ipam",
        "etcd_endpoints": "__ETCD_ENDPOINTS__",
        "etcd_ca_cert_file": "__ETCD_CA_CERT_FILE__",
        "etcd_cert_file": "__ETCD_CERT_FILE__",
        "etcd_key_file": "__ETCD_KEY_FILE__",
        "nodename_file": "__NODENAME_FILE__"
      },
      "kubernetes": { "kubeconfig": "__KUBECONFIG_FILEPATH__" }
    },
    { "type": "portmap", "snat": true, "capabilities": { "portMappings": true } }
  ]
}
`

// pluginVersions are the CNI spec versions brindle and brindle-ipam
// support (their VERSION answer).
var pluginVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// tlsDir is where install-cni puts the etcd TLS files for the CNI plugins,
// next to the config that names them (as Calico does with calico-tls).
const tlsDir = "brindle-tls"

// installOptions is what install-cni does; see installCNI for the flags.
type installOptions struct {
	SourceDir    string
	Binaries     []string
	BinDir       string
	NetDir       string
	ConfName     string
	Template     string
	Etcd         conf.EtcdConfig
	MTU          int
	LogFile      string
	LogLevel     string
	NodenameFile string
	Nodename     string
	// Kube, when set, writes the CNI plugins' kubeconfig (installkube.go).
	Kube *kubeInstall
}

func init() { register("", newInstallCNICmd) }

// newInstallCNICmd is `brindlectl install-cni`: it puts the CNI binaries and
// the network config on this host. The DaemonSet's init container runs it
// with the host's /opt/cni/bin, /etc/cni/net.d and /var/lib/brindle mounted
// at the same paths, so every path it writes into the config is the host's
// too. It writes the etcd settings into the config but does not talk to etcd.
// Its flags are part of the DaemonSet (conf/k8s/30-daemonset.yaml): keep them.
func newInstallCNICmd(a *app) *cobra.Command {
	self, _ := os.Executable()
	var o installOptions
	var binaries, template, mtu string
	var kube kubeFlags
	c := &cobra.Command{
		Use:   "install-cni",
		Short: "put brindle's CNI binaries and network config on this host (the DaemonSet's init container)",
		Long: "Copy the CNI binaries into --bin-dir and write the network config into --net-dir, each\n" +
			"through a temporary file and a rename, after validating the rendered config the way the\n" +
			"plugins read it. Needs no etcd: the global etcd flags are written into the config.",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.Etcd = a.etcdConfig()
			var err error
			if o.MTU, err = strconv.Atoi(mtu); err != nil {
				return usagef(c, "--mtu %q: not a number", mtu)
			}
			for _, b := range strings.Split(binaries, ",") {
				if b = strings.TrimSpace(b); b != "" {
					o.Binaries = append(o.Binaries, b)
				}
			}
			switch {
			case template != "":
				b, err := os.ReadFile(template)
				if err != nil {
					return fmt.Errorf("install-cni: --template: %w", err)
				}
				o.Template = string(b)
			case os.Getenv("CNI_NETWORK_CONFIG") != "":
				o.Template = os.Getenv("CNI_NETWORK_CONFIG")
			}
			if o.Kube, err = kube.resolve(o.NetDir); err != nil {
				return err
			}
			return install(o, a.out)
		},
	}
	fs := c.Flags()
	fs.StringVar(&o.SourceDir, "source-dir", getenv("CNI_SOURCE_DIR", filepath.Dir(self)), "where the binaries to install are (env CNI_SOURCE_DIR)")
	fs.StringVar(&binaries, "binaries", getenv("CNI_BINARIES", "brindle,brindle-ipam"), "comma-separated binaries to install (env CNI_BINARIES)")
	fs.StringVar(&o.BinDir, "bin-dir", getenv("CNI_BIN_DIR", "/opt/cni/bin"), "the runtime's CNI binary directory (env CNI_BIN_DIR)")
	fs.StringVar(&o.NetDir, "net-dir", getenv("CNI_NET_DIR", "/etc/cni/net.d"), "the runtime's CNI config directory (env CNI_NET_DIR)")
	fs.StringVar(&o.ConfName, "conf-name", getenv("CNI_CONF_NAME", "10-brindle.conflist"), "file name of the network config (env CNI_CONF_NAME)")
	fs.StringVar(&template, "template", getenv("CNI_NETWORK_CONFIG_FILE", ""), "conflist template file (env CNI_NETWORK_CONFIG_FILE; default: env CNI_NETWORK_CONFIG, else built in)")
	fs.StringVar(&mtu, "mtu", getenv("CNI_MTU", "0"), "pod MTU; 0: the host's default-route interface MTU (env CNI_MTU)")
	fs.StringVar(&o.LogFile, "log-file", getenv("CNI_LOG_FILE", conf.DefaultLogFile), "the plugin's log file (env CNI_LOG_FILE)")
	fs.StringVar(&o.LogLevel, "log-level", getenv("CNI_LOG_LEVEL", conf.DefaultLogLevel), "the plugin's log level (env CNI_LOG_LEVEL)")
	fs.StringVar(&o.NodenameFile, "nodename-file", getenv("CNI_NODENAME_FILE", conf.DefaultNodenameFile), "the node name file the plugins read (env CNI_NODENAME_FILE)")
	fs.StringVar(&o.Nodename, "nodename", getenv("NODENAME", ""), "if set, write it to --nodename-file now, before brindled starts (env NODENAME)")
	kube.flags(fs)
	return c
}

// install validates everything first, then copies the TLS files and the
// binaries, writes the node name, and writes the network config last: the
// runtime considers the network ready as soon as the config exists, so by
// then everything it names must be in place.
func install(o installOptions, out io.Writer) error {
	if o.Template == "" {
		o.Template = defaultConflist
	}
	tlsSrc := map[string]string{}
	hostEtcd := o.Etcd
	for dst, src := range map[string]*string{"etcd-ca.crt": &hostEtcd.CACertFile, "etcd-cert.crt": &hostEtcd.CertFile, "etcd-key.key": &hostEtcd.KeyFile} {
		if *src != "" {
			tlsSrc[dst] = *src
			*src = filepath.Join(o.NetDir, tlsDir, dst)
		}
	}
	conflist, err := renderConflist(o.Template, hostEtcd, o)
	if err != nil {
		return err
	}
	for _, b := range o.Binaries {
		if strings.ContainsAny(b, `/\`) {
			return fmt.Errorf("install-cni: binary %q: a name, not a path", b)
		}
		if fi, err := os.Stat(filepath.Join(o.SourceDir, b)); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("install-cni: binary %s not found in %s (--source-dir)", b, o.SourceDir)
		}
	}

	if len(tlsSrc) > 0 {
		dir := filepath.Join(o.NetDir, tlsDir)
		// MkdirAll leaves an existing directory's mode alone: chmod too.
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("install-cni: %w", err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("install-cni: %w", err)
		}
		for _, dst := range sortedKeys(tlsSrc) {
			if err := copyAtomic(tlsSrc[dst], filepath.Join(dir, dst), 0o600); err != nil {
				return fmt.Errorf("install-cni: etcd tls: %w", err)
			}
		}
		fmt.Fprintf(out, "installed etcd TLS files in %s\n", dir)
	}
	if err := os.MkdirAll(o.BinDir, 0o755); err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	for _, b := range o.Binaries {
		dst := filepath.Join(o.BinDir, b)
		if err := copyAtomic(filepath.Join(o.SourceDir, b), dst, 0o755); err != nil {
			return fmt.Errorf("install-cni: %w", err)
		}
		fmt.Fprintf(out, "installed %s\n", dst)
	}
	if o.Nodename != "" {
		if err := bgpd.WriteNodename(o.NodenameFile, o.Nodename); err != nil {
			return fmt.Errorf("install-cni: write %s: %w", o.NodenameFile, err)
		}
		fmt.Fprintf(out, "wrote node name %q to %s\n", o.Nodename, o.NodenameFile)
	}
	if err := os.MkdirAll(o.NetDir, 0o755); err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	if err := o.Kube.write(out); err != nil {
		return err
	}
	path := filepath.Join(o.NetDir, o.ConfName)
	if err := writeAtomic(path, conflist, 0o644); err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	fmt.Fprintf(out, "wrote %s\n", path)
	// The runtime uses the config whose name sorts first; say so when it is
	// not ours.
	if first := firstNetConf(o.NetDir); first != "" && first != o.ConfName {
		fmt.Fprintf(out, "warning: %s sorts before %s in %s; the runtime uses %s\n", first, o.ConfName, o.NetDir, first)
	}
	return nil
}

// renderConflist fills the template's placeholders and validates the result
// the way the plugins will read it.
func renderConflist(tmpl string, etcd conf.EtcdConfig, o installOptions) ([]byte, error) {
	str := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b[1 : len(b)-1])
	}
	r := strings.NewReplacer(
		"__ETCD_ENDPOINTS__", str(strings.Join(etcd.Endpoints, ",")),
		"__ETCD_CA_CERT_FILE__", str(etcd.CACertFile),
		"__ETCD_CERT_FILE__", str(etcd.CertFile),
		"__ETCD_KEY_FILE__", str(etcd.KeyFile),
		"__NODENAME_FILE__", str(o.NodenameFile),
		"__KUBECONFIG_FILEPATH__", str(o.Kube.path()),
		"__LOG_FILE__", str(o.LogFile),
		"__LOG_LEVEL__", str(o.LogLevel),
		"__MTU__", strconv.Itoa(o.MTU),
	)
	out := []byte(r.Replace(tmpl))
	if err := validateConflist(out); err != nil {
		return nil, fmt.Errorf("install-cni: rendered network config: %w", err)
	}
	return out, nil
}

// validateConflist parses a conflist as libcni does and the brindle plugin
// in it as the brindle and brindle-ipam plugins do, with the name and
// cniVersion the runtime injects. Environment fallbacks are not used: the
// runtime does not pass the installer's environment to the plugins.
func validateConflist(data []byte) error {
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		return err
	}
	if !slices.Contains(pluginVersions, list.CNIVersion) {
		return fmt.Errorf("cniVersion %q: brindle supports %s", list.CNIVersion, strings.Join(pluginVersions, ", "))
	}
	if len(list.Plugins) == 0 || list.Plugins[0].Network.Type != "brindle" {
		return fmt.Errorf("plugins[0].type: want \"brindle\" first in the list")
	}
	for i, p := range list.Plugins[1:] {
		if p.Network.Type == "brindle" {
			return fmt.Errorf("plugins[%d].type: brindle appears twice", i+1)
		}
	}
	var plugin map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &plugin); err != nil {
		return fmt.Errorf("plugins[0]: %w", err)
	}
	plugin["name"], plugin["cniVersion"] = list.Name, list.CNIVersion
	one, _ := json.Marshal(plugin)
	if _, err := conf.ParseNetConf(one); err != nil {
		return fmt.Errorf("plugins[0]: %w", err)
	}
	if list.Plugins[0].Network.IPAM.Type == "brindle-ipam" {
		if _, err := conf.LoadIPAMNetConf(one, nil); err != nil {
			return fmt.Errorf("plugins[0]: %w", err)
		}
	}
	return nil
}

// copyAtomic copies src to dst through a temporary file in dst's directory
// and a rename, so a runtime never executes or reads a half-written file and
// a binary in use keeps running from its old inode.
func copyAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomicFrom(dst, in, mode)
}

func writeAtomic(dst string, data []byte, mode os.FileMode) error {
	return writeAtomicFrom(dst, bytes.NewReader(data), mode)
}

func writeAtomicFrom(dst string, r io.Reader, mode os.FileMode) (retErr error) {
	// A leading dot and a .tmp suffix: neither libcni (.conf, .conflist,
	// .json) nor a PATH lookup picks the temporary file up.
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, r); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("rename into %s: %w", dst, err)
	}
	return nil
}

// firstNetConf returns the config file name libcni would load first.
func firstNetConf(dir string) string {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil || len(files) == 0 {
		return ""
	}
	sort.Strings(files)
	return filepath.Base(files[0])
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
