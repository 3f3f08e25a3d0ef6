package kubetest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestRunNamesMissingBinary(t *testing.T) {
	t.Setenv("BRINDLE_K8S_BIN", t.TempDir())
	_, err := Run(t.TempDir())
	if !errors.Is(err, ErrMissing) {
		t.Fatalf("Run with no binaries: got %v, want ErrMissing", err)
	}
	if want := "etcd not in"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the binary (%q)", err, want)
	}
}

// TestServer stores and watches objects through the real apiserver, and
// enforces RBAC: a user with no role is refused.
func TestServer(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubetest", Labels: map[string]string{"team": "a"}}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := c.CoreV1().Pods("kubetest").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "kubetest"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "pause"}}},
	}
	if _, err := c.CoreV1().Pods("kubetest").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		if p, ok := ev.Object.(*corev1.Pod); ev.Type != watch.Added || !ok || p.Name != "a" {
			t.Fatalf("watch event %s %T, want ADDED pod a", ev.Type, ev.Object)
		}
	case <-ctx.Done():
		t.Fatal("no watch event for the created pod")
	}

	anon := rest.CopyConfig(s.Config)
	anon.Impersonate = rest.ImpersonationConfig{UserName: "nobody"}
	ac, err := kubernetes.NewForConfig(anon)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ac.CoreV1().Pods("kubetest").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("list pods as a user without a role: got %v, want Forbidden", err)
	}

	path, err := s.WriteKubeconfig()
	if err != nil || path == "" {
		t.Fatalf("WriteKubeconfig: %q %v", path, err)
	}
}
