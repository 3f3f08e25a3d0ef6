package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSFiles are the PEM files of a throwaway PKI: a CA, a server
// certificate for 127.0.0.1 and a client certificate, all signed by the CA.
type TLSFiles struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// StartTLS runs a one-member etcd that serves https on 127.0.0.1 and
// requires client certificates signed by the returned CA.
func StartTLS(tb testing.TB) (*Member, *TLSFiles) {
	tb.Helper()
	tf, err := newPKI(tb.TempDir())
	if err != nil {
		tb.Fatalf("make test pki: %v", err)
	}
	m, err := startOne(tb.TempDir(), "default", localhost, 0, nil, tf)
	if err != nil {
		tb.Fatalf("start embedded etcd with tls: %v", err)
	}
	tb.Cleanup(m.Stop)
	return m, tf
}

func newPKI(dir string) (*TLSFiles, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "brindle-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	tf := &TLSFiles{CA: filepath.Join(dir, "ca.pem")}
	if err := writePEM(tf.CA, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	// The server certificate is also a client certificate: etcd's JSON
	// gateway dials the gRPC server with it.
	for i, leaf := range []struct {
		cn         string
		cert, key  *string
		ips        []net.IP
		extKeyUses []x509.ExtKeyUsage
	}{
		{"127.0.0.1", &tf.ServerCert, &tf.ServerKey, []net.IP{net.IPv4(127, 0, 0, 1)}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{"brindle-ipam", &tf.ClientCert, &tf.ClientKey, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: leaf.cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: leaf.ips,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: leaf.extKeyUses}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		*leaf.cert = filepath.Join(dir, leaf.cn+".pem")
		*leaf.key = filepath.Join(dir, leaf.cn+"-key.pem")
		if err := writePEM(*leaf.cert, "CERTIFICATE", der); err != nil {
			return nil, err
		}
		if err := writePEM(*leaf.key, "EC PRIVATE KEY", keyDER); err != nil {
			return nil, err
		}
	}
	return tf, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
