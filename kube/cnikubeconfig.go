package kube

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
)

// Defaults of the CNI plugins' Kubernetes identity.
const (
	DefaultCNIKubeconfig     = "/etc/cni/net.d/brindle-kubeconfig"
	DefaultCNIServiceAccount = "brindle-cni"
	DefaultNamespace         = "brindle-system"
	// DefaultCNITokenLifetime is what brindled asks the TokenRequest API
	// for; it renews the token when a third of that is left.
	DefaultCNITokenLifetime = 24 * time.Hour
)

// CNIKubeconfig keeps the kubeconfig the CNI plugins read annotations
// through: a token of the brindle-cni ServiceAccount (get pods and
// namespaces, nothing else) from the TokenRequest API, written with the
// apiserver's address and CA, mode 0600. install-cni writes it first;
// brindled (long-running, where install-cni is an init container) renews
// the token before it expires.
type CNIKubeconfig struct {
	Clients        *Clients
	Path           string
	Namespace      string
	ServiceAccount string
	// Server is the apiserver URL as the host reaches it; default the
	// clients' (in a pod: https://$KUBERNETES_SERVICE_HOST:$PORT).
	Server   string
	Lifetime time.Duration
	Log      *slog.Logger
	// Now is the clock (tests move it).
	Now func() time.Time
}

func (k *CNIKubeconfig) defaults() {
	if k.Path == "" {
		k.Path = DefaultCNIKubeconfig
	}
	if k.Namespace == "" {
		k.Namespace = DefaultNamespace
	}
	if k.ServiceAccount == "" {
		k.ServiceAccount = DefaultCNIServiceAccount
	}
	if k.Server == "" {
		k.Server = k.Clients.Config.Host
	}
	if k.Lifetime == 0 {
		k.Lifetime = DefaultCNITokenLifetime
	}
	if k.Now == nil {
		k.Now = time.Now
	}
	if k.Log == nil {
		k.Log = slog.Default()
	}
}

// Ensure writes the kubeconfig when it is missing, names another server or
// CA, or its token has less than a third of its lifetime left (or cannot
// be read). It reports whether it wrote.
func (k *CNIKubeconfig) Ensure(ctx context.Context) (bool, error) {
	k.defaults()
	ca, err := k.caData()
	if err != nil {
		return false, err
	}
	if cur, err := os.ReadFile(k.Path); err == nil {
		server, curCA, token := parseOwnKubeconfig(cur)
		if server == k.Server && bytes.Equal(curCA, ca) {
			if exp, iat, ok := tokenTimes(token); ok && exp.Sub(k.Now()) > exp.Sub(iat)/3 {
				return false, nil
			}
		}
	}
	secs := int64(k.Lifetime / time.Second)
	tr, err := k.Clients.Typed.CreateToken(ctx, k.Namespace, k.ServiceAccount,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}})
	if err != nil {
		return false, fmt.Errorf("cni kubeconfig: token for serviceaccount %s/%s: %w", k.Namespace, k.ServiceAccount, err)
	}
	if err := writeFileAtomic(k.Path, renderKubeconfig(k.Server, ca, tr.Status.Token), 0o600); err != nil {
		return false, fmt.Errorf("cni kubeconfig: %w", err)
	}
	k.Log.Info("wrote the CNI plugins' kubeconfig", "path", k.Path, "serviceAccount", k.Namespace+"/"+k.ServiceAccount,
		"expires", tr.Status.ExpirationTimestamp.Time)
	return true, nil
}

// Run renews the kubeconfig's token every interval until ctx ends.
func (k *CNIKubeconfig) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := k.Ensure(ctx); err != nil && ctx.Err() == nil {
			k.Log.Warn("cannot renew the CNI kubeconfig; the plugins keep the old token until it expires", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *CNIKubeconfig) caData() ([]byte, error) {
	c := k.Clients.Config
	if len(c.CAData) > 0 {
		return c.CAData, nil
	}
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cni kubeconfig: apiserver CA: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("cni kubeconfig: the client config has no CA for %s", k.Server)
}

// renderKubeconfig is a kubeconfig in JSON (which kubectl reads as YAML
// too, and the plugin parses quickly).
func renderKubeconfig(server string, ca []byte, token string) []byte {
	kc := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "brindle",
		"clusters": []any{map[string]any{"name": "local", "cluster": map[string]any{
			"server": server, "certificate-authority-data": base64.StdEncoding.EncodeToString(ca)}}},
		"users":    []any{map[string]any{"name": "brindle-cni", "user": map[string]any{"token": token}}},
		"contexts": []any{map[string]any{"name": "brindle", "context": map[string]any{"cluster": "local", "user": "brindle-cni"}}},
	}
	b, _ := json.MarshalIndent(kc, "", "  ")
	return append(b, '\n')
}

func parseOwnKubeconfig(b []byte) (server string, ca []byte, token string) {
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `json:"server"`
				CA     string `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User struct {
				Token string `json:"token"`
			} `json:"user"`
		} `json:"users"`
	}
	if json.Unmarshal(b, &kc) != nil || len(kc.Clusters) != 1 || len(kc.Users) != 1 {
		return "", nil, ""
	}
	ca, _ = base64.StdEncoding.DecodeString(kc.Clusters[0].Cluster.CA)
	return kc.Clusters[0].Cluster.Server, ca, kc.Users[0].User.Token
}

// tokenTimes reads exp and iat from a JWT's payload (not verified: it is
// our own token, and only decides when to renew it).
func tokenTimes(tok string) (exp, iat time.Time, ok bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return exp, iat, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return exp, iat, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
		Iat int64 `json:"iat"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Exp == 0 || claims.Iat == 0 {
		return exp, iat, false
	}
	return time.Unix(claims.Exp, 0), time.Unix(claims.Iat, 0), true
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) (retErr error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
