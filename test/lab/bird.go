package lab

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
)

// Bird is a BIRD 2 routing daemon on the underlay: a second, independent
// BGP implementation for the lab (a top-of-rack router, a route reflector,
// a hostile peer).
type Bird struct {
	Name string
	NS   ns.NetNS
	Addr netip.Addr
	dir  string
	done <-chan error
	cmd  *exec.Cmd
}

// BirdAvailable says whether the bird binary is installed.
func BirdAvailable() bool {
	_, err := exec.LookPath("bird")
	return err == nil
}

// StartBird attaches a namespace at addr (on subnet 0) and runs bird with
// config there. config may use {{ROUTER_ID}}, replaced by addr.
func (l *Lab) StartBird(name string, addr netip.Addr, config string) (*Bird, error) {
	b := &Bird{Name: name, Addr: addr, dir: filepath.Join(l.cfg.Dir, name)}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return nil, err
	}
	nsh, cleanup, err := testenv.CreateNS()
	if err != nil {
		return nil, err
	}
	l.onClose(cleanup)
	b.NS = nsh
	peer := "b-" + name
	if len(peer) > 15 {
		peer = peer[:15]
	}
	if err := l.plug(nsh, peer, 0); err != nil {
		return nil, fmt.Errorf("%s uplink: %w", name, err)
	}
	err = nsh.Do(func(ns.NetNS) error {
		for _, n := range []string{"lo", "eth0"} {
			if err := linkUp(n); err != nil {
				return err
			}
		}
		return addAddr("eth0", netip.PrefixFrom(addr, 24))
	})
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(b.dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(strings.ReplaceAll(config, "{{ROUTER_ID}}", addr.String())), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(b.dir, "bird.log"))
	if err != nil {
		return nil, err
	}
	b.cmd = exec.Command("bird", "-f", "-c", conf, "-s", b.sock(), "-P", filepath.Join(b.dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done, err := testenv.StartIn(nsh, b.cmd)
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start bird: %w", err)
	}
	b.done = done
	l.onClose(func() {
		_ = b.cmd.Process.Kill()
		<-done
		logf.Close()
	})
	// Wait for the control socket.
	for i := 0; ; i++ {
		if _, err := b.Cmd("show status"); err == nil {
			return b, nil
		}
		if i > 100 {
			lb, _ := os.ReadFile(filepath.Join(b.dir, "bird.log"))
			return nil, fmt.Errorf("bird did not start: %s", lb)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *Bird) sock() string { return filepath.Join(b.dir, "bird.ctl") }

// Cmd runs a birdc command and returns its output.
func (b *Bird) Cmd(command string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", b.sock()}, strings.Fields(command)...)...).CombinedOutput()
	return string(out), err
}
