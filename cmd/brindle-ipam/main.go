// Command brindle-ipam is the CNI IPAM plugin that allocates pod addresses
// from brindle's IP pools in etcd. The logic lives in package ipam.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/brindle-net/brindle/ipam"
)

func main() {
	skel.PluginMainFuncs(ipam.NewPlugin().Funcs(),
		version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"brindle-ipam: pod addresses from IP pools in etcd")
}
