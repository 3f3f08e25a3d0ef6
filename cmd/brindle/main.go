// Command brindle is the CNI plugin that kubelet and containerd run for each
// pod: a veth with the pod's /32, routed through the host. See plugins/routed.
// A config whose ipam.type is brindle-ipam has its IPAM run in this process
// (the code of cmd/brindle-ipam); any other IPAM plugin is executed.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/brindle-net/brindle/internal/buildinfo"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdhttp"
	"github.com/brindle-net/brindle/plugins/routed"
)

func main() {
	p := &routed.Plugin{IPAM: ipam.NewPlugin(etcdhttp.Connect)}
	skel.PluginMainFuncs(p.Funcs(),
		version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"brindle CNI plugin "+buildinfo.Version)
}
