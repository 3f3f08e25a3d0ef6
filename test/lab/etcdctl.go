package lab

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"

	"github.com/brindle-net/brindle/internal/etcdtest"
)

// StopEtcd stops the lab's etcd (an outage: connections are refused). Its
// data stays; StartEtcd brings it back on the same address.
func (l *Lab) StopEtcd() {
	l.mu.Lock()
	stop := l.etcdStop
	l.etcdStop = nil
	l.mu.Unlock()
	if stop != nil {
		stop()
		l.logf("etcd stopped")
	}
}

// StartEtcd starts the lab's etcd again, on its data and its address, after
// StopEtcd.
func (l *Lab) StartEtcd() error {
	u, err := url.Parse(l.EtcdURL)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return fmt.Errorf("etcd url %s: %w", l.EtcdURL, err)
	}
	m, err := etcdtest.StartProcessWith(l.Underlay, l.cfg.BinDir, filepath.Join(l.cfg.Dir, "etcd"), u.Hostname(), etcdtest.MemberOptions{ClientPort: port})
	if err != nil {
		return fmt.Errorf("restart etcd: %w", err)
	}
	l.mu.Lock()
	l.etcdStop = m.Stop
	l.mu.Unlock()
	l.logf("etcd started again: %s", m.Endpoint)
	return nil
}

// Alive reports whether the node's brindled process is still running (it
// may have exited on its own, which Running does not see).
func (n *Node) Alive() bool {
	n.mu.Lock()
	done := n.done
	running := n.cmd != nil
	n.mu.Unlock()
	if !running {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// NodenameFile is the node's nodename file (brindled writes it; with
// NoDaemons the lab does).
func (n *Node) NodenameFile() string { return n.nodenameFile() }

// Dir is the node's scratch directory.
func (n *Node) Dir() string { return n.dir }
