// Command brindle-ipam is the CNI IPAM plugin that allocates pod addresses
// from brindle's IP pools in etcd. The logic lives in package ipam; etcd is
// reached through its JSON gateway so that this binary, started for every
// ADD, links no gRPC client. The brindle plugin runs the same code in its
// own process when its config names brindle-ipam (plugins/routed); this
// binary serves every other plugin and runtime that delegates to it.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdhttp"
)

func main() {
	skel.PluginMainFuncs(ipam.NewPlugin(etcdhttp.Connect).Funcs(),
		version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"brindle-ipam: pod addresses from IP pools in etcd")
}
