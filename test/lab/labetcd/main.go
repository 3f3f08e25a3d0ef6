// Command labetcd runs a one-member embedded etcd for the lab, in its own
// process: started inside the lab's underlay namespace, every socket it
// opens is there, including the connection its HTTP gateway makes to its
// own gRPC listener (which an etcd embedded in the test process would open
// from the wrong namespace). It prints its client URL on the first line of
// stdout once it serves, and runs until killed.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

func main() {
	dir := flag.String("dir", "", "data directory")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	flag.Parse()
	if err := run(*dir, *host); err != nil {
		fmt.Fprintln(os.Stderr, "labetcd:", err)
		os.Exit(1)
	}
}

func run(dir, host string) error {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Concrete ports: clients that sync the member list dial the advertised
	// URLs, so port 0 must not be advertised.
	cu, err := freeURL(host)
	if err != nil {
		return err
	}
	pu, err := freeURL(host)
	if err != nil {
		return err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		return fmt.Errorf("not ready after 30s")
	}
	fmt.Println(cu.String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err := <-e.Err():
		return err
	}
	return nil
}

func freeURL(host string) (*url.URL, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, err
	}
	defer l.Close()
	return url.Parse("http://" + l.Addr().String())
}
