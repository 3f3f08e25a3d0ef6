package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/brindle-net/brindle/internal/testenv"
)

// ipamProc runs the real brindle-ipam binary once, as a runtime would,
// without libcni in between so the test can kill it.
type ipamProc struct {
	bin, conf string
}

func (p ipamProc) cmd(ctx context.Context, command, id string) *exec.Cmd {
	c := exec.CommandContext(ctx, filepath.Join(p.bin, "brindle-ipam"))
	c.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id, "CNI_NETNS=/var/run/netns/unused",
		"CNI_IFNAME=eth0", "CNI_PATH=" + p.bin, "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-" + id}
	c.Stdin = strings.NewReader(p.conf)
	return c
}

func (p ipamProc) add(t *testing.T, id string) netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := p.cmd(ctx, "ADD", id).Output()
	if err != nil {
		t.Fatalf("ADD %s: %v: %s", id, err, out)
	}
	return resultAddr(t, out)
}

func resultAddr(t *testing.T, out []byte) netip.Addr {
	t.Helper()
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("result %s: %v", out, err)
	}
	return netip.MustParsePrefix(res.IPs[0].Address).Addr()
}

// TestNodeLocalKill9 starts 48 brindle-ipam ADDs on one node at once and
// SIGKILLs a quarter of them at random moments (holders mid-transaction,
// waiters in the queue). Whatever was killed: no address is given twice,
// every allocation belongs to a handle, the survivors all get their
// address, the node's queue keeps working, and DEL of everything (as the
// runtime does for the ADDs that failed) leaves nothing behind.
func TestNodeLocalKill9(t *testing.T) {
	a, s := newAllocOn(t, "http")
	addPool(t, a, "default", "10.244.0.0/16", nil)
	dir := t.TempDir()
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "kill9", "type": "brindle-ipam",
		"ipam": map[string]any{"type": "brindle-ipam", "etcd_endpoints": s.Endpoint, "nodename": "n1",
			"nodename_file": filepath.Join(dir, "nodename")}})
	p := ipamProc{bin: testenv.BinDir(t, "brindle-ipam"), conf: string(conf)}

	const n = 48
	type outcome struct {
		killed bool
		out    []byte
		err    error
	}
	res := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var out bytes.Buffer
			c := p.cmd(context.Background(), "ADD", fmt.Sprintf("c%02d", i))
			c.Stdout = &out
			if err := c.Start(); err != nil {
				res[i].err = err
				return
			}
			if i%4 == 0 {
				time.Sleep(time.Duration(rand.N(40)) * time.Millisecond)
				res[i].killed = c.Process.Signal(syscall.SIGKILL) == nil
			}
			err := c.Wait()
			res[i].out, res[i].err = out.Bytes(), err
		})
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	killed := 0
	for i, r := range res {
		id := fmt.Sprintf("c%02d", i)
		if r.killed && r.err != nil {
			killed++
			continue
		}
		if r.err != nil {
			t.Fatalf("ADD %s (not killed) failed: %v: %s", id, r.err, r.out)
		}
		ip := resultAddr(t, r.out)
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s given to %s and %s", ip, other, id)
		}
		seen[ip] = id
		h, err := a.HandleOf(ctxT(t), id+".eth0")
		if err != nil || h == nil || h.Addrs[0].Addr != ip {
			t.Fatalf("handle of %s: %+v %v, want %s", id, h, err, ip)
		}
	}
	t.Logf("%d ADDs, %d killed before they finished", n, killed)
	// No allocation without its handle, killed or not.
	blocks, err := a.Store.Read(ctxT(t), Get{Key: blocksPrefix, Prefix: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range blocks[0] {
		var b Block
		if err := decode(kv, &b); err != nil {
			t.Fatal(err)
		}
		for ord, al := range b.Allocations {
			if al == nil {
				continue
			}
			h, err := a.HandleOf(ctxT(t), al.Handle)
			if err != nil || h == nil || h.Addrs[0].Addr != b.Addr(ord) || h.Addrs[0].Seq != al.Seq {
				t.Fatalf("%s allocated to %q, whose handle is %+v (%v)", b.Addr(ord), al.Handle, h, err)
			}
		}
	}
	// The queue still works, and what killed processes left is cleared.
	for i := range 8 {
		ip := p.add(t, fmt.Sprintf("after%d", i))
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s given again (held by %s)", ip, other)
		}
		seen[ip] = "after"
	}
	if left, _ := filepath.Glob(filepath.Join(NodeLocalDir(dir, "n1", []string{s.Endpoint}), queueDir, "*.req")); len(left) != 0 {
		t.Fatalf("requests of dead processes still queued: %v", left)
	}
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if out, err := p.cmd(ctx, "DEL", fmt.Sprintf("c%02d", i)).CombinedOutput(); err != nil {
			t.Fatalf("DEL c%02d: %v: %s", i, err, out)
		}
		cancel()
	}
	for i := range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if out, err := p.cmd(ctx, "DEL", fmt.Sprintf("after%d", i)).CombinedOutput(); err != nil {
			t.Fatalf("DEL after%d: %v: %s", i, err, out)
		}
		cancel()
	}
	if k := keys(t, s.Client, handlesPrefix); len(k) != 0 {
		t.Fatalf("handles left: %v", k)
	}
	if k := keys(t, s.Client, endpointPrefix); len(k) != 0 {
		t.Fatalf("endpoints left: %v", k)
	}
	_ = os.Remove(filepath.Join(dir, "nodename"))
}
