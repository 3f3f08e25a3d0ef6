package lab

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/etcdtest"
	"github.com/brindle-net/brindle/internal/testenv"
)

// EtcdCluster is a cluster of etcd members, each in a namespace of its own
// on the underlay's first subnet, for fault injection: a member can be
// stopped, stalled (its process stopped: connections are accepted, never
// answered) or cut off from the other members (its clients still reach it).
type EtcdCluster struct {
	lab     *Lab
	Members []*EtcdMember
}

// EtcdMember is one member of an EtcdCluster.
type EtcdMember struct {
	Name string
	NS   ns.NetNS
	Addr netip.Addr
	// Endpoint is the client URL.
	Endpoint string
	dir      string
	opts     etcdtest.MemberOptions
	mu       sync.Mutex
	m        *etcdtest.Member
	cut      bool
}

// etcdClientPort and etcdPeerPort are the members' ports.
const etcdClientPort, etcdPeerPort = 2379, 2380

// StartEtcdCluster starts n members at 198.19.1.201, .202, ...
func (l *Lab) StartEtcdCluster(n int) (*EtcdCluster, error) {
	c := &EtcdCluster{lab: l}
	var initial []string
	for i := range n {
		addr := netip.AddrFrom4([4]byte{198, 19, 1, byte(201 + i)})
		m := &EtcdMember{Name: fmt.Sprintf("m%d", i), Addr: addr, dir: filepath.Join(l.cfg.Dir, fmt.Sprintf("etcd-m%d", i)),
			Endpoint: fmt.Sprintf("http://%s:%d", addr, etcdClientPort)}
		nsh, cleanup, err := testenv.CreateNS()
		if err != nil {
			return nil, err
		}
		l.onClose(cleanup)
		m.NS = nsh
		if err := l.plug(nsh, fmt.Sprintf("e-m%d", i), 0); err != nil {
			return nil, err
		}
		if err := nsh.Do(func(ns.NetNS) error {
			for _, ifn := range []string{"lo", "eth0"} {
				if err := linkUp(ifn); err != nil {
					return err
				}
			}
			return addAddr("eth0", netip.PrefixFrom(addr, 24))
		}); err != nil {
			return nil, err
		}
		initial = append(initial, fmt.Sprintf("%s=http://%s:%d", m.Name, addr, etcdPeerPort))
		c.Members = append(c.Members, m)
	}
	errs := make(chan error, n)
	for _, m := range c.Members {
		m.opts = etcdtest.MemberOptions{ClientPort: etcdClientPort, Name: m.Name,
			PeerURL: fmt.Sprintf("http://%s:%d", m.Addr, etcdPeerPort), InitialCluster: strings.Join(initial, ",")}
		go func() { errs <- m.start(l) }()
	}
	for range n {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	l.onClose(func() {
		for _, m := range c.Members {
			m.Stop()
		}
	})
	l.logf("etcd cluster: %s", strings.Join(c.Endpoints(), ","))
	return c, nil
}

func (m *EtcdMember) start(l *Lab) error {
	mem, err := etcdtest.StartProcessWith(m.NS, l.cfg.BinDir, m.dir, m.Addr.String(), m.opts)
	if err != nil {
		return fmt.Errorf("etcd member %s: %w", m.Name, err)
	}
	m.mu.Lock()
	m.m = mem
	m.mu.Unlock()
	return nil
}

// Endpoints are the members' client URLs.
func (c *EtcdCluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.Endpoint)
	}
	return out
}

// Stop stops the member; Start brings it back on its data.
func (m *EtcdMember) Stop() {
	m.mu.Lock()
	mem := m.m
	m.m = nil
	m.mu.Unlock()
	if mem != nil {
		mem.Stop()
	}
}

// Start starts a stopped member again.
func (c *EtcdCluster) Start(m *EtcdMember) error { return m.start(c.lab) }

// Stall stops the member's process (SIGSTOP): the kernel still accepts its
// connections, nothing answers them. Resume undoes it.
func (m *EtcdMember) Stall() error { return m.signal(syscall.SIGSTOP) }

// Resume lets a stalled member run again.
func (m *EtcdMember) Resume() error { return m.signal(syscall.SIGCONT) }

func (m *EtcdMember) signal(sig syscall.Signal) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil || m.m.Process == nil {
		return fmt.Errorf("etcd member %s is not running", m.Name)
	}
	return m.m.Process.Signal(sig)
}

// Partition cuts the member off from the other members (their peer port,
// both ways) while its clients still reach it; Heal undoes it.
func (m *EtcdMember) Partition() error {
	rules := fmt.Sprintf(`table inet partition {
  chain in { type filter hook input priority 0; tcp dport %d drop; tcp sport %d drop; }
  chain out { type filter hook output priority 0; tcp dport %d drop; tcp sport %d drop; }
}`, etcdPeerPort, etcdPeerPort, etcdPeerPort, etcdPeerPort)
	if out, err := Run(m.NS, "sh", "-c", "echo '"+rules+"' | nft -f -"); err != nil {
		return fmt.Errorf("partition %s: %v: %s", m.Name, err, out)
	}
	m.cut = true
	return nil
}

// Heal ends a partition.
func (m *EtcdMember) Heal() error {
	if !m.cut {
		return nil
	}
	if out, err := Run(m.NS, "nft", "delete", "table", "inet", "partition"); err != nil {
		return fmt.Errorf("heal %s: %v: %s", m.Name, err, out)
	}
	m.cut = false
	return nil
}
