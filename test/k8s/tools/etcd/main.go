// Command etcd is the etcd server (go.etcd.io/etcd/server/v3, the version
// pinned in go.mod) for the test cluster's apiserver and brindle's etcd image.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
