// Command brindle-ipam is the CNI IPAM plugin that allocates pod addresses
// from brindle's IP pools in etcd. The logic lives in package ipam; etcd is
// reached through its JSON gateway so that this binary, started for every
// ADD, links no gRPC client.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/ipam/store/etcdhttp"
)

func connect(c conf.EtcdConfig) (ipam.Store, func(), error) {
	s, err := etcdhttp.New(etcdhttp.Config{Endpoints: c.Endpoints, CACertFile: c.CACertFile, CertFile: c.CertFile, KeyFile: c.KeyFile})
	if err != nil {
		return nil, nil, err
	}
	return s, s.Close, nil
}

func main() {
	skel.PluginMainFuncs(ipam.NewPlugin(connect).Funcs(),
		version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"brindle-ipam: pod addresses from IP pools in etcd")
}
