// Command brindle is the CNI plugin that kubelet and containerd run for each
// pod: a veth with the pod's /32, routed through the host. See plugins/routed.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/brindle-net/brindle/internal/buildinfo"
	"github.com/brindle-net/brindle/plugins/routed"
)

func main() {
	skel.PluginMainFuncs(routed.Funcs,
		version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"brindle CNI plugin "+buildinfo.Version)
}
