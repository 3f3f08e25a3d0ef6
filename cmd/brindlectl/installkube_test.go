package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/brindle-net/brindle/internal/kubetest"
	"github.com/brindle-net/brindle/kube/podinfo"
)

// install-cni in Kubernetes writes the plugins' kubeconfig (mode 0600, a
// token of brindle-cni) and names it in the config; the plugins' lookup
// reaches the apiserver through it. Real apiserver.
func TestInstallCNIWritesKubeconfig(t *testing.T) {
	s := kubetest.Start(t)
	admin := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, err := range []error{
		func() error {
			_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "brindle-system"}}, metav1.CreateOptions{})
			return err
		}(),
		func() error {
			_, err := admin.CoreV1().ServiceAccounts("brindle-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "brindle-cni"}}, metav1.CreateOptions{})
			return err
		}(),
		func() error {
			_, err := admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: map[string]string{podinfo.IPAddrs: `["10.1.2.3"]`}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}, metav1.CreateOptions{})
			return err
		}(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	kc, err := s.WriteKubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	d := newInstallDirs(t)
	var out bytes.Buffer
	if err := run(append([]string{"--etcd-endpoints", "http://10.0.0.1:2379"}, d.args("--kubeconfig", kc)...), &out); err != nil {
		t.Fatalf("install-cni: %v\n%s", err, out.String())
	}
	path := filepath.Join(d.net, "brindle-kubeconfig")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig %v %v, want mode 0600", fi, err)
	}
	_, ic := readConflist(t, filepath.Join(d.net, "10-brindle.conflist"))
	if ic.Kubernetes.Kubeconfig != path {
		t.Fatalf("conflist kubernetes.kubeconfig %q, want %q", ic.Kubernetes.Kubeconfig, path)
	}
	// The token is brindle-cni's: without the manifests' RBAC (applied in
	// package kube's tests, where the read succeeds) the apiserver says so.
	_, err = podinfo.Lookup(ctx, podinfo.Config{Kubeconfig: path}, "default", "p", "")
	if err == nil || !strings.Contains(err.Error(), `User \"system:serviceaccount:brindle-system:brindle-cni\" cannot get resource \"pods\"`) {
		t.Fatalf("through the written kubeconfig: %v", err)
	}
	// A second run keeps the fresh token.
	out.Reset()
	if err := run(append([]string{"--etcd-endpoints", "http://10.0.0.1:2379"}, d.args("--kubeconfig", kc)...), &out); err != nil || !strings.Contains(out.String(), "kept "+path) {
		t.Fatalf("second install-cni: %v\n%s", err, out.String())
	}
	// Outside Kubernetes nothing is written and the config names none.
	d2 := newInstallDirs(t)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if err := run(append([]string{"--etcd-endpoints", "http://10.0.0.1:2379"}, d2.args()...), &out); err != nil {
		t.Fatal(err)
	}
	if _, ic := readConflist(t, filepath.Join(d2.net, "10-brindle.conflist")); ic.Kubernetes.Kubeconfig != "" {
		t.Fatalf("kubeconfig named outside Kubernetes: %q", ic.Kubernetes.Kubeconfig)
	}
	if _, err := os.Stat(filepath.Join(d2.net, "brindle-kubeconfig")); !os.IsNotExist(err) {
		t.Fatalf("kubeconfig written outside Kubernetes: %v", err)
	}
}
