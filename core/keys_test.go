package core

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func makeCert(t *testing.T, cn string, pub any, parent *x509.Certificate, signer any, isCA bool) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certPEM(cs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func TestParseVerificationKey(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ca := makeCert(t, "Signet Test CA", &caKey.PublicKey, nil, caKey, true)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := makeCert(t, "release", &leafKey.PublicKey, ca, caKey, false)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherCA := makeCert(t, "Other CA", &otherKey.PublicKey, nil, otherKey, true)
	leafPub, _ := PublicKeyPEM(&leafKey.PublicKey)
	otherPub, _ := PublicKeyPEM(&otherKey.PublicKey)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallPub, _ := PublicKeyPEM(&small.PublicKey)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224Pub, _ := PublicKeyPEM(&p224.PublicKey)

	tests := []struct {
		name      string
		pem       []byte
		wantChain int
		wantErr   string
	}{
		{"public key", leafPub, 0, ""},
		{"chain leaf first", certPEM(leaf, ca), 2, ""},
		{"signer.pub: key then chain", append(append([]byte{}, leafPub...), certPEM(leaf, ca)...), 2, ""},
		{"key does not match leaf", append(append([]byte{}, otherPub...), certPEM(leaf, ca)...), 0, "does not match the leaf"},
		{"broken chain", certPEM(leaf, otherCA), 0, "is not signed by certificate 1"},
		{"empty", []byte("nothing here"), 0, "no PUBLIC KEY or CERTIFICATE"},
		{"private key block", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), 0, `unexpected PEM block "EC PRIVATE KEY"`},
		{"rsa too small", smallPub, 0, "too small"},
		{"curve unsupported", p224Pub, 0, "unsupported ECDSA curve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vk, err := ParseVerificationKey(tt.pem)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(vk.Chain) != tt.wantChain || !leafKey.PublicKey.Equal(vk.Public) {
				t.Fatalf("chain %d, key %T", len(vk.Chain), vk.Public)
			}
		})
	}
}
