package kube

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/brindle-net/brindle/internal/kubetest"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// apiserver is a real kube-apiserver with brindle's namespace,
// ServiceAccounts and RBAC from conf/k8s applied, and clients that act as
// the brindle-node ServiceAccount (so every test runs under the RBAC the
// manifests grant, not as an administrator).
type apiserver struct {
	*kubetest.Server
	admin kubernetes.Interface
	node  *Clients // as system:serviceaccount:brindle-system:brindle-node
}

func startAPI(t *testing.T) *apiserver {
	t.Helper()
	s := kubetest.Start(t)
	a := &apiserver{Server: s, admin: s.Client(t)}
	applyManifests(t, a.admin, "00-namespace.yaml", "20-rbac.yaml")
	a.node = a.clientsAs(t, "brindle-node")
	return a
}

// clientsAs returns clients with a token of a brindle-system ServiceAccount.
func (a *apiserver) clientsAs(t *testing.T, sa string) *Clients {
	t.Helper()
	tr, err := a.admin.CoreV1().ServiceAccounts(DefaultNamespace).CreateToken(ctxT(t), sa, &authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", sa, err)
	}
	cfg := rest.AnonymousClientConfig(a.Config)
	cfg.BearerToken = tr.Status.Token
	c, err := NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// applyManifests creates the objects of conf/k8s files that are
// namespaces, ServiceAccounts and RBAC.
func applyManifests(t *testing.T, cs kubernetes.Interface, files ...string) {
	t.Helper()
	ctx := ctxT(t)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join("..", "conf", "k8s", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split("\n"+string(data), "\n---\n") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if err := create(ctx, cs, obj); err != nil {
				t.Fatalf("%s: create %T: %v", f, obj, err)
			}
		}
	}
}

func create(ctx context.Context, cs kubernetes.Interface, obj runtime.Object) error {
	var err error
	o := metav1.CreateOptions{}
	switch v := obj.(type) {
	case *corev1.Namespace:
		_, err = cs.CoreV1().Namespaces().Create(ctx, v, o)
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(v.Namespace).Create(ctx, v, o)
	case *rbacv1.ClusterRole:
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, v, o)
	case *rbacv1.ClusterRoleBinding:
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, v, o)
	case *rbacv1.Role:
		_, err = cs.RbacV1().Roles(v.Namespace).Create(ctx, v, o)
	case *rbacv1.RoleBinding:
		_, err = cs.RbacV1().RoleBindings(v.Namespace).Create(ctx, v, o)
	}
	return err
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// makePod creates a pod bound to node (no scheduler runs).
func (a *apiserver) makePod(t *testing.T, ns, name, node string, ann map[string]string, owner *metav1.OwnerReference) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	got, err := a.admin.CoreV1().Pods(ns).Create(ctxT(t), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return got
}

func (a *apiserver) makeNamespace(t *testing.T, name string, ann map[string]string) {
	t.Helper()
	if _, err := a.admin.CoreV1().Namespaces().Create(ctxT(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forceDelete deletes at once: no kubelet runs to finish a graceful delete.
func forceDelete() metav1.DeleteOptions {
	zero := int64(0)
	return metav1.DeleteOptions{GracePeriodSeconds: &zero}
}
