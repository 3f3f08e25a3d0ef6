package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdgrpc"
	"github.com/brindle-net/brindle/kube/podinfo"
)

// cniRig is the real brindle-ipam binary, driven through libcni, against a
// real etcd and a real apiserver, with brindled's socket served here.
type cniRig struct {
	api   *apiserver
	alloc *ipam.Allocator
	cni   *libcni.CNIConfig
	etcd  string
	sock  string
	dir   string
}

func newCNIRig(t *testing.T) *cniRig {
	t.Helper()
	r := &cniRig{api: startAPI(t), dir: t.TempDir()}
	e := etcdtest.Start(t)
	r.etcd = e.Endpoint
	r.alloc = ipam.New(etcdgrpc.New(e.Client))
	r.alloc.Log = quietLog()
	r.cni = testenv.NewCNIConfig(testenv.BinDir(t, "brindle-ipam"), t.TempDir())
	for _, p := range []conf.IPPool{
		{Metadata: conf.ObjectMeta{Name: "pool-a"}, Spec: conf.IPPoolSpec{CIDR: "10.60.0.0/16"}},
		{Metadata: conf.ObjectMeta{Name: "pool-b"}, Spec: conf.IPPoolSpec{CIDR: "10.61.0.0/16"}},
		{Metadata: conf.ObjectMeta{Name: "pool-c"}, Spec: conf.IPPoolSpec{CIDR: "10.62.0.0/16", AssignmentMode: conf.AssignManual}},
		{Metadata: conf.ObjectMeta{Name: "off"}, Spec: conf.IPPoolSpec{CIDR: "10.63.0.0/16", Disabled: true}},
	} {
		if _, err := r.alloc.ApplyPool(ctxT(t), p); err != nil {
			t.Fatal(err)
		}
	}
	cache := NewPodCache(r.api.node, "node-1")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go cache.Run(ctx)
	waitFor(t, 20*time.Second, "pod cache synced", cache.Synced)
	r.sock = filepath.Join(r.dir, conf.PodSocketName)
	go ServeSocket(ctx, r.sock, cache, quietLog())
	waitFor(t, 5*time.Second, "socket", func() bool { _, err := os.Stat(r.sock); return err == nil })
	return r
}

