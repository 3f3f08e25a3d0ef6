package kube

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/brindle-net/brindle/kube/podinfo"
)

// brindled's socket answers from its cache (this node's pods) and reads
// through for others; the CNI kubeconfig it writes reaches the same pods
// directly, with a token that may do nothing else. Real apiserver, real
// RBAC from conf/k8s.
func TestPodSocketAndCNIKubeconfig(t *testing.T) {
	a := startAPI(t)
	ctx := ctxT(t)
	a.makeNamespace(t, "apps", map[string]string{podinfo.IPv4Pools: `["ns-pool"]`, "unrelated": "x"})
	ctrl := true
	web := a.makePod(t, "apps", "web-0", "n1", map[string]string{podinfo.CalicoIPAddrs: `["10.60.0.5"]`, podinfo.Sticky: "true", "other": "y"},
		&metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "web", UID: "sts-uid", Controller: &ctrl})
	a.makePod(t, "apps", "elsewhere", "n2", nil, nil)

	cache := NewPodCache(a.node, "n1")
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cache.Run(cctx)
	waitFor(t, 20*time.Second, "pod cache synced", cache.Synced)
	sock := filepath.Join(t.TempDir(), "brindled.sock")
	done := make(chan error, 1)
	go func() { done <- ServeSocket(cctx, sock, cache, quietLog()) }()
	waitFor(t, 5*time.Second, "socket", func() bool { _, err := os.Stat(sock); return err == nil })
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}

	info, err := podinfo.Lookup(ctx, podinfo.Config{Socket: sock}, "apps", "web-0", string(web.UID))
	if err != nil {
		t.Fatal(err)
	}
	if info.Source != "brindled" || info.UID != string(web.UID) || info.Annotations[podinfo.CalicoIPAddrs] != `["10.60.0.5"]` ||
		info.Annotations["other"] != "" || info.NamespaceAnnotations[podinfo.IPv4Pools] != `["ns-pool"]` ||
		info.Owner == nil || info.Owner.Name != "web" || info.Owner.UID != "sts-uid" {
		t.Fatalf("from brindled: %+v owner %+v", info, info.Owner)
	}
	r, err := podinfo.Parse(info)
	if err != nil || len(r.IPs) != 1 || r.IPs[0].String() != "10.60.0.5" || r.IPv4Pools[0] != "ns-pool" ||
		r.Sticky == nil || r.Sticky.StatefulSet != "web" || r.Sticky.Ordinal != 0 {
		t.Fatalf("parsed %+v %v", r, err)
	}
	// Another node's pod is not cached: read through.
	if info, err := podinfo.Lookup(ctx, podinfo.Config{Socket: sock}, "apps", "elsewhere", ""); err != nil || info.Name != "elsewhere" {
		t.Fatalf("read-through: %+v %v", info, err)
	}
	if _, err := podinfo.Lookup(ctx, podinfo.Config{Socket: sock}, "apps", "nope", ""); !errors.Is(err, podinfo.ErrNotFound) {
		t.Fatalf("missing pod: %v", err)
	}

	// The CNI kubeconfig: written as brindle-node, used as brindle-cni.
	path := filepath.Join(t.TempDir(), "brindle-kubeconfig")
	k := &CNIKubeconfig{Clients: a.node, Path: path, Log: quietLog()}
	if wrote, err := k.Ensure(ctx); err != nil || !wrote {
		t.Fatalf("ensure: %v %v", wrote, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v, want 0600", fi.Mode().Perm())
	}
	info, err = podinfo.Lookup(ctx, podinfo.Config{Kubeconfig: path}, "apps", "web-0", "")
	if err != nil || info.Source != "apiserver" || info.Annotations[podinfo.CalicoIPAddrs] != `["10.60.0.5"]` ||
		info.NamespaceAnnotations[podinfo.IPv4Pools] != `["ns-pool"]` || info.Owner == nil || info.Owner.Kind != "StatefulSet" {
		t.Fatalf("direct: %+v %v", info, err)
	}
	// brindled not answering (stale socket file): the kubeconfig is used.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	os.WriteFile(stale, nil, 0o600)
	if info, err := podinfo.Lookup(ctx, podinfo.Config{Socket: stale, Kubeconfig: path}, "apps", "web-0", ""); err != nil || info.Source != "apiserver" {
		t.Fatalf("fallback: %+v %v", info, err)
	}
	if _, err := podinfo.Lookup(ctx, podinfo.Config{Socket: filepath.Join(t.TempDir(), "none")}, "apps", "web-0", ""); !errors.Is(err, podinfo.ErrNoAccess) {
		t.Fatalf("no access: %v", err)
	}
	// The CNI token reads a pod and a namespace and nothing else.
	cni := cniClientsFrom(t, path)
	if err := cni.Typed.Core.Get().Namespace("apps").Resource("pods").Do(ctx).Error(); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("brindle-cni may list pods: %v", err)
	}
	if err := cni.Typed.Core.Get().Namespace(DefaultNamespace).Resource("secrets").Name("x").Do(ctx).Error(); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("brindle-cni may read secrets: %v", err)
	}
	// brindle-node may not mint tokens for other accounts.
	other := &CNIKubeconfig{Clients: a.node, Path: filepath.Join(t.TempDir(), "k"), ServiceAccount: "brindle-node", Log: quietLog()}
	if _, err := other.Ensure(ctx); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("brindle-node minted a token for brindle-node: %v", err)
	}

	// Renewal: nothing while the token is young; a new one when two
	// thirds of its lifetime are gone.
	before, _ := os.ReadFile(path)
	if wrote, err := k.Ensure(ctx); err != nil || wrote {
		t.Fatalf("young token rewritten: %v %v", wrote, err)
	}
	k.Now = func() time.Time { return time.Now().Add(17 * time.Hour) }
	if wrote, err := k.Ensure(ctx); err != nil || !wrote {
		t.Fatalf("old token not renewed: %v %v", wrote, err)
	}
	after, _ := os.ReadFile(path)
	if string(after) == string(before) {
		t.Fatal("renewed kubeconfig is unchanged")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("socket server: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func cniClientsFrom(t *testing.T, kubeconfig string) *Clients {
	t.Helper()
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An apiserver that accepts connections and never answers: the lookup
// gives up when its context does.
func TestLookupUnreachableBounded(t *testing.T) {
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
	path := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(path, []byte(`{"apiVersion":"v1","kind":"Config","current-context":"c",
		"clusters":[{"name":"k","cluster":{"server":"https://`+ln.Addr().String()+`"}}],
		"users":[{"name":"u","user":{"token":"t"}}],
		"contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}]}`), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = podinfo.Lookup(ctx, podinfo.Config{Kubeconfig: path}, "default", "p", "")
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("lookup against a silent server: %v after %s", err, time.Since(start))
	}
	t.Logf("gave up after %s: %v", time.Since(start).Round(time.Millisecond), err)
}
