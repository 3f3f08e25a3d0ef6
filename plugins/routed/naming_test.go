package routed

import "testing"

func TestAlias(t *testing.T) {
	a := attachment{Network: "k8s-pod-network", ContainerID: "0123abc", IfName: "eth0"}
	got, ok := parseAlias(a.alias())
	if !ok || got != a {
		t.Fatalf("round trip: %+v %v", got, ok)
	}
	for _, bad := range []string{"", "brindle:", "brindle:a/b", "other:a/b/c", "brindle:a//c"} {
		if _, ok := parseAlias(bad); ok {
			t.Errorf("parseAlias(%q) accepted", bad)
		}
	}
}

func TestParseArgs(t *testing.T) {
	p := parseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=x")
	if p.Namespace != "default" || p.Name != "web-0" {
		t.Fatalf("%+v", p)
	}
}
