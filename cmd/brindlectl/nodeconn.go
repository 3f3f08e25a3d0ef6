package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/brindle-net/brindle/conf"
	"github.com/brindle-net/brindle/ipam"
	"github.com/brindle-net/brindle/nodeapi"
)

// nodeFlags say how brindlectl reaches a node's API (brindled's node API:
// capture, pod). See docs/cli.md, "Reaching a node".
type nodeFlags struct {
	via          string
	socket       string
	tls          nodeapi.TLSFiles
	port         int
	kubectl      string
	kubeNS       string
	nodenameFile string
}

func (nf *nodeFlags) add(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&nf.via, "via", getenv("BRINDLE_VIA", "auto"), "how to reach the pod's node: auto, local (this node's socket), tls (mutual TLS to the node), kube (kubectl exec into the node's brindle-node pod) (env BRINDLE_VIA)")
	fs.StringVar(&nf.socket, "nodeapi-socket", getenv("BRINDLE_NODEAPI_SOCKET", nodeapi.DefaultSocket), "this node's node API socket (env BRINDLE_NODEAPI_SOCKET)")
	fs.StringVar(&nf.tls.CA, "nodeapi-ca", getenv("BRINDLE_NODEAPI_CA", ""), "CA that signed the nodes' TLS certificates (env BRINDLE_NODEAPI_CA)")
	fs.StringVar(&nf.tls.Cert, "nodeapi-cert", getenv("BRINDLE_NODEAPI_CERT", ""), "client certificate for the nodes' TLS listeners (env BRINDLE_NODEAPI_CERT)")
	fs.StringVar(&nf.tls.Key, "nodeapi-key", getenv("BRINDLE_NODEAPI_KEY", ""), "its key (env BRINDLE_NODEAPI_KEY)")
	fs.IntVar(&nf.port, "nodeapi-port", nodeapi.DefaultPort, "the nodes' TLS listener port")
	fs.StringVar(&nf.kubectl, "kubectl", getenv("BRINDLE_KUBECTL", "kubectl"), "kubectl for --via kube (env BRINDLE_KUBECTL; its KUBECONFIG and context apply)")
	fs.StringVar(&nf.kubeNS, "kube-namespace", "brindle-system", "namespace of the brindle-node DaemonSet")
	fs.StringVar(&nf.nodenameFile, "nodename-file", conf.DefaultNodenameFile, "this node's name, written by brindled")
	c.RegisterFlagCompletionFunc("via", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"auto", "local", "tls", "kube"}, cobra.ShellCompDirectiveNoFileComp
	})
}

func (nf *nodeFlags) check(c *cobra.Command) error {
	switch nf.via {
	case "auto", "local", "tls", "kube":
		return nil
	}
	return usagef(c, "--via %q: want auto, local, tls or kube", nf.via)
}

