package routed_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/testenv"
)

// rig is one host namespace with the real binaries behind libcni, the way
// containerd drives them.
type rig struct {
	t       *testing.T
	host    *testenv.Host
	cni     *libcni.CNIConfig
	dir     string
	logFile string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.BinDir(t, "brindle")
	dir := t.TempDir()
	return &rig{
		t:       t,
		host:    testenv.NewHost(t),
		cni:     testenv.NewCNIConfig(bin, filepath.Join(dir, "cache")),
		dir:     dir,
		logFile: filepath.Join(dir, "cni.log"),
	}
}

// hostLocal is a host-local IPAM section with its store in the rig's dir.
func (r *rig) hostLocal(ranges ...string) map[string]any {
	var rs [][]map[string]string
	for _, s := range ranges {
		rs = append(rs, []map[string]string{{"subnet": s}})
	}
	return map[string]any{"type": "host-local", "dataDir": filepath.Join(r.dir, "ipam"), "ranges": rs}
}

// list builds a conflist whose first plugin is brindle with the given IPAM
// section and extra fields, followed by any chained plugins.
func (r *rig) list(version string, ipam map[string]any, extra map[string]any, chained ...map[string]any) *libcni.NetworkConfigList {
	r.t.Helper()
	first := map[string]any{"type": "brindle", "logFile": r.logFile, "logLevel": "debug"}
	if ipam != nil {
		first["ipam"] = ipam
	}
	for k, v := range extra {
		first[k] = v
	}
	plugins := append([]map[string]any{first}, chained...)
	b, err := json.Marshal(map[string]any{"cniVersion": version, "name": "brindle-test", "plugins": plugins})
	if err != nil {
		r.t.Fatal(err)
	}
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		r.t.Fatalf("conflist: %v", err)
	}
	return l
}

type pod struct {
	ns ns.NetNS
	rt *libcni.RuntimeConf
}

func (r *rig) newPod(name string) *pod {
	return &pod{ns: testenv.NewNS(r.t), rt: &libcni.RuntimeConf{
		ContainerID: "ctr-" + name,
		NetNS:       "", // set below
		IfName:      "eth0",
		// As containerd passes them.
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}},
	}}
}

func (p *pod) runtime() *libcni.RuntimeConf {
	p.rt.NetNS = p.ns.Path()
	return p.rt
}

func (p *pod) veth() string { return conf.HostVethName("default", p.rt.Args[2][1], "") }

// in runs f in the host namespace: libcni's children are born there.
func (r *rig) in(f func() error) error { return testenv.Do(r.t, r.host.NS, f) }

func (r *rig) add(l *libcni.NetworkConfigList, p *pod) (*current.Result, error) {
	var res types.Result
	err := r.in(func() (err error) {
		res, err = r.cni.AddNetworkList(context.Background(), l, p.runtime())
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (r *rig) mustAdd(l *libcni.NetworkConfigList, p *pod) *current.Result {
	r.t.Helper()
	res, err := r.add(l, p)
	if err != nil {
		r.t.Fatalf("ADD %s: %v\nplugin log:\n%s", p.rt.ContainerID, err, r.log())
	}
	return res
}

func (r *rig) del(l *libcni.NetworkConfigList, p *pod) error {
	return r.in(func() error { return r.cni.DelNetworkList(context.Background(), l, p.runtime()) })
}

func (r *rig) check(l *libcni.NetworkConfigList, p *pod) error {
	return r.in(func() error { return r.cni.CheckNetworkList(context.Background(), l, p.runtime()) })
}

func (r *rig) log() string {
	b, _ := os.ReadFile(r.logFile)
	return string(b)
}

// hostLinks lists the links in the host namespace whose name starts with prefix.
func (r *rig) hostLinks(prefix string) []string {
	r.t.Helper()
	var names []string
	err := r.in(func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, prefix) {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return names
}

// allocated lists the addresses host-local holds in the rig's store.
func (r *rig) allocated() []string {
	r.t.Helper()
	var out []string
	_ = filepath.WalkDir(filepath.Join(r.dir, "ipam"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), "last_reserved") && d.Name() != "lock" {
			out = append(out, d.Name())
		}
		return nil
	})
	return out
}

func sysctlIn(t *testing.T, n ns.NetNS, name string) string {
	t.Helper()
	var v string
	err := n.Do(func(ns.NetNS) error {
		b, err := os.ReadFile("/proc/sys/" + name)
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func writeSysctlIn(t *testing.T, n ns.NetNS, name, value string) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return os.WriteFile("/proc/sys/"+name, []byte(value), 0o644) }); err != nil {
		t.Fatal(err)
	}
}

func errContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

func testenvUnmount(n ns.NetNS) error { return testutils.UnmountNS(n) }

// jsonWithName returns a conflist with its name replaced.
func jsonWithName(b []byte, name string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m["name"] = name
	return json.Marshal(m)
}
