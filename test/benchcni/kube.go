package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/brindle-net/brindle/internal/kubetest"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/kube"
	"github.com/brindle-net/brindle/kube/podinfo"
)

// kubeBench is a real kube-apiserver (internal/kubetest) holding the
// bench's pods, with annotations, and brindled's pod cache and socket
// served from this process: what an ADD in Kubernetes reads.
type kubeBench struct {
	srv        *kubetest.Server
	socket     string
	kubeconfig string
	stop       func()
}

// startKube starts the apiserver, creates pods bench/pod-0000.. bound to
// bench-node, and serves brindled's socket. The plugins run in host's
// namespace: the socket is a file, and the apiserver is reached through a
// forwarder on 127.0.0.1 there (the apiserver listens on the machine's
// loopback), so the direct path pays one extra local hop.
func startKube(host ns.NetNS, pods int) (*kubeBench, error) {
	dir, err := os.MkdirTemp("", "benchcni-kube-")
	if err != nil {
		return nil, err
	}
	s, err := kubetest.Run(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	kb := &kubeBench{srv: s}
	ctx, cancel := context.WithCancel(context.Background())
	kb.stop = func() { cancel(); s.Stop(); os.RemoveAll(dir) }
	clients, err := kube.NewClients(s.Config)
	if err != nil {
		kb.stop()
		return nil, err
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
	defer ccancel()
	if _, err := clients.Typed.CoreV1().Namespaces().Create(cctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench",
		Annotations: map[string]string{podinfo.IPv4Pools: `["bench"]`}}}, metav1.CreateOptions{}); err != nil {
		kb.stop()
		return nil, err
	}
	for i := range pods {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%04d", i),
			Annotations: map[string]string{"example.com/unrelated": "x", podinfo.Sticky: "false"}},
			Spec: corev1.PodSpec{NodeName: "bench-node", Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}
		if _, err := clients.Typed.CoreV1().Pods("bench").Create(cctx, p, metav1.CreateOptions{}); err != nil {
			kb.stop()
			return nil, err
		}
	}
	cache := kube.NewPodCache(clients, "bench-node")
	go cache.Run(ctx)
	for !cache.Synced() {
		if cctx.Err() != nil {
			kb.stop()
			return nil, fmt.Errorf("pod cache never synced")
		}
		time.Sleep(50 * time.Millisecond)
	}
	kb.socket = filepath.Join(dir, "brindled.sock")
	go kube.ServeSocket(ctx, kb.socket, cache, slog.New(slog.NewTextHandler(io.Discard, nil)))

	u, _ := url.Parse(s.Config.Host)
	if err := forward(ctx, host, u.Host); err != nil {
		kb.stop()
		return nil, err
	}
	// The kubeconfig install-cni writes, with the bench's admin token.
	ca, err := os.ReadFile(s.Config.CAFile)
	if err != nil {
		kb.stop()
		return nil, err
	}
	kb.kubeconfig = filepath.Join(dir, "brindle-kubeconfig")
	kc := fmt.Sprintf(`{"apiVersion":"v1","kind":"Config","current-context":"c",
 "clusters":[{"name":"k","cluster":{"server":%q,"certificate-authority-data":%q}}],
 "users":[{"name":"u","user":{"token":%q}}],"contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}]}`,
		s.Config.Host, b64(ca), s.Config.BearerToken)
	if err := os.WriteFile(kb.kubeconfig, []byte(kc), 0o600); err != nil {
		kb.stop()
		return nil, err
	}
	return kb, nil
}

// forward listens on addr inside host's namespace and relays each
// connection to addr in this process's namespace.
func forward(ctx context.Context, host ns.NetNS, addr string) error {
	var ln net.Listener
	if err := host.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return fmt.Errorf("forwarder in the host namespace: %w", err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	return nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// The scenarios reading annotations: brindle-ipam with brindled's socket
// (the cache), and with the kubeconfig only (brindled not answering).
func (kb *kubeBench) scenarios() []scenario {
	ipamConf := func(dir string) map[string]any {
		return map[string]any{"type": "brindle-ipam", "etcd_endpoints": etcdURL, "nodename": "bench-node",
			"nodename_file": filepath.Join(dir, "nodename")}
	}
	return []scenario{
		{name: nameViaBrindled, conf: func(dir string) map[string]any {
			return map[string]any{"type": "brindle", "logFile": filepath.Join(dir, "cni.log"), "ipam": ipamConf(dir),
				"kubernetes": map[string]any{"socket": kb.socket}}
		}},
		{name: nameViaAPIServer, conf: func(dir string) map[string]any {
			return map[string]any{"type": "brindle", "logFile": filepath.Join(dir, "cni.log"), "ipam": ipamConf(dir),
				"kubernetes": map[string]any{"kubeconfig": kb.kubeconfig, "socket": filepath.Join(dir, "none.sock")}}
		}},
	}
}

const (
	nameNoKube       = "brindle + brindle-ipam"
	nameViaBrindled  = "+ annotations (brindled)"
	nameViaAPIServer = "+ annotations (apiserver)"
)

// kubeTable prints what reading annotations adds to an ADD, against
// brindle + brindle-ipam without Kubernetes in the same run.
func kubeTable(results map[string]map[int]*sample, modes []int) {
	fmt.Printf("\nReading pod and namespace annotations: ADD p50 added to brindle + brindle-ipam (same run)\n\n")
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "annotations from\tconcurrency\tADD p50\tadded p50\tADD p99\t")
	for _, conc := range modes {
		ref := testenv.Percentile(results[nameNoKube][conc].add, 50)
		for _, n := range []string{nameViaBrindled, nameViaAPIServer} {
			s := results[n][conc]
			p50 := testenv.Percentile(s.add, 50)
			fmt.Fprintf(w, "%s\t%d\t%s\t%+.2f ms\t%s\t\n", n, conc, testenv.Millis(p50), float64(p50-ref)/1e6, testenv.Millis(testenv.Percentile(s.add, 99)))
		}
	}
	w.Flush()
}