// localNode is this node's name ("" when this is not a brindle node).
func (nf *nodeFlags) localNode() string {
	b, err := os.ReadFile(nf.nodenameFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// haveSocket reports whether this machine serves the node API.
func (nf *nodeFlags) haveSocket() bool {
	fi, err := os.Stat(nf.socket)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// kubeUsable reports whether --via auto may use kubectl.
func (nf *nodeFlags) kubeUsable() bool {
	if _, err := exec.LookPath(nf.kubectl); err != nil {
		return false
	}
	if os.Getenv("KUBECONFIG") != "" || strings.HasPrefix(filepath.Base(os.Args[0]), pluginName) {
		return true
	}
	home, _ := os.UserHomeDir()
	_, err := os.Stat(home + "/.kube/config")
	return err == nil
}

// local is the client of this node's socket.
func (nf *nodeFlags) local() *nodeapi.Client { return nodeapi.NewUnixClient(nf.socket) }

// remote is a client for node, by TLS or Kubernetes as --via says.
func (a *app) remote(ctx context.Context, nf *nodeFlags, node string) (*nodeapi.Client, error) {
	via := nf.via
	if via == "auto" {
		switch {
		case nf.tls.Configured():
			via = "tls"
		case nf.kubeUsable():
			via = "kube"
		default:
			return nil, fmt.Errorf("node %s is not this node: reach it with --via tls (the node's mutual-TLS listener: --nodeapi-ca, --nodeapi-cert, --nodeapi-key) or --via kube (kubectl), or run brindlectl on %s", node, node)
		}
	}
	switch via {
	case "local":
		return nf.local(), nil
	case "tls":
		addr, err := a.nodeAddress(node)
		if err != nil {
			return nil, err
		}
		return nodeapi.NewTLSClient(net.JoinHostPort(addr, strconv.Itoa(nf.port)), nf.tls)
	}
	pod, err := nf.kubeNodePod(ctx, node)
	if err != nil {
		return nil, err
	}
	via = fmt.Sprintf("kubectl exec %s/%s (node %s)", nf.kubeNS, pod, node)
	return nodeapi.NewConnClient(via, func(ctx context.Context) (net.Conn, error) {
		return startPipe(exec.Command(nf.kubectl, "-n", nf.kubeNS, "exec", "-i", pod, "-c", "brindled", "--",
			"brindlectl", "node-proxy"))
	}), nil
}

// nodeAddress reads a node's IPv4 address from its record in etcd.
func (a *app) nodeAddress(node string) (string, error) {
	var addr string
	err := a.withEnv(func(e *env) error {
		res, err := e.cli.Get(e.ctx, ipam.Prefix+"nodes/"+node)
		if err != nil {
			return fmt.Errorf("read node %s: %w", node, err)
		}
		if len(res.Kvs) == 0 {
			return fmt.Errorf("node %q: not registered", node)
		}
		n, err := conf.UnmarshalNode(res.Kvs[0].Value)
		if err != nil {
			return err
		}
		p, ok := n.IPv4()
		if !ok {
			return fmt.Errorf("node %s: no IPv4 address in its record", node)
		}
		addr = p.Addr().String()
		return nil
	})
	return addr, err
}

// kubectlOut runs kubectl and returns its trimmed stdout.
func (nf *nodeFlags) kubectlOut(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, nf.kubectl, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s %s: %s", nf.kubectl, strings.Join(args, " "), strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("%s: %w", nf.kubectl, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// kubeNodePod finds the brindle-node pod on a node.
func (nf *nodeFlags) kubeNodePod(ctx context.Context, node string) (string, error) {
	pod, err := nf.kubectlOut(ctx, "-n", nf.kubeNS, "get", "pods", "-l", "app.kubernetes.io/name=brindle-node",
		"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		return "", err
	}
	if pod == "" {
		return "", fmt.Errorf("no brindle-node pod on node %s in namespace %s", node, nf.kubeNS)
	}
	return pod, nil
}

// kubePodNode asks Kubernetes which node runs a pod.
func (nf *nodeFlags) kubePodNode(ctx context.Context, namespace, pod string) (string, error) {
	node, err := nf.kubectlOut(ctx, "-n", namespace, "get", "pod", pod, "-o", "jsonpath={.spec.nodeName}")
	if err == nil && node == "" {
		err = fmt.Errorf("pod %s/%s is not scheduled on a node", namespace, pod)
	}
	return node, err
}

// pipeConn is a connection over a child process's stdin and stdout.
type pipeConn struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  io.ReadCloser
	once sync.Once
}

func startPipe(cmd *exec.Cmd) (net.Conn, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return &pipeConn{cmd: cmd, in: in, out: out}, nil
}

func (p *pipeConn) Read(b []byte) (int, error)  { return p.out.Read(b) }
func (p *pipeConn) Write(b []byte) (int, error) { return p.in.Write(b) }
func (p *pipeConn) Close() error {
	p.once.Do(func() {
		p.in.Close()
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
	return nil
}
func (p *pipeConn) LocalAddr() net.Addr                { return pipeAddr{} }
func (p *pipeConn) RemoteAddr() net.Addr               { return pipeAddr{} }
func (p *pipeConn) SetDeadline(t time.Time) error      { return nil }
func (p *pipeConn) SetReadDeadline(t time.Time) error  { return nil }
func (p *pipeConn) SetWriteDeadline(t time.Time) error { return nil }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "kubectl-exec" }

func init() { register("", newNodeProxyCmd) }

// newNodeProxyCmd is what `--via kube` runs in the brindled container:
// stdin and stdout joined to this node's API socket.
func newNodeProxyCmd(a *app) *cobra.Command {
	var socket string
	c := &cobra.Command{
		Use:    "node-proxy",
		Short:  "join stdin and stdout to this node's API socket (what --via kube runs on the node)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			conn, err := net.Dial("unix", socket)
			if err != nil {
				return fmt.Errorf("node API socket: %w (is brindled running here?)", err)
			}
			defer conn.Close()
			go func() {
				io.Copy(conn, a.in)
				conn.(*net.UnixConn).CloseWrite()
			}()
			_, err = io.Copy(a.out, conn)
			return err
		},
	}
	c.Flags().StringVar(&socket, "nodeapi-socket", getenv("BRINDLE_NODEAPI_SOCKET", nodeapi.DefaultSocket), "the node API socket")
	return c
}
