package natsbus

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
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/natstest"
)

// writeCert writes a certificate for 127.0.0.1 signed by parent (self
// signed when parent is nil) and its key, PEM, into dir as name.pem and
// name-key.pem.
func writeCert(t *testing.T, dir, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:        isCA, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	for file, block := range map[string]*pem.Block{name + ".pem": {Type: "CERTIFICATE", Bytes: der}, name + "-key.pem": {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TestTLS: a server that wants mutual TLS takes the bus with the CA and a
// client certificate, and not without them.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", true, nil, nil)
	writeCert(t, dir, "server", false, ca, caKey)
	writeCert(t, dir, "client", false, ca, caKey)
	p := func(f string) string { return filepath.Join(dir, f) }
	srv := natstest.Start(t, "--tlsverify", "--tlscert", p("server.pem"), "--tlskey", p("server-key.pem"), "--tlscacert", p("ca.pem"))
	url := strings.Replace(srv.URL, "nats://", "tls://", 1)
	if _, log := runBus(t, Config{URLs: []string{url}, Host: "a", CA: p("ca.pem")}, 2*time.Second); strings.Contains(log, "sharing through NATS") {
		t.Fatalf("shared without a client certificate: %s", log)
	}
	if _, log := runBus(t, Config{URLs: []string{url}, Host: "a", CA: p("ca.pem"), Cert: p("client.pem"), Key: p("client-key.pem")}, 2*time.Second); !strings.Contains(log, "sharing through NATS") {
		t.Fatalf("mutual TLS: %s", log)
	}
}
