// Package lab builds a multi-node brindle cluster out of network
// namespaces on one machine: an underlay namespace holding one or two
// bridges (two subnets, routed between by the underlay itself), an etcd
// (embedded) listening on the underlay, N node namespaces each running a
// real brindled, and pods attached on any node through the real brindle +
// brindle-ipam binaries via libcni. It is the base of every e2e test, of the
// benchmarks and of `make demo`; everything it makes, Close removes.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/ipam"
)

// Config describes a lab.
type Config struct {
	// Nodes is the number of nodes; with Subnets 2, the last
	// SecondSubnetNodes of them sit in the second subnet.
	Nodes             int
	Subnets           int
	SecondSubnetNodes int
	// BinDir holds brindle, brindle-ipam and brindled.
	BinDir string
	// Dir is the lab's scratch directory (logs, node name files, etcd data).
	Dir string
	// Pools are applied before the daemons start; default one IPv4 pool,
	// 10.244.0.0/16 with /26 blocks.
	Pools []conf.IPPool
	// BGP, when set, is stored as bgp/config before the daemons start.
	BGP *conf.BGPConfiguration
	// IPv6 gives the underlay and the nodes IPv6 addresses too, adds an
	// IPv6 pool (fd00:244::/48) and makes pods dual-stack.
	IPv6 bool
	// DaemonArgs are extra brindled flags for every node; NodeArgs, when
	// set, adds flags for node i (0-based), e.g. to make it a reflector.
	DaemonArgs []string
	NodeArgs   func(i int) []string
	// NoDaemons builds the nodes without starting brindled (tests of the
	// CNI plugins alone: their nodename files are written as brindled would).
	NoDaemons bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Lab is a running cluster of namespaces.
type Lab struct {
	cfg      Config
	Underlay ns.NetNS
	Etcd     *clientv3.Client
	// EtcdURL is how nodes reach etcd (an address on the underlay).
	EtcdURL string
	Nodes   []*Node

	mu       sync.Mutex
	cleanups []func()
	etcdStop func()
}

// DefaultPool is the pool a lab gets when Config.Pools is empty.
func DefaultPool() conf.IPPool {
	p := conf.IPPool{Metadata: conf.ObjectMeta{Name: "default-ipv4"}, Spec: conf.IPPoolSpec{CIDR: "10.244.0.0/16"}}
	p.Default()
	return p
}

func (l *Lab) logf(format string, args ...any) {
	if l.cfg.Log != nil {
		fmt.Fprintf(l.cfg.Log, "==> "+format+"\n", args...)
	}
}

func (l *Lab) onClose(f func()) {
	l.mu.Lock()
	l.cleanups = append(l.cleanups, f)
	l.mu.Unlock()
}

// New builds the lab and starts a brindled on every node; it waits until
// every node is registered, not until BGP has converged (see WaitReady).
func New(ctx context.Context, cfg Config) (_ *Lab, retErr error) {
	if cfg.Subnets == 0 {
		cfg.Subnets = 1
	}
	if len(cfg.Pools) == 0 {
		cfg.Pools = []conf.IPPool{DefaultPool()}
		if cfg.IPv6 {
			cfg.Pools = append(cfg.Pools, DefaultPool6())
		}
	}
	l := &Lab{cfg: cfg}
	defer func() {
		if retErr != nil {
			l.Close()
		}
	}()
	u, cleanup, err := testenv.CreateNS()
	if err != nil {
		return nil, fmt.Errorf("underlay netns: %w", err)
	}
	l.onClose(cleanup)
	l.Underlay = u
	l.logf("underlay: %d subnet(s), router and etcd on %s", cfg.Subnets, gateway(0))
	if err := l.buildUnderlay(); err != nil {
		return nil, err
	}
	if err := l.startEtcd(); err != nil {
		return nil, err
	}
	if err := l.seed(ctx); err != nil {
		return nil, err
	}
	for i := range cfg.Nodes {
		n, err := l.addNode(i)
		if err != nil {
			return nil, err
		}
		l.Nodes = append(l.Nodes, n)
	}
	if cfg.NoDaemons {
		for _, n := range l.Nodes {
			if err := os.WriteFile(n.nodenameFile(), []byte(n.Name+"\n"), 0o644); err != nil {
				return nil, err
			}
		}
		return l, nil
	}
	if err := l.StartDaemons(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// StartDaemons starts brindled on every node that does not run it and
// waits until each is registered (New does it, unless NoDaemons).
func (l *Lab) StartDaemons(ctx context.Context) error {
	for _, n := range l.Nodes {
		if err := n.Start(); err != nil {
			return err
		}
	}
	for _, n := range l.Nodes {
		if err := n.waitRegistered(ctx); err != nil {
			return err
		}
	}
	return nil
}

// DefaultPool6 is the IPv6 pool of a lab with IPv6.
func DefaultPool6() conf.IPPool {
	p := conf.IPPool{Metadata: conf.ObjectMeta{Name: "default-ipv6"}, Spec: conf.IPPoolSpec{CIDR: "fd00:244::/48"}}
	p.Default()
	return p
}

func gateway(subnet int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(subnet + 1), 254})
}

// gateway6 is the router's IPv6 address on a subnet.
func gateway6(subnet int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:198:19:%d::fe", subnet+1))
}

// buildUnderlay makes the bridges, with the router's address on each, and
// turns forwarding on so the underlay routes between the subnets.
func (l *Lab) buildUnderlay() error {
	return l.Underlay.Do(func(ns.NetNS) error {
		if err := noDAD(); err != nil {
			return err
		}
		if err := linkUp("lo"); err != nil {
			return err
		}
		for s := range l.cfg.Subnets {
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("br%d", s)}}
			if err := netlink.LinkAdd(br); err != nil {
				return fmt.Errorf("bridge: %w", err)
			}
			if err := addAddr(br.Name, netip.PrefixFrom(gateway(s), 24)); err != nil {
				return err
			}
			if l.cfg.IPv6 {
				if err := addAddr(br.Name, netip.PrefixFrom(gateway6(s), 64)); err != nil {
					return err
				}
			}
			if err := linkUp(br.Name); err != nil {
				return err
			}
		}
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644); err != nil {
			return err
		}
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
}

