// Command labetcd runs a one-member embedded etcd in a process of its own,
// for etcdtest.StartProcess: started inside a namespace, every socket it
// opens is there. It prints its client URL on the first line of stdout once
// it serves, and runs until SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/brindle-net/brindle/internal/etcdtest"
)

func main() {
	dir := flag.String("dir", "", "data directory")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	var o etcdtest.MemberOptions
	flag.IntVar(&o.ClientPort, "port", 0, "client port (0: any free one)")
	flag.StringVar(&o.Name, "name", "", "member name, in a cluster")
	flag.StringVar(&o.PeerURL, "peer-url", "", "this member's peer URL, in a cluster")
	flag.StringVar(&o.InitialCluster, "initial-cluster", "", "name=peerURL,... of every member, in a cluster")
	flag.Parse()
	m, err := etcdtest.StartMemberWith(*dir, *host, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "labetcd:", err)
		os.Exit(1)
	}
	fmt.Println(m.Endpoint)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	m.Stop()
}
