package smoke

// The CNI plugins' Kubernetes identity (issue 10) on the real cluster.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestKubeCNIKubeconfig: on every worker, /etc/cni/net.d/brindle-kubeconfig
// is mode 0600, named by the conflist, and holds a token of
// brindle-system/brindle-cni that has not expired; that account may get
// pods and namespaces and nothing more (no list, no Secrets).
func TestKubeCNIKubeconfig(t *testing.T) {
	c := connect(t)
	for i, n := range c.workers()[:2] {
		spec := netexec()
		spec.Volumes = []corev1.Volume{{Name: "cni", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc/cni/net.d"}}}}
		spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cni", MountPath: "/host", ReadOnly: true}}
		name := fmt.Sprintf("cni%d", i)
		c.pod(name, n.Name, spec, nil)
		if got := c.sh(name, "stat -c '%a %u' /host/brindle-kubeconfig"); got != "600 0" {
			t.Errorf("%s: brindle-kubeconfig mode and owner %q, want 600 0", n.Name, got)
		}
		if got := c.sh(name, "grep -c '/etc/cni/net.d/brindle-kubeconfig' /host/10-brindle.conflist || true"); got == "0" {
			t.Errorf("%s: 10-brindle.conflist does not name /etc/cni/net.d/brindle-kubeconfig", n.Name)
		}
		var kc struct {
			Users []struct {
				User struct {
					Token string `json:"token"`
				} `json:"user"`
			} `json:"users"`
		}
		raw := c.sh(name, "cat /host/brindle-kubeconfig")
		if err := json.Unmarshal([]byte(raw), &kc); err != nil || len(kc.Users) != 1 {
			t.Errorf("%s: brindle-kubeconfig: %v", n.Name, err)
			continue
		}
		parts := strings.Split(kc.Users[0].User.Token, ".")
		var claims struct {
			Exp, Iat int64
			Sub      string `json:"sub"`
		}
		if len(parts) == 3 {
			b, _ := base64.RawURLEncoding.DecodeString(parts[1])
			_ = json.Unmarshal(b, &claims)
		}
		exp := time.Unix(claims.Exp, 0)
		if claims.Sub != "system:serviceaccount:brindle-system:brindle-cni" || !exp.After(time.Now()) {
			t.Errorf("%s: token of %q expiring %s, want brindle-system:brindle-cni, not expired", n.Name, claims.Sub, exp)
		}
		t.Logf("%s: token of %s, lifetime %s, expires in %s", n.Name, claims.Sub,
			time.Duration(claims.Exp-claims.Iat)*time.Second, time.Until(exp).Round(time.Minute))
	}
	const sa = "system:serviceaccount:brindle-system:brindle-cni"
	for _, tc := range []struct {
		verb, resource string
		want           bool
	}{{"get", "pods", true}, {"get", "namespaces", true}, {"list", "pods", false}, {"watch", "pods", false}, {"get", "secrets", false}, {"create", "pods", false}} {
		r, err := c.cs.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:brindle-system", "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: tc.verb, Resource: tc.resource, Namespace: "default"}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != tc.want {
			t.Errorf("brindle-cni may %s %s: %v, want %v (%s)", tc.verb, tc.resource, r.Status.Allowed, tc.want, r.Status.Reason)
		}
	}
}
