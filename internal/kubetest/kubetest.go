// Package kubetest runs a real kube-apiserver, backed by a real etcd, for
// tests of code that talks to Kubernetes: no fake clientset, the same API
// server (v1.34.4) the test cluster runs, with RBAC on so that the
// manifests' roles can be checked.
//
// The binaries come from the test cluster's build (test/k8s/build.sh
// kube-apiserver etcd, or `make kubetest-bins`), in
// /var/cache/brindle-k8s/v1.34.4/bin unless BRINDLE_K8S_BIN names another
// directory. Tests skip, naming the missing binary, when they are not there.
//
// There is no controller-manager or scheduler: objects are stored and
// watched, nothing acts on them (pods stay Pending unless a test writes
// their status, namespaces are never finalized). The ServiceAccount
// admission plugin is off so that pods can be created without the default
// ServiceAccount the controller-manager would make.
package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// DefaultBinDir is where test/k8s/build.sh puts the cluster's binaries.
const DefaultBinDir = "/var/cache/brindle-k8s/v1.34.4/bin"

// BinDir is the directory the binaries are taken from: BRINDLE_K8S_BIN, or
// DefaultBinDir.
func BinDir() string {
	if d := os.Getenv("BRINDLE_K8S_BIN"); d != "" {
		return d
	}
	return DefaultBinDir
}

// ErrMissing is wrapped by Run's error when a binary is not there.
var ErrMissing = errors.New("binary missing")

// Server is a running kube-apiserver and its etcd.
type Server struct {
	// Config reaches the apiserver as a member of system:masters.
	Config *rest.Config
	// Dir holds both servers' data and logs (apiserver.log, etcd.log).
	Dir  string
	stop []func()
}

// Start runs an apiserver for the test, skipping it when the binaries are
// missing; everything is stopped and removed when the test ends. Each call
// starts servers of its own (a few seconds): share one per package through
// TestMain and Run when many tests need one.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := Run(tb.TempDir())
	if errors.Is(err, ErrMissing) {
		tb.Skipf("SKIP: %v (build it with `make kubetest-bins`)", err)
	}
	if err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Client is a clientset for s's Config.
func (s *Server) Client(tb testing.TB) kubernetes.Interface {
	tb.Helper()
	c, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		tb.Fatalf("kubetest: clientset: %v", err)
	}
	return c
}

// Run starts etcd and a kube-apiserver on 127.0.0.1 with free ports, their
// data under dir, and returns once the apiserver is ready. The processes
// die with the calling process; Stop ends them earlier.
func Run(dir string) (_ *Server, retErr error) {
	bin := BinDir()
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("kubetest: %s not in %s: %w", b, bin, ErrMissing)
		}
	}
	s := &Server{Dir: dir}
	defer func() {
		if retErr != nil {
			s.Stop()
		}
	}()
	etcdURL, err := s.startEtcd(bin)
	if err != nil {
		return nil, err
	}
	if err := s.startAPIServer(bin, etcdURL); err != nil {
		return nil, err
	}
	return s, nil
}

// Stop ends the apiserver, then etcd. It is safe to call twice.
func (s *Server) Stop() {
	for i := len(s.stop) - 1; i >= 0; i-- {
		s.stop[i]()
	}
	s.stop = nil
}

func (s *Server) startEtcd(bin string) (string, error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	err = s.start(filepath.Join(bin, "etcd"), "etcd.log",
		"--name=kubetest", "--data-dir="+filepath.Join(s.Dir, "etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=kubetest="+peer, "--log-level=warn",
		"--quota-backend-bytes=4294967296", "--unsafe-no-fsync")
	if err != nil {
		return "", err
	}
	return client, s.waitReady("etcd", "etcd.log", func() error {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health: %s", resp.Status)
		}
		return nil
	})
}

func (s *Server) startAPIServer(bin, etcdURL string) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	keyFile, err := writeServiceAccountKey(s.Dir)
	if err != nil {
		return err
	}
	token := randomHex(16)
	tokens := filepath.Join(s.Dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",kubetest-admin,kubetest-admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	certDir := filepath.Join(s.Dir, "certs")
	err = s.start(filepath.Join(bin, "kube-apiserver"), "apiserver.log",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[0]), "--cert-dir="+certDir,
		"--token-auth-file="+tokens, "--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+keyFile, "--service-account-signing-key-file="+keyFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--disable-admission-plugins=ServiceAccount",
		"--enable-priority-and-fairness=false", "--profiling=false", "--v=1")
	if err != nil {
		return err
	}
	// The self-signed serving certificate (cert-dir) is written at start;
	// it holds the leaf and its CA, which is what the client trusts.
	s.Config = &rest.Config{
		Host:            "https://127.0.0.1:" + strconv.Itoa(ports[0]),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(certDir, "apiserver.crt")},
		QPS:             1000,
		Burst:           2000,
	}
	return s.waitReady("kube-apiserver", "apiserver.log", func() error {
		if _, err := os.Stat(s.Config.CAFile); err != nil {
			return err
		}
		c, err := kubernetes.NewForConfig(s.Config)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("readyz: %w: %s", err, body)
		}
		return nil
	})
}

// start runs a server with its output in logName and registers its stop.
func (s *Server) start(path, logName string, args ...string) error {
	logf, err := os.Create(filepath.Join(s.Dir, logName))
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The child dies with the thread that started it (Pdeathsig), and Go
	// ends a thread when a goroutine locked to it exits: start it from a
	// thread of its own that lives until the child exits.
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends after the child
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return fmt.Errorf("kubetest: start %s: %w", path, err)
	}
	s.stop = append(s.stop, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return nil
}

// waitReady polls ready for up to 90 s (an apiserver on a busy 2-core
// machine takes several seconds to bootstrap its RBAC roles).
func (s *Server) waitReady(name, logName string, ready func() error) error {
	deadline := time.Now().Add(90 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = ready(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kubetest: %s not ready in 90s: %v; log tail:\n%s", name, err, tail(filepath.Join(s.Dir, logName), 3000))
}

// WriteKubeconfig writes s's Config as a kubeconfig file (for brindled,
// brindlectl or kubectl run as processes) and returns its path.
func (s *Server) WriteKubeconfig() (string, error) {
	path := filepath.Join(s.Dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster: {server: %q, certificate-authority: %q}
users:
- name: admin
  user: {token: %q}
contexts:
- name: kubetest
  context: {cluster: kubetest, user: admin}
current-context: kubetest
`, s.Config.Host, s.Config.CAFile, s.Config.BearerToken)
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kubetest: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func writeServiceAccountKey(dir string) (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "sa.key")
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return path, os.WriteFile(path, b, 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
