package enforcer_test

import (
	"os"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/kube"
	"github.com/brindle-net/brindle/policy/enforcer"
)

// TestManifestRBAC: the ClusterRole conf/k8s gives brindled's
// ServiceAccount is enough for the policy informers (checked against the
// real apiserver's RBAC), and without it they cannot list.
func TestManifestRBAC(t *testing.T) {
	s := apiserver(t)
	cs := s.Client(t)
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(root + "/conf/k8s/20-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			if r.Name == "brindle-node" {
				if _, err := cs.RbacV1().ClusterRoles().Create(t.Context(), &r, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		case "ClusterRoleBinding":
			var r rbacv1.ClusterRoleBinding
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			if r.Name == "brindle-node" {
				if _, err := cs.RbacV1().ClusterRoleBindings().Create(t.Context(), &r, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// Through brindled's own API clients (kube.API), as brindled runs it.
	as := func(user string) *enforcer.Kube {
		c := rest.CopyConfig(s.Config)
		c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
		a, err := kube.NewAPI(c)
		if err != nil {
			t.Fatal(err)
		}
		return enforcer.NewKube(a.Core, a.Networking, "n")
	}
	k := as("system:serviceaccount:brindle-system:brindle-node")
	k.Start(t.Context())
	if !k.WaitSynced(t.Context(), 20*time.Second) {
		t.Fatal("the policy informers did not sync as brindle-node with conf/k8s's RBAC")
	}
	other := as("system:serviceaccount:brindle-system:nobody")
	other.Start(t.Context())
	if other.WaitSynced(t.Context(), 3*time.Second) {
		t.Fatal("the informers synced for an account with no role: the check proves nothing")
	}
}
