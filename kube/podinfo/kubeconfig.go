package podinfo

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// kubeconfig is the part of a kubeconfig file the plugin uses.
type kubeconfig struct {
	Clusters []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthority     string `json:"certificate-authority"`
			CertificateAuthorityData string `json:"certificate-authority-data"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Token                 string `json:"token"`
			TokenFile             string `json:"tokenFile"`
			ClientCertificateData string `json:"client-certificate-data"`
			ClientKeyData         string `json:"client-key-data"`
		} `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	CurrentContext string `json:"current-context"`
}

// apiTarget is where and how to reach the apiserver.
type apiTarget struct {
	server string
	token  string
	tls    *tls.Config
}

// loadKubeconfig reads the current context of a kubeconfig: the server,
// its CA, and a bearer token or client certificate.
func loadKubeconfig(path string) (*apiTarget, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	ctxName := kc.CurrentContext
	clusterName, userName := "", ""
	for _, c := range kc.Contexts {
		if c.Name == ctxName || ctxName == "" && len(kc.Contexts) == 1 {
			clusterName, userName = c.Context.Cluster, c.Context.User
		}
	}
	if clusterName == "" {
		return nil, fmt.Errorf("kubeconfig %s: current-context %q: no such context", path, ctxName)
	}
	t := &apiTarget{tls: &tls.Config{MinVersion: tls.VersionTLS12}}
	found := false
	for _, c := range kc.Clusters {
		if c.Name != clusterName {
			continue
		}
		found = true
		u, err := url.Parse(c.Cluster.Server)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("kubeconfig %s: cluster %q: server %q: want https://host:port", path, c.Name, c.Cluster.Server)
		}
		t.server = strings.TrimRight(c.Cluster.Server, "/")
		ca := []byte(nil)
		switch {
		case c.Cluster.CertificateAuthorityData != "":
			if ca, err = base64.StdEncoding.DecodeString(c.Cluster.CertificateAuthorityData); err != nil {
				return nil, fmt.Errorf("kubeconfig %s: certificate-authority-data: %w", path, err)
			}
		case c.Cluster.CertificateAuthority != "":
			if ca, err = os.ReadFile(c.Cluster.CertificateAuthority); err != nil {
				return nil, fmt.Errorf("kubeconfig %s: certificate-authority: %w", path, err)
			}
		}
		if ca != nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ca) {
				return nil, fmt.Errorf("kubeconfig %s: cluster %q: no PEM certificate in its CA", path, c.Name)
			}
			t.tls.RootCAs = pool
		}
	}
	if !found {
		return nil, fmt.Errorf("kubeconfig %s: cluster %q not found", path, clusterName)
	}
	for _, u := range kc.Users {
		if u.Name != userName {
			continue
		}
		t.token = u.User.Token
		if u.User.TokenFile != "" {
			b, err := os.ReadFile(u.User.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("kubeconfig %s: tokenFile: %w", path, err)
			}
			t.token = strings.TrimSpace(string(b))
		}
		if u.User.ClientCertificateData != "" {
			crt, err1 := base64.StdEncoding.DecodeString(u.User.ClientCertificateData)
			key, err2 := base64.StdEncoding.DecodeString(u.User.ClientKeyData)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("kubeconfig %s: user %q: client certificate or key is not base64", path, u.Name)
			}
			pair, err := tls.X509KeyPair(crt, key)
			if err != nil {
				return nil, fmt.Errorf("kubeconfig %s: user %q: %w", path, u.Name, err)
			}
			t.tls.Certificates = []tls.Certificate{pair}
		}
	}
	return t, nil
}
