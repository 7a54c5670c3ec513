package testbench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
)

// TestCodeSigningCA checks the chains the bench gives its code keys: leaf
// first (the key's public key, digitalSignature, EKU codeSigning, the
// requested validity), then the CA that signed it; core accepts the file as
// a verification key.
func TestCodeSigningCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCodeSigningCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	cases := []struct {
		name     string
		from, to time.Time
		validNow bool
	}{
		{"valid", now.Add(-time.Hour), now.Add(90 * 24 * time.Hour), true},
		{"expired", now.Add(-30 * 24 * time.Hour), now.Add(-24 * time.Hour), false},
		{"not-yet-valid", now.Add(24 * time.Hour), now.Add(30 * 24 * time.Hour), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+"-chain.pem")
			if _, err := ca.IssueChain(path, tc.name, key.Public(), tc.from, tc.to); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var certs []*x509.Certificate
			for rest := data; ; {
				var blk *pem.Block
				if blk, rest = pem.Decode(rest); blk == nil {
					break
				}
				c, err := x509.ParseCertificate(blk.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				certs = append(certs, c)
			}
			if len(certs) != 2 || !certs[1].Equal(ca.Cert) {
				t.Fatalf("chain has %d certificates; want leaf then the CA", len(certs))
			}
			leaf := certs[0]
			if !key.PublicKey.Equal(leaf.PublicKey) {
				t.Error("leaf does not certify the key")
			}
			if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
				t.Errorf("leaf not signed by the CA: %v", err)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageCodeSigning {
				t.Errorf("leaf usages %v / %v; want digitalSignature / codeSigning", leaf.KeyUsage, leaf.ExtKeyUsage)
			}
			if !leaf.NotBefore.Equal(tc.from) || !leaf.NotAfter.Equal(tc.to) {
				t.Errorf("leaf valid %s..%s; want %s..%s", leaf.NotBefore, leaf.NotAfter, tc.from, tc.to)
			}
			if got := !now.Before(leaf.NotBefore) && !now.After(leaf.NotAfter); got != tc.validNow {
				t.Errorf("valid now = %v, want %v", got, tc.validNow)
			}
			if now.Before(ca.Cert.NotBefore) || now.After(ca.Cert.NotAfter) {
				t.Error("the CA itself must be valid now (only the leaf differs between rows)")
			}
			vk, err := core.ParseVerificationKey(data)
			if err != nil {
				t.Fatalf("core rejects the chain: %v", err)
			}
			if !key.PublicKey.Equal(vk.Public) {
				t.Error("core reads another key from the chain")
			}
		})
	}
}
