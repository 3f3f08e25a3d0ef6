package conf

import (
	"strings"
	"testing"
)

func TestNodeRouteReflectorByFieldOrLabel(t *testing.T) {
	for _, c := range []struct {
		name string
		n    Node
		want string
		err  string
	}{
		{"plain", Node{Name: "a", IPv4Address: "10.0.0.1/24"}, "", ""},
		{"field", Node{Name: "a", IPv4Address: "10.0.0.1/24", RouteReflectorClusterID: "224.0.0.1"}, "224.0.0.1", ""},
		{"label", Node{Name: "a", IPv4Address: "10.0.0.1/24", Labels: map[string]string{RouteReflectorLabel: "224.0.0.2"}}, "224.0.0.2", ""},
		{"field wins", Node{Name: "a", IPv4Address: "10.0.0.1/24", RouteReflectorClusterID: "224.0.0.1",
			Labels: map[string]string{RouteReflectorLabel: "224.0.0.2"}}, "224.0.0.1", ""},
		{"bad label", Node{Name: "a", IPv4Address: "10.0.0.1/24", Labels: map[string]string{RouteReflectorLabel: "true"}}, "",
			`label brindle.net/route-reflector-cluster-id="true": want a dotted quad`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.n.Validate()
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Validate: %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.n.RRClusterID(); got != c.want {
				t.Fatalf("RRClusterID = %q, want %q", got, c.want)
			}
		})
	}
}
