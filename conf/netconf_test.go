package conf

import (
	"strings"
	"testing"
)

func TestParseNetConf(t *testing.T) {
	cases := []struct {
		name, json, wantErr string
		check               func(*testing.T, *NetConf)
	}{
		{name: "defaults", json: `{"cniVersion":"1.1.0","name":"k8s","type":"brindle","ipam":{"type":"brindle-ipam"}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.LogFile != DefaultLogFile || c.LogLevel != "info" || c.MTU != 0 {
					t.Errorf("defaults not applied: %+v", c)
				}
			}},
		{name: "mtu kept", json: `{"name":"k8s","type":"brindle","mtu":1450,"ipam":{"type":"host-local"}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.MTU != 1450 {
					t.Errorf("mtu = %d", c.MTU)
				}
			}},
		{name: "malformed", json: `{"name":`, wantErr: "network config: malformed JSON"},
		{name: "no ipam", json: `{"name":"k8s","type":"brindle"}`, wantErr: "ipam.type: is missing"},
		{name: "ipam path", json: `{"name":"k8s","type":"brindle","ipam":{"type":"../evil"}}`, wantErr: `ipam.type: "../evil" is not a plugin name`},
		{name: "mtu low", json: `{"name":"k8s","type":"brindle","mtu":67,"ipam":{"type":"x"}}`, wantErr: "mtu: 67 is out of range"},
		{name: "mtu negative", json: `{"name":"k8s","type":"brindle","mtu":-1,"ipam":{"type":"x"}}`, wantErr: "mtu: -1 is out of range"},
		{name: "mtu high", json: `{"name":"k8s","type":"brindle","mtu":65536,"ipam":{"type":"x"}}`, wantErr: "mtu: 65536 is out of range"},
		{name: "log level", json: `{"name":"k8s","type":"brindle","logLevel":"trace","ipam":{"type":"x"}}`, wantErr: `logLevel: "trace" is not one of`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseNetConf([]byte(c.json))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, got)
		})
	}
}