// list is the network config; kube is the plugin's kubernetes section.
func (r *cniRig) list(t *testing.T, kube string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "k8s-pod-network",
		"plugins": [{"type": "brindle-ipam", %s
			"ipam": {"etcd_endpoints": %q, "nodename": "node-1", "nodename_file": %q, "timeout_seconds": 4}}]}`,
		kube, r.etcd, filepath.Join(r.dir, "nodename"))))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func rt(id, ns, pod, uid string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: "/var/run/netns/unused", IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", pod}, {"K8S_POD_UID", uid}, {"K8S_POD_INFRA_CONTAINER_ID", id}}}
}

func (r *cniRig) add(t *testing.T, l *libcni.NetworkConfigList, id, ns, pod, uid string) (string, error) {
	t.Helper()
	res, err := r.cni.AddNetworkList(ctxT(t), l, rt(id, ns, pod, uid))
	if err != nil {
		return "", err
	}
	cr, _ := current.NewResultFromResult(res)
	var out []string
	for _, ip := range cr.IPs {
		out = append(out, ip.Address.IP.String())
	}
	return strings.Join(out, ","), nil
}

func inCIDR(ip, cidr string) bool {
	_, n, err := net.ParseCIDR(cidr)
	return err == nil && n.Contains(net.ParseIP(ip))
}

// The annotations of issue 10 through the real plugin: addresses and
// pools from the pod and its Namespace, the Calico names, every refusal
// naming pod, annotation and address with nothing allocated.
func TestCNIAnnotations(t *testing.T) {
	r := newCNIRig(t)
	ctx := ctxT(t)
	if _, _, err := r.alloc.ApplyReservation(ctx, conf.IPReservation{Metadata: conf.ObjectMeta{Name: "gw"},
		Spec: conf.IPReservationSpec{ReservedCIDRs: []string{"10.60.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	r.api.makeNamespace(t, "apps", map[string]string{podinfo.IPv4Pools: `["pool-b"]`})
	r.api.makeNamespace(t, "plain", nil)
	viaSocket := r.list(t, "")
	type pod struct{ name, ns, ann, val string }
	uids := map[string]string{}
	for _, p := range []pod{
		{"fixed", "plain", podinfo.IPAddrs, `["10.60.0.5"]`},
		{"calico-fixed", "plain", podinfo.CalicoIPAddrs, `["10.60.0.6"]`},
		{"taken", "plain", podinfo.CalicoIPAddrs, `["10.60.0.5"]`},
		{"reserved", "plain", podinfo.IPAddrs, `["10.60.0.1"]`},
		{"outside", "plain", podinfo.IPAddrs, `["192.168.77.1"]`},
		{"disabled", "plain", podinfo.IPAddrs, `["10.63.0.9"]`},
		{"ns-default", "apps", "", ""},
		{"pod-wins", "apps", podinfo.CalicoIPv4Pools, `["10.62.0.0/16"]`},
		{"no-such-pool", "plain", podinfo.IPv4Pools, `["nope"]`},
		{"bad-json", "plain", podinfo.IPAddrs, `10.60.0.9`},
		{"none", "plain", "", ""},
	} {
		ann := map[string]string{}
		if p.ann != "" {
			ann[p.ann] = p.val
		}
		uids[p.name] = string(r.api.makePod(t, p.ns, p.name, "node-1", ann, nil).UID)
	}
	ok := func(name, ns, want string) {
		t.Helper()
		got, err := r.add(t, viaSocket, "c-"+name, ns, name, uids[name])
		if err != nil || !inCIDR(got, want) && got != want {
			t.Fatalf("%s: got %q %v, want %s", name, got, err, want)
		}
	}
	ok("fixed", "plain", "10.60.0.5")
	ok("calico-fixed", "plain", "10.60.0.6")
	ok("ns-default", "apps", "10.61.0.0/16")
	ok("pod-wins", "apps", "10.62.0.0/16") // a Manual pool, named by CIDR
	ok("none", "plain", "10.60.0.0/16")
	if h, _ := r.alloc.HandleOf(ctx, "c-fixed.eth0"); h == nil || h.Attrs[ipam.AttrPodUID] != uids["fixed"] {
		t.Fatalf("handle does not record the pod UID: %+v", h)
	}
	before, _, _ := r.alloc.Usage(ctx)
	for _, tc := range []struct{ name, want string }{
		{"taken", `pod plain/taken: annotation cni.projectcalico.org/ipAddrs asks for [10.60.0.5]: ip 10.60.0.5: already in use by handle "c-fixed.eth0" (pod plain/fixed)`},
		{"reserved", `pod plain/reserved: annotation brindle.net/ipAddrs asks for [10.60.0.1]: ip 10.60.0.1: reserved by IPReservation "gw"`},
		{"outside", `pod plain/outside: annotation brindle.net/ipAddrs asks for [192.168.77.1]: ip 192.168.77.1: not inside any ip pool`},
		{"disabled", `pod plain/disabled: annotation brindle.net/ipAddrs asks for [10.63.0.9]: ip 10.63.0.9: pool "off" is disabled`},
		{"no-such-pool", `pod plain/no-such-pool: pod annotation brindle.net/ipv4pools [nope]: no usable ip pool: pool "nope" does not exist`},
		{"bad-json", `pod plain/bad-json: annotation brindle.net/ipAddrs "10.60.0.9": not a JSON list`},
	} {
		_, err := r.add(t, viaSocket, "c-"+tc.name, "plain", tc.name, uids[tc.name])
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v\nwant  %s", tc.name, err, tc.want)
		}
		if h, _ := r.alloc.HandleOf(ctx, "c-"+tc.name+".eth0"); h != nil {
			t.Errorf("%s: refused ADD left handle %+v", tc.name, h)
		}
	}
	after, _, _ := r.alloc.Usage(ctx)
	for i := range before {
		if before[i].Used != after[i].Used {
			t.Errorf("refused ADDs allocated: pool %s used %d -> %d", before[i].Name, before[i].Used, after[i].Used)
		}
	}

	// Directly through the kubeconfig brindled writes, without brindled.
	kc := filepath.Join(r.dir, "brindle-kubeconfig")
	if _, err := (&CNIKubeconfig{Clients: r.api.node, Path: kc, Log: quietLog()}).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	direct := r.list(t, fmt.Sprintf(`"kubernetes": {"kubeconfig": %q, "socket": %q},`, kc, filepath.Join(r.dir, "no.sock")))
	r.api.makePod(t, "plain", "direct", "node-1", map[string]string{podinfo.IPAddrs: `["10.60.0.77"]`}, nil)
	if got, err := r.add(t, direct, "c-direct", "plain", "direct", ""); err != nil || got != "10.60.0.77" {
		t.Fatalf("through the kubeconfig: %q %v", got, err)
	}

	// No Kubernetes at all (the lab, plain containerd): as before.
	noKube := r.list(t, fmt.Sprintf(`"kubernetes": {"socket": %q},`, filepath.Join(r.dir, "no.sock")))
	if got, err := r.add(t, noKube, "c-nokube", "plain", "fixed-but-unread", ""); err != nil || !inCIDR(got, "10.60.0.0/16") {
		t.Fatalf("without Kubernetes: %q %v", got, err)
	}
}

// An apiserver that does not answer: ADD fails with "try again later"
// within the kubernetes timeout, and allocates nothing.
func TestCNIUnreachableAPIServer(t *testing.T) {
	e := etcdtest.Start(t)
	alloc := ipam.New(etcdgrpc.New(e.Client))
	if _, err := alloc.ApplyPool(ctxT(t), conf.IPPool{Metadata: conf.ObjectMeta{Name: "p"}, Spec: conf.IPPoolSpec{CIDR: "10.60.0.0/16"}}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kc, renderKubeconfig("https://"+ln.Addr().String(), nil, "t"), 0o600)
	l, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "n",
		"plugins": [{"type": "brindle-ipam", "kubernetes": {"kubeconfig": %q, "timeout_seconds": 1},
			"ipam": {"etcd_endpoints": %q, "nodename": "node-1", "nodename_file": %q, "timeout_seconds": 60}}]}`,
		kc, e.Endpoint, filepath.Join(dir, "nodename"))))
	if err != nil {
		t.Fatal(err)
	}
	cni := testenv.NewCNIConfig(testenv.BinDir(t, "brindle-ipam"), t.TempDir())
	start := time.Now()
	_, err = cni.AddNetworkList(ctxT(t), l, rt("c1", "default", "p", "u"))
	took := time.Since(start)
	var terr *types.Error
	// The server never answers: without the 1 s kubernetes timeout the ADD
	// would wait for the ipam's 60 s. (30 s: generous under CI load.)
	if !errors.As(err, &terr) || terr.Code != types.ErrTryAgainLater || took > 30*time.Second {
		t.Fatalf("got %v after %s; want code 11 from the 1 s kubernetes timeout, long before the ipam's 60 s", err, took)
	}
	t.Logf("ADD gave up after %s: %v", took.Round(time.Millisecond), err)
	if h, _ := alloc.HandleOf(ctxT(t), "c1.eth0"); h != nil {
		t.Fatalf("left a handle: %+v", h)
	}
}

