package routed

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Kernel conventions shared by ADD, CHECK, DEL and GC.
var (
	// HostVethMAC is the MAC of every host-side veth. Pods only ever talk to
	// it, so one well-known address is enough, and it makes the gateway's
	// neighbour entry the same in every pod.
	HostVethMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	// GatewayV4 is the link-local next hop every pod routes through; the host
	// veth answers ARP for it by proxy ARP.
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	// GatewayV6 is the link-local address the kernel derives (EUI-64) from
	// HostVethMAC: the pods' IPv6 default route points at it.
	GatewayV6 = netip.MustParseAddr("fe80::ecee:eeff:feee:eeee")
)

const (
	// aliasPrefix starts the IFLA_IFALIAS that ADD stamps on the host veth,
	// so DEL and GC can tell which attachment owns it.
	aliasPrefix = "brindle:"
)

// attachment identifies one CNI attachment: what GC's valid list names.
type attachment struct {
	Network     string
	ContainerID string
	IfName      string
}

func (a attachment) alias() string {
	return fmt.Sprintf("%s%s/%s/%s", aliasPrefix, a.Network, a.ContainerID, a.IfName)
}

// parseAlias reads an alias written by alias(); ok is false for links that
// brindle did not stamp.
func parseAlias(s string) (attachment, bool) {
	rest, ok := strings.CutPrefix(s, aliasPrefix)
	if !ok {
		return attachment{}, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return attachment{}, false
	}
	return attachment{Network: parts[0], ContainerID: parts[1], IfName: parts[2]}, true
}

// podArgs are the CNI_ARGS keys the plugin uses.
type podArgs struct {
	Namespace string
	Name      string
}

// parseArgs reads K8S_POD_NAMESPACE and K8S_POD_NAME from CNI_ARGS. Unknown
// keys are ignored: CNI_ARGS is shared with the IPAM plugin and the runtime.
func parseArgs(s string) podArgs {
	var p podArgs
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "K8S_POD_NAMESPACE":
			p.Namespace = v
		case "K8S_POD_NAME":
			p.Name = v
		}
	}
	return p
}
