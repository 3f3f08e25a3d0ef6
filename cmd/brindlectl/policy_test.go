package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/brindle-net/brindle/internal/kubetest"
)

// TestPolicyCommands: `policy test` and `policy show` answer from the
// objects in a real apiserver, as the nodes compile them.
func TestPolicyCommands(t *testing.T) {
	s := kubetest.Start(t)
	cs := s.Client(t)
	ctx := t.Context()
	kc, err := s.WriteKubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"shop", "ops"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := func(ns, name, app, ip string) {
		p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "x",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.PodIPs, p.Status.Phase = []corev1.PodIP{{IP: ip}}, corev1.PodRunning
		if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod("shop", "db", "db", "10.1.0.1")
	pod("shop", "web", "web", "10.1.0.2")
	pod("ops", "probe", "probe", "10.1.0.3")
	http := intstr.FromString("http")
	_, err = cs.NetworkingV1().NetworkPolicies("shop").Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "db-from-web"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &http}}}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := runContext(context.Background(), append(args, "--kubeconfig", kc), nil, &out, io.Discard)
		return out.String(), err
	}
	for _, c := range []struct {
		args    []string
		allowed bool
		want    string
	}{
		{[]string{"policy", "test", "shop/web", "shop/db", "8080/TCP"}, true, "allowed by shop/db-from-web ingress[0]"},
		{[]string{"policy", "test", "shop/web", "shop/db", "80"}, false, "selected by shop/db-from-web, none allows it"},
		{[]string{"policy", "test", "ops/probe", "shop/db", "8080/tcp"}, false, "DENIED"},
		{[]string{"policy", "test", "10.9.9.9", "shop/web", "8080/UDP"}, true, "no policy selects it"},
	} {
		out, err := run(c.args...)
		if (err == nil) != c.allowed || !strings.Contains(out, c.want) {
			t.Errorf("%v: err=%v, out:\n%s\nwant allowed=%v and %q", c.args, err, out, c.allowed, c.want)
		}
	}
	out, err := run("policy", "show", "shop/db", "--brindled", "http://127.0.0.1:1")
	if err != nil {
		t.Fatalf("policy show: %v\n%s", err, out)
	}
	for _, want := range []string{"shop/db-from-web", "pods app=web in namespace shop", "http/TCP", "(none: open)", "brindled at http://127.0.0.1:1"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy show lacks %q:\n%s", want, out)
		}
	}
	if _, err := run("policy", "test", "shop/web", "shop/db", "80/ICMP"); err == nil || !strings.Contains(err.Error(), "protocol") {
		t.Errorf("bad protocol: %v", err)
	}
}
