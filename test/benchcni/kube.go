package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/brindle-net/brindle/internal/kubetest"
	"github.com/brindle-net/brindle/internal/testenv"
	"github.com/brindle-net/brindle/kube"
	"github.com/brindle-net/brindle/kube/podinfo"
	"github.com/brindle-net/brindle/test/benchreport"
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

// startKube starts the apiserver, creates pods bench/pod-0000.. (as many
// as the paired measurement adds) bound to bench-node, and serves
// brindled's socket. The plugins run in host's
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
	// The bench's own client creates the pods quickly; brindled's QPS
	// would make 200 pods take ten seconds.
	cfg := rest.CopyConfig(s.Config)
	cfg.QPS, cfg.Burst = 500, 500
	clients, err := kube.NewClients(cfg)
	if err != nil {
		kb.stop()
		return nil, err
	}
	admin, err := kubernetes.NewForConfig(cfg) // to create the objects; brindled has no clientset
	if err != nil {
		kb.stop()
		return nil, err
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
	defer ccancel()
	if _, err := admin.CoreV1().Namespaces().Create(cctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench",
		Annotations: map[string]string{podinfo.IPv4Pools: `["bench"]`}}}, metav1.CreateOptions{}); err != nil {
		kb.stop()
		return nil, err
	}
	for i := range pods {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%04d", i),
			Annotations: map[string]string{"example.com/unrelated": "x", podinfo.Sticky: "false"}},
			Spec: corev1.PodSpec{NodeName: "bench-node", Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}
		if _, err := admin.CoreV1().Pods("bench").Create(cctx, p, metav1.CreateOptions{}); err != nil {
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

// kubeConfs are the conflists of the paired measurement: brindle +
// brindle-ipam without Kubernetes, with annotations from brindled's socket
// (its cache), and from the apiserver through the kubeconfig (brindled not
// answering).
func (kb *kubeBench) kubeConfs(dir string) []map[string]any {
	plugin := func(kube map[string]any) map[string]any {
		// Debug for all three (alike, so the comparison is fair):
		// brindle-ipam logs how long the annotations took.
		p := map[string]any{"type": "brindle", "logFile": filepath.Join(dir, "cni.log"), "logLevel": "debug", "ipam": map[string]any{
			"type": "brindle-ipam", "etcd_endpoints": etcdURL, "nodename": "bench-node",
			"nodename_file": filepath.Join(dir, "nodename")}}
		if kube != nil {
			p["kubernetes"] = kube
		}
		return p
	}
	return []map[string]any{
		plugin(nil),
		plugin(map[string]any{"socket": kb.socket}),
		plugin(map[string]any{"kubeconfig": kb.kubeconfig, "socket": filepath.Join(dir, "none.sock")}),
	}
}

var kubeNames = []string{"brindle + brindle-ipam", "+ annotations (brindled)", "+ annotations (apiserver)"}

// paired measures what reading annotations adds to an ADD. Machines share
// their cores, so whole runs drift; here each pod is added three times in
// a row (without Kubernetes, through brindled, through the apiserver; the
// order rotates), each in a namespace of its own, and the added cost is
// the median of the per-pod differences.
func (kb *kubeBench) paired(sec *benchreport.Section, host *testenv.Host, bin string, pods int) error {
	dir, err := os.MkdirTemp("", "benchcni-paired-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var lists []*libcni.NetworkConfigList
	for _, c := range kb.kubeConfs(dir) {
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "bench", "plugins": []any{c}})
		l, err := libcni.NetworkConfFromBytes(b)
		if err != nil {
			return err
		}
		lists = append(lists, l)
	}
	cni := testenv.NewCNIConfig(bin, filepath.Join(dir, "cache"))
	adds := make([][]time.Duration, len(lists))
	for i := range pods {
		var rts []*libcni.RuntimeConf
		for k := range lists {
			n, cleanup, err := testenv.CreateNS()
			if err != nil {
				return err
			}
			defer cleanup()
			rts = append(rts, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("paired-%04d-%d", i, k), NetNS: n.Path(), IfName: "eth0",
				Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", fmt.Sprintf("pod-%04d", i)}}})
		}
		err := host.NS.Do(func(ns.NetNS) error {
			// Each ADD is DELeted before the next: the three are the same
			// pod, so their eth0 host veths have one name, and an ADD
			// finding the previous one's veth would remove it first (the
			// stale-sandbox path, 10-25 ms) — a cost no real pod's ADD has.
			for j := range lists {
				k := (i + j) % len(lists)
				start := time.Now()
				if _, err := cni.AddNetworkList(context.Background(), lists[k], rts[k]); err != nil {
					return fmt.Errorf("%s: ADD: %w", kubeNames[k], err)
				}
				adds[k] = append(adds[k], time.Since(start))
				if err := cni.DelNetworkList(context.Background(), lists[k], rts[k]); err != nil {
					return fmt.Errorf("%s: DEL: %w", kubeNames[k], err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	inside, missing := lookupTimes(filepath.Join(dir, "cni.log"))
	if missing > 0 {
		// A pod the API does not have costs brindled a GET that finds
		// nothing, and the ADD goes on without annotations: not what
		// this table measures.
		return fmt.Errorf("%d annotation lookups found no pod in the API: every pod the bench adds must exist", missing)
	}
	t := sec.Table("Reading pod and namespace annotations",
		fmt.Sprintf("%d pods, each added (and deleted again) three times in a row (without Kubernetes, through brindled, through the apiserver; order rotating); the added cost is the median of the per-pod differences.", pods),
		"plugins", "ADD p50", "ADD p99", "added p50 (paired)", "lookup in brindle-ipam p50", "p99")
	for k, name := range kubeNames {
		added := "—"
		if k > 0 {
			var diff []time.Duration
			for i := range adds[k] {
				diff = append(diff, adds[k][i]-adds[0][i])
			}
			slices.Sort(diff)
			added = fmt.Sprintf("%+.2f ms", float64(diff[len(diff)/2])/1e6)
		}
		in50, in99 := "—", "—"
		if src := []string{"", "brindled", "apiserver"}[k]; len(inside[src]) > 0 {
			in50, in99 = testenv.Millis(testenv.Percentile(inside[src], 50)), testenv.Millis(testenv.Percentile(inside[src], 99))
		}
		t.Add(name, testenv.Millis(testenv.Percentile(adds[k], 50)), testenv.Millis(testenv.Percentile(adds[k], 99)), added, in50, in99)
	}
	return nil
}

// lookupTimes reads brindle-ipam's "pod annotations read" debug lines:
// how long the lookup took inside the plugin, by source; and counts the
// lookups that found no pod.
func lookupTimes(logFile string) (map[string][]time.Duration, int) {
	out := map[string][]time.Duration{}
	missing := 0
	b, err := os.ReadFile(logFile)
	if err != nil {
		return out, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var l struct {
			Msg  string        `json:"msg"`
			From string        `json:"from"`
			Took time.Duration `json:"took"`
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch {
		case l.Msg == "pod annotations read":
			out[l.From] = append(out[l.From], l.Took)
		case strings.HasPrefix(l.Msg, "pod not in the Kubernetes API"):
			missing++
		}
	}
	return out, missing
}
