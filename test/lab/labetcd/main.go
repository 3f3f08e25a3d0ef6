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
	flag.Parse()
	m, err := etcdtest.StartMember(*dir, *host)
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
