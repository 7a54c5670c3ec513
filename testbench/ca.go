package testbench

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CA is a throw-away certificate authority for the bench. Its root is written
// as PEM to CAPath; every TLS server of the bench (issuers, signetd) presents a
// certificate issued by it for 127.0.0.1, ::1 and localhost.
type CA struct {
	// Dir is where the CA writes its files.
	Dir string
	// CAPath is the PEM file of the root certificate: pass it to clients
	// (signet --ca-cert, signer.yaml issuers[].ca, SSL_CERT_FILE).
	CAPath string
	// Cert is the root certificate.
	Cert *x509.Certificate

	key crypto.Signer
	serials
}

// NewCA creates a CA (ECDSA P-256, valid for one day) and writes its root to
// dir/ca.pem.
func NewCA(dir string) (*CA, error) {
	now := time.Now()
	cert, key, path, err := newRootCA(dir, "ca.pem", "testbench CA", "Signet testbench CA", now.Add(-time.Hour), now.Add(24*time.Hour), nil)
	if err != nil {
		return nil, err
	}
	return &CA{Dir: dir, CAPath: path, Cert: cert, key: key}, nil
}

// newRootCA creates dir, an ECDSA P-256 self-signed CA certificate (serial
// 1, no intermediates below it, with ExtKeyUsage eku when given) and writes
// it as PEM to dir/file. label prefixes errors.
func newRootCA(dir, file, label, commonName string, notBefore, notAfter time.Time, eku []x509.ExtKeyUsage) (*x509.Certificate, crypto.Signer, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, "", fmt.Errorf("%s: create %s: %w", label, dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%s: generate key: %w", label, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Signet testbench"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%s: self-sign: %w", label, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%s: parse root: %w", label, err)
	}
	path := filepath.Join(dir, file)
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, "", fmt.Errorf("%s: %w", label, err)
	}
	return cert, key, path, nil
}

// serials numbers the certificates a CA issues: 2, 3, ... (its root is 1).
type serials struct {
	mu sync.Mutex
	n  int64
}

func (s *serials) next() *big.Int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return big.NewInt(s.n + 1)
}

// Pool returns a cert pool holding only the CA root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// ServerCert issues a TLS server certificate for 127.0.0.1, ::1 and localhost
// (plus any extra DNS names or IPs in hosts).
func (ca *CA) ServerCert(hosts ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("testbench CA: generate server key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: ca.next(),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(23 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("testbench CA: issue server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("testbench CA: parse server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// WriteServerCert issues a server certificate and writes it (chain PEM) and
// its key (PKCS#8 PEM) to dir/name.pem and dir/name-key.pem, for signetd's
// tls: {cert, key}.
func (ca *CA) WriteServerCert(dir, name string) (certPath, keyPath string, err error) {
	c, err := ca.ServerCert()
	if err != nil {
		return "", "", err
	}
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return "", "", fmt.Errorf("testbench CA: marshal server key: %w", err)
	}
	certPath = filepath.Join(dir, name+".pem")
	keyPath = filepath.Join(dir, name+"-key.pem")
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// TLSClientConfig returns a client TLS config trusting only the CA.
func (ca *CA) TLSClientConfig() *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
}

// writeFileAtomic writes data to a temp file beside path and renames it.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
