package ipam

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
	"github.com/brindle-net/brindle/ipam/store/etcdhttp"
)

// ipamList is a network config for brindle-ipam alone. Its node name file
// is in a directory that does not exist, so nothing is written to
// /var/lib/brindle and no node-local state (hints, notes, the queue) is
// used; TestNodeLocalKill9 runs the plugin with them.
func ipamList(t *testing.T, endpoint, extra string) *libcni.NetworkConfigList {
	t.Helper()
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{
		"cniVersion": "1.1.0", "name": "brindle-test",
		"plugins": [{"type": "brindle-ipam", "capabilities": {"ips": true},
			"ipam": {"etcd_endpoints": %q, "nodename": "node-1", "nodename_file": %q%s}}]}`,
		endpoint, filepath.Join(t.TempDir(), "absent", "nodename"), extra)))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func cniConfig(t *testing.T) *libcni.CNIConfig {
	return testenv.NewCNIConfig(testenv.BinDir(t, "brindle-ipam"), t.TempDir())
}

func rtConf(id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: "/var/run/netns/unused", IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "pod-" + id}, {"K8S_POD_INFRA_CONTAINER_ID", id}}}
}

func TestPluginAddCheckDelGCStatus(t *testing.T) {
	a, s := newAlloc(t)
	ctx := ctxT(t)
	cni := cniConfig(t)
	list := ipamList(t, s.Endpoint, "")

	err := cni.GetStatusNetworkList(ctx, list)
	var terr *types.Error
	if !errors.As(err, &terr) || terr.Code != ErrCodePluginNotAvailable {
		t.Fatalf("STATUS without a pool: want code 50, got %v", err)
	}
	addPool(t, a, "default", "10.244.0.0/16", nil)
	if err := cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}

	r, err := cni.AddNetworkList(ctx, list, rtConf("c1"))
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res, _ := current.NewResultFromResult(r)
	if len(res.IPs) != 1 || res.IPs[0].Address.String()[:7] != "10.244." || !strings.HasSuffix(res.IPs[0].Address.String(), "/32") || res.IPs[0].Gateway != nil {
		t.Fatalf("ADD result %+v", res.IPs)
	}
	h, _ := a.HandleOf(ctx, "c1.eth0")
	if h == nil || h.Attrs[AttrNamespace] != "default" || h.Attrs[AttrPod] != "pod-c1" || h.Node != "node-1" {
		t.Fatalf("handle %+v", h)
	}
	if k := keys(t, s.Client, endpointPrefix); len(k) != 1 || k[0] != "endpoints/node-1/c1.eth0" {
		t.Fatalf("endpoints %v", k)
	}
	if err := cni.CheckNetworkList(ctx, list, rtConf("c1")); err != nil {
		t.Fatalf("CHECK: %v", err)
	}

	// A specific address through the ips capability.
	rc := rtConf("c2")
	rc.CapabilityArgs = map[string]interface{}{"ips": []string{"10.244.200.7/32"}}
	r, err = cni.AddNetworkList(ctx, list, rc)
	if err != nil {
		t.Fatalf("ADD with ips: %v", err)
	}
	if res, _ := current.NewResultFromResult(r); res.IPs[0].Address.IP.String() != "10.244.200.7" {
		t.Fatalf("ips capability ignored: %v", res.IPs)
	}
	// ... and through IP= in CNI_ARGS, which fails clearly when taken.
	rc = rtConf("c3")
	rc.Args = append(rc.Args, [2]string{"IP", "10.244.200.7"})
	if _, err := cni.AddNetworkList(ctx, list, rc); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("ADD with a taken IP=: %v", err)
	}

	if err := cni.DelNetworkList(ctx, list, rtConf("c1")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := cni.DelNetworkList(ctx, list, rtConf("c1")); err != nil {
		t.Fatalf("repeated DEL: %v", err)
	}
	if h, _ := a.HandleOf(ctx, "c1.eth0"); h != nil {
		t.Fatalf("DEL left handle %+v", h)
	}

	if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if h, _ := a.HandleOf(ctx, "c2.eth0"); h != nil {
		t.Fatalf("GC kept c2 though it is not a valid attachment: %+v", h)
	}
}

func TestPluginGCKeepsValidAttachments(t *testing.T) {
	a, s := newAlloc(t)
	ctx := ctxT(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	cni := cniConfig(t)
	list := ipamList(t, s.Endpoint, "")
	for _, id := range []string{"live", "dead"} {
		if _, err := cni.AddNetworkList(ctx, list, rtConf(id)); err != nil {
			t.Fatal(err)
		}
	}
	err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "live", IfName: "eth0"}}})
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := a.HandleOf(ctx, "live.eth0"); h == nil {
		t.Fatal("GC released a valid attachment")
	}
	if h, _ := a.HandleOf(ctx, "dead.eth0"); h != nil {
		t.Fatal("GC kept a gone attachment")
	}
}

func TestPluginBadConfigNamesField(t *testing.T) {
	cni := cniConfig(t)
	list := ipamList(t, "http://127.0.0.1:1", `, "ipv4_pools": ["Not A Pool"]`)
	_, err := cni.AddNetworkList(ctxT(t), list, rtConf("c1"))
	if err == nil || !strings.Contains(err.Error(), "ipv4_pools") || !strings.Contains(err.Error(), "Not A Pool") {
		t.Fatalf("want error naming ipam.ipv4_pools and the value, got %v", err)
	}
}

// deadEndpoint returns the URL of an etcd that has been stopped.
func deadEndpoint(t *testing.T) string {
	s := etcdtest.Start(t)
	s.Stop()
	return s.Endpoint
}

func TestEtcdDownBoundedError(t *testing.T) {
	ep := deadEndpoint(t)
	t.Run("allocator", func(t *testing.T) {
		cli := etcdtest.NewClient(t, ep)
		a := New(etcdgrpc.New(cli))
		a.Log = quietLog()
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := a.Assign(ctx, AssignRequest{Handle: "c1.eth0", Node: "n1", IPv4: true})
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "etcd unreachable at "+ep) {
			t.Fatalf("want 'etcd unreachable at %s', got %v", ep, err)
		}
		if took > 3*time.Second {
			t.Fatalf("took %v, bound is 1.5s", took)
		}
	})
	t.Run("plugin", func(t *testing.T) {
		cni := cniConfig(t)
		list := ipamList(t, ep, `, "timeout_seconds": 1`)
		for name, op := range map[string]func(context.Context) error{
			"ADD": func(ctx context.Context) error { _, err := cni.AddNetworkList(ctx, list, rtConf("c1")); return err },
			"DEL": func(ctx context.Context) error { return cni.DelNetworkList(ctx, list, rtConf("c1")) },
			"STATUS": func(ctx context.Context) error {
				err := cni.GetStatusNetworkList(ctx, list)
				var terr *types.Error
				if errors.As(err, &terr) && terr.Code != ErrCodePluginNotAvailable {
					return fmt.Errorf("code %d, want 50: %w", terr.Code, err)
				}
				return err
			},
		} {
			start := time.Now()
			err := op(context.Background())
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "etcd unreachable at "+ep) {
				t.Errorf("%s: want 'etcd unreachable at %s', got %v", name, ep, err)
			}
			if took > 4*time.Second {
				t.Errorf("%s took %v with timeout_seconds 1", name, took)
			}
		}
	})
}

func TestPluginVersion(t *testing.T) {
	cni := cniConfig(t)
	vi, err := cni.GetVersionInfo(ctxT(t), "brindle-ipam")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(vi.SupportedVersions(), ","); got != "0.3.0,0.3.1,0.4.0,1.0.0,1.1.0" {
		t.Fatalf("supported versions %s", got)
	}
}

func TestPluginOverTLS(t *testing.T) {
	m, tf := etcdtest.StartTLS(t)
	hs, err := etcdhttp.New(etcdhttp.Config{Endpoints: []string{m.Endpoint}, CACertFile: tf.CA, CertFile: tf.ClientCert, KeyFile: tf.ClientKey})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	a := New(hs)
	a.Log = quietLog()
	addPool(t, a, "default", "10.244.0.0/16", nil)
	cni := cniConfig(t)
	list := ipamList(t, m.Endpoint, fmt.Sprintf(`, "etcd_ca_cert_file": %q, "etcd_cert_file": %q, "etcd_key_file": %q`, tf.CA, tf.ClientCert, tf.ClientKey))
	if _, err := cni.AddNetworkList(ctxT(t), list, rtConf("tls1")); err != nil {
		t.Fatalf("ADD over TLS: %v", err)
	}
	if h, _ := a.HandleOf(ctxT(t), "tls1.eth0"); h == nil {
		t.Fatal("no handle after ADD over TLS")
	}
}

func TestPluginOlderSpecVersions(t *testing.T) {
	a, s := newAlloc(t)
	addPool(t, a, "default", "10.244.0.0/16", nil)
	cni := cniConfig(t)
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0"} {
		list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion": %q, "name": "old",
			"plugins": [{"type": "brindle-ipam", "ipam": {"etcd_endpoints": %q, "nodename": "n1"}}]}`, v, s.Endpoint)))
		if err != nil {
			t.Fatal(err)
		}
		r, err := cni.AddNetworkList(ctxT(t), list, rtConf("v"+strings.ReplaceAll(v, ".", "")))
		if err != nil {
			t.Fatalf("ADD at %s: %v", v, err)
		}
		if r.Version() != v {
			t.Errorf("result version %s, want %s", r.Version(), v)
		}
		if err := cni.DelNetworkList(ctxT(t), list, rtConf("v"+strings.ReplaceAll(v, ".", ""))); err != nil {
			t.Errorf("DEL at %s: %v", v, err)
		}
	}
}