// listOn is r.list for another node.
func (r *cniRig) listOn(t *testing.T, node string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "k8s-pod-network",
		"plugins": [{"type": "brindle-ipam", "kubernetes": {"socket": %q},
			"ipam": {"etcd_endpoints": %q, "nodename": %q, "nodename_file": %q, "timeout_seconds": 4}}]}`,
		r.sock, r.etcd, node, filepath.Join(r.dir, node, "nodename"))))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Sticky StatefulSet addresses through the real plugin: web-0 keeps its
// address when recreated on another node (its endpoint moves there); a
// late DEL of the old sandbox changes nothing; a pod that is not a
// StatefulSet's cannot be sticky.
func TestCNISticky(t *testing.T) {
	r := newCNIRig(t)
	ctx := ctxT(t)
	r.api.makeNamespace(t, "db", nil)
	ctrl := true
	owner := &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "web", UID: "sts-1", Controller: &ctrl}
	sticky := map[string]string{podinfo.Sticky: "true"}
	n1, n2 := r.listOn(t, "node-1"), r.listOn(t, "node-2")
	id := ipam.StickyHandleID("db", "web-0", "eth0")

	p1 := r.api.makePod(t, "db", "web-0", "node-1", sticky, owner)
	first, err := r.add(t, n1, "sandbox-1", "db", "web-0", string(p1.UID))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := r.add(t, n1, "sandbox-1", "db", "web-0", string(p1.UID)); err != nil || again != first {
		t.Fatalf("repeated ADD: %q %v, want %s", again, err, first)
	}
	h, _ := r.alloc.HandleOf(ctx, id)
	if h == nil || h.Node != "node-1" || h.Attrs[ipam.AttrStatefulSet] != "web" || h.Attrs[ipam.AttrOrdinal] != "0" {
		t.Fatalf("sticky handle %+v", h)
	}
	// The pod is deleted: DEL detaches, the address stays with the handle.
	if err := r.cni.DelNetworkList(ctx, n1, rt("sandbox-1", "db", "web-0", string(p1.UID))); err != nil {
		t.Fatal(err)
	}
	if h, _ := r.alloc.HandleOf(ctx, id); h == nil || h.Attrs[ipam.AttrContainerID] != "" || len(h.Addrs) != 1 {
		t.Fatalf("after DEL: %+v, want the handle detached with its address", h)
	}
	if info, _ := r.alloc.ShowIP(ctx, netip.MustParseAddr(first)); !info.Allocated || info.Attrs[ipam.AttrContainerID] != "" {
		t.Fatalf("after DEL the block says %+v; want held, detached", info)
	}
	if k, _ := r.alloc.Check(ctx); !k.Clean() {
		t.Fatalf("a detached sticky handle is not clean for ipam check: %+v", k)
	}
	if err := r.api.admin.CoreV1().Pods("db").Delete(ctx, "web-0", forceDelete()); err != nil {
		t.Fatal(err)
	}
	// Recreated on node-2 (new UID, new sandbox): the same address.
	p2 := r.api.makePod(t, "db", "web-0", "node-2", sticky, owner)
	second, err := r.add(t, n2, "sandbox-2", "db", "web-0", string(p2.UID))
	if err != nil || second != first {
		t.Fatalf("recreated on node-2: %q %v, want %s", second, err, first)
	}
	ep := func(node string) bool {
		res, err := r.alloc.Store.Read(ctx, ipam.Get{Key: "endpoints/" + node + "/" + id})
		if err != nil {
			t.Fatal(err)
		}
		return len(res[0]) == 1
	}
	if ep("node-1") || !ep("node-2") {
		t.Fatalf("endpoint on node-1 %v, node-2 %v; want node-2 only", ep("node-1"), ep("node-2"))
	}
	info, _ := r.alloc.ShowIP(ctx, netip.MustParseAddr(first))
	if info.Affinity != "node-1" || info.Attrs[ipam.AttrNode] != "node-2" || info.Attrs[ipam.AttrContainerID] != "sandbox-2" {
		t.Fatalf("the address is %+v; want node-1's block, held for node-2's sandbox (a borrowed /32)", info)
	}
	// The old sandbox's DEL, late: nothing happens.
	if err := r.cni.DelNetworkList(ctx, n1, rt("sandbox-1", "db", "web-0", string(p1.UID))); err != nil {
		t.Fatal(err)
	}
	if h, _ := r.alloc.HandleOf(ctx, id); h == nil || h.Attrs[ipam.AttrContainerID] != "sandbox-2" || !ep("node-2") {
		t.Fatalf("a late DEL of the old sandbox detached the new one: %+v", h)
	}
	if k, _ := r.alloc.Check(ctx); !k.Clean() {
		t.Fatalf("ipam check: %+v", k)
	}
	// Not a StatefulSet's pod: refused by name.
	rsOwner := &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "rs-1", Controller: &ctrl}
	r.api.makePod(t, "db", "rs-x", "node-1", sticky, rsOwner)
	if _, err := r.add(t, n1, "sandbox-3", "db", "rs-x", ""); err == nil || !strings.Contains(err.Error(), "pod db/rs-x: annotation brindle.net/sticky: only pods of a StatefulSet can be sticky") {
		t.Fatalf("sticky ReplicaSet pod: %v", err)
	}
}

// Every CNI version a conflist may name: the plugin reads the pod's
// annotations (its fixed address) and records the pod's UID, by which the
// controller's GC judges the allocation, the same way; DEL releases it.
func TestCNIVersions(t *testing.T) {
	r := newCNIRig(t)
	r.api.makeNamespace(t, "apps", nil)
	for i, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		ip := fmt.Sprintf("10.60.1.%d", i+1)
		name := "pod-" + strings.ReplaceAll(v, ".", "-")
		uid := string(r.api.makePod(t, "apps", name, "node-1", map[string]string{podinfo.IPAddrs: `["` + ip + `"]`}, nil).UID)
		l, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion": %q, "name": "k8s-pod-network",
			"plugins": [{"type": "brindle-ipam",
				"ipam": {"etcd_endpoints": %q, "nodename": "node-1", "nodename_file": %q, "timeout_seconds": 30}}]}`,
			v, r.etcd, filepath.Join(r.dir, "nodename"))))
		if err != nil {
			t.Fatal(err)
		}
		// brindled's socket, found next to the nodename file as in a node.
		id := "c-" + name
		start := time.Now()
		got, err := r.add(t, l, id, "apps", name, uid)
		t.Logf("cniVersion %s: ADD gave %s in %s", v, got, time.Since(start).Round(time.Millisecond))
		if err != nil || got != ip {
			t.Errorf("cniVersion %s: ADD gave %q, %v; want the annotation's %s", v, got, err, ip)
			continue
		}
		h, err := r.alloc.HandleOf(ctxT(t), id+".eth0")
		if err != nil || h == nil || h.Attrs[ipam.AttrPodUID] != uid {
			t.Errorf("cniVersion %s: handle %+v (%v); want the pod's UID %s recorded", v, h, err, uid)
		}
		if err := r.cni.DelNetworkList(ctxT(t), l, rt(id, "apps", name, uid)); err != nil {
			t.Errorf("cniVersion %s: DEL: %v", v, err)
		}
		if h, _ := r.alloc.HandleOf(ctxT(t), id+".eth0"); h != nil {
			t.Errorf("cniVersion %s: DEL left the handle %+v", v, h)
		}
	}
}
