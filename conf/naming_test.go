package conf

import "testing"

func TestHostVethName(t *testing.T) {
	cases := []struct{ ns, pod, id, want string }{
		{"kube-system", "coredns-abc", "x", HostVethName("kube-system", "coredns-abc", "other")},
		{"", "", "ctr1", HostVethName("", "", "ctr1")},
	}
	for _, c := range cases {
		got := HostVethName(c.ns, c.pod, c.id)
		if got != c.want || len(got) != 15 || got[:3] != "bri" {
			t.Errorf("HostVethName(%q,%q,%q) = %q", c.ns, c.pod, c.id, got)
		}
	}
	// Pinned: sha1("default.web") = 68caf03a5f4a...; operators derive the
	// name from the pod, so it must never change between releases.
	if got := HostVethName("default", "web", "x"); got != "bri68caf03a5f4a" {
		t.Errorf("HostVethName(default, web) = %s, want bri68caf03a5f4a", got)
	}
	if a, b := HostVethName("default", "web", "1"), HostVethName("default", "web", "2"); a != b {
		t.Errorf("pod identity must win over container ID: %s != %s", a, b)
	}
	if a, b := HostVethName("", "", "1"), HostVethName("", "", "2"); a == b {
		t.Errorf("distinct container IDs gave one name %s", a)
	}
}

func TestHostVethNameIf(t *testing.T) {
	if got := HostVethNameIf("default", "web", "x", "eth0"); got != "bri68caf03a5f4a" {
		t.Errorf("eth0 must keep the pinned name, got %s", got)
	}
	a, b := HostVethNameIf("default", "web", "x", "eth0"), HostVethNameIf("default", "web", "x", "net1")
	if a == b || len(b) != 15 || b[:3] != "bri" {
		t.Errorf("eth0 %s and net1 %s of one pod", a, b)
	}
	if HostVethNameIf("", "", "c1", "net1") == HostVethNameIf("", "", "c1", "net2") {
		t.Error("two interfaces of one container share a name")
	}
}
