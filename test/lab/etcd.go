package lab

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/brindle-net/brindle/internal/testenv"
)

// StartEtcd runs labetcd (an embedded etcd in a process of its own) in the
// network namespace n, listening on host; it prints its client URL, which
// StartEtcd returns.
func StartEtcd(n ns.NetNS, bin, dir, host string) (stop func(), endpoint string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	cmd := exec.Command(filepath.Join(bin, "labetcd"), "--dir", filepath.Join(dir, "data"), "--host", host)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited, err := testenv.StartIn(n, cmd)
	if err != nil {
		logf.Close()
		return nil, "", fmt.Errorf("start labetcd (built by `make testbins`?): %w", err)
	}
	done := make(chan struct{})
	urlc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		urlc <- strings.TrimSpace(line)
	}()
	go func() {
		err := <-exited
		fmt.Fprintf(logf, "labetcd exited: %v\n", err)
		logf.Close()
		close(done)
	}()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	select {
	case u := <-urlc:
		if u == "" {
			stop()
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			return nil, "", fmt.Errorf("labetcd exited: %s", b)
		}
		return stop, u, nil
	case <-time.After(40 * time.Second):
		stop()
		return nil, "", fmt.Errorf("labetcd did not start in 40s")
	}
}