// startEtcd runs etcd inside the underlay namespace, so every node reaches
// it on the router's address, and connects the lab's own client through
// that namespace.
func (l *Lab) startEtcd() error {
	host := gateway(0).String()
	m, err := etcdtest.StartProcess(l.Underlay, l.cfg.BinDir, filepath.Join(l.cfg.Dir, "etcd"), host)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	l.EtcdURL = m.Endpoint
	l.etcdStop = m.Stop
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{l.EtcdURL},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(etcdtest.DialIn(l.Underlay))},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return err
	}
	l.Etcd = cli
	l.logf("etcd: %s", l.EtcdURL)
	return nil
}

// seed stores the pools and the BGP configuration.
func (l *Lab) seed(ctx context.Context) error {
	for _, p := range l.cfg.Pools {
		if err := l.PutPool(ctx, p); err != nil {
			return err
		}
	}
	if l.cfg.BGP != nil {
		return l.PutBGPConfig(ctx, *l.cfg.BGP)
	}
	return nil
}

// PutPool stores (or replaces) a pool.
func (l *Lab) PutPool(ctx context.Context, p conf.IPPool) error {
	return l.put(ctx, "ippools/"+p.Metadata.Name, &p)
}

// PutBGPConfig stores the cluster's BGP configuration.
func (l *Lab) PutBGPConfig(ctx context.Context, c conf.BGPConfiguration) error {
	return l.put(ctx, "bgp/config", &c)
}

// PutBGPPeer stores an external peer.
func (l *Lab) PutBGPPeer(ctx context.Context, p conf.BGPPeer) error {
	return l.put(ctx, "bgp/peers/"+p.Metadata.Name, &p)
}

// document is a brindle configuration document (conf).
type document interface {
	Default()
	Validate() error
}

// put stores d under key (relative to ipam.Prefix) with its defaults
// written out, as brindlectl does, after validating it.
func (l *Lab) put(ctx context.Context, key string, d document) error {
	d.Default()
	if err := d.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	_, err = l.Etcd.Put(ctx, ipam.Prefix+key, string(b))
	return err
}

// WaitReady waits until every running node's brindled reports ready.
func (l *Lab) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, n := range l.Nodes {
		if !n.Running() {
			continue
		}
		if err := n.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close stops every daemon and removes every pod, node and namespace the
// lab made. It is safe to call more than once.
func (l *Lab) Close() {
	for _, n := range l.Nodes {
		n.kill()
	}
	if l.Etcd != nil {
		l.Etcd.Close()
		l.Etcd = nil
	}
	if l.etcdStop != nil {
		l.etcdStop()
		l.etcdStop = nil
	}
	l.mu.Lock()
	cs := l.cleanups
	l.cleanups = nil
	l.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// plug connects namespace n to subnet's bridge: eth0 in n, its peer (named
// peer) on the bridge in the underlay.
func (l *Lab) plug(n ns.NetNS, peer string, subnet int) error {
	return l.Underlay.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: peer}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(n.Fd()))}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		br, err := netlink.LinkByName(fmt.Sprintf("br%d", subnet))
		if err != nil {
			return err
		}
		pl, err := netlink.LinkByName(peer)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(pl, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(pl)
	})
}

// noDAD turns duplicate address detection off for the links made in the
// current namespace from now on. The lab's addresses are all its own, and
// with DAD a link's link-local address stays tentative for about 2 s after
// it comes up: a node could not resolve an IPv6 next hop on its uplink
// (neighbour solicitations need that address as their source) until then,
// and a test that sends right after the lab is ready would lose its first
// IPv6 packets for a reason no real node has (TestSpoofedSourceDropped
// did, 1 run in 6).
func noDAD() error {
	return os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0"), 0o644)
}

func linkUp(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(link)
}

func addAddr(name string, p netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return netlink.AddrAdd(link, a)
}

var errStopped = errors.New("brindled is not running")
