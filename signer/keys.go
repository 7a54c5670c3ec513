package signer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer/hsm"
)

// KeySigner is what a backend hands out for one key: a crypto.Signer (ECDSA
// and RSA receive a SHA-256 digest; Ed25519 receives the message) that can
// tell whether its device is reachable.
type KeySigner interface {
	crypto.Signer
	Ping(ctx context.Context) error
}

// Backend opens keys by URI.
type Backend interface {
	// Open returns the key named by uri.
	Open(ctx context.Context, uri string) (KeySigner, error)
	// Close releases the backend's resources.
	Close() error
}

// Key is a configured signing key.
type Key struct {
	Name      string
	Purpose   string
	Algorithm string
	Signer    KeySigner
	Public    crypto.PublicKey
	KeyID     string
	Chain     []*x509.Certificate
	WarnDays  int
	Rules     []Rule
	Info      core.KeyInfo // what GET /v1/keys shows, incl. the public key and chain PEM
}

// algorithmOf derives the algorithm name of a public key.
func algorithmOf(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ecdsa-p256", nil
		case elliptic.P384():
			return "ecdsa-p384", nil
		}
		return "", fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() != 3072 {
			return "", fmt.Errorf("RSA key has %d bits; signet uses RSA-3072", k.N.BitLen())
		}
		return "rsa-3072", nil
	case ed25519.PublicKey:
		return "ed25519", nil
	}
	return "", fmt.Errorf("unsupported key type %T", pub)
}

// SignDigest signs a SHA-256 digest in the .sig format: ECDSA DER, RSA
// PKCS#1 v1.5 or PSS (salt = hash length), Ed25519 over the 32 digest bytes.
func (k *Key) SignDigest(digest []byte) ([]byte, error) {
	switch k.Algorithm {
	case "ed25519":
		return k.Signer.Sign(nil, digest, crypto.Hash(0))
	case "rsa-3072-pss":
		return k.Signer.Sign(nil, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	default:
		return k.Signer.Sign(nil, digest, crypto.SHA256)
	}
}

// SignMessage signs a message (the DSSE PAE): pure Ed25519 over the message,
// otherwise the digest signature over SHA-256(message).
func (k *Key) SignMessage(msg []byte) ([]byte, error) {
	if k.Algorithm == "ed25519" {
		return k.Signer.Sign(nil, msg, crypto.Hash(0))
	}
	d := sha256.Sum256(msg)
	return k.SignDigest(d[:])
}

// CertValid reports whether the key's certificate chain is valid at t.
func (k *Key) CertValid(t time.Time) error {
	for i, c := range k.Chain {
		if t.Before(c.NotBefore) {
			return fmt.Errorf("certificate %d (%s) of key %q is not valid before %s", i, c.Subject.CommonName, k.Name, c.NotBefore.UTC().Format(time.RFC3339))
		}
		if t.After(c.NotAfter) {
			return fmt.Errorf("certificate %d (%s) of key %q expired at %s", i, c.Subject.CommonName, k.Name, c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// NotAfter is the earliest expiry of the chain (zero without a chain).
func (k *Key) NotAfter() time.Time {
	var na time.Time
	for _, c := range k.Chain {
		if na.IsZero() || c.NotAfter.Before(na) {
			na = c.NotAfter
		}
	}
	return na
}

// Backends holds one backend per scheme and shares PKCS#11 tokens.
type Backends struct {
	pkcs11 *PKCS11Backend
	file   *FileBackend
}

// NewBackends returns the pkcs11 and file backends.
func NewBackends(log *slog.Logger, maxSessions int) *Backends {
	return &Backends{pkcs11: NewPKCS11Backend(maxSessions), file: &FileBackend{log: log}}
}

// Open dispatches on the URI scheme.
func (b *Backends) Open(ctx context.Context, uri string) (KeySigner, error) {
	switch {
	case strings.HasPrefix(uri, "pkcs11:"):
		return b.pkcs11.Open(ctx, uri)
	case strings.HasPrefix(uri, "file:"):
		return b.file.Open(ctx, uri)
	}
	return nil, fmt.Errorf("unknown key uri scheme (want pkcs11: or file:)")
}

// Close closes all backends.
func (b *Backends) Close() error {
	return errors.Join(b.pkcs11.Close(), b.file.Close())
}

// LoadKeys opens every configured key, checks algorithm and certificate.
func LoadKeys(ctx context.Context, log *slog.Logger, cfg *Config, b Backend) ([]*Key, error) {
	var keys []*Key
	for i, kc := range cfg.Keys {
		field := fmt.Sprintf("keys[%d] (%s)", i, kc.Name)
		s, err := b.Open(ctx, kc.URI)
		if err != nil {
			return nil, fmt.Errorf("%s.uri: %w", field, err)
		}
		pub := s.Public()
		alg, err := algorithmOf(pub)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if kc.Algorithm != "" {
			if kc.Algorithm == "rsa-3072-pss" && alg == "rsa-3072" {
				alg = kc.Algorithm
			} else if kc.Algorithm != alg {
				return nil, fmt.Errorf("%s.algorithm: configured %s but the key is %s", field, kc.Algorithm, alg)
			}
		}
		kid, err := core.KeyIDOf(pub)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		pemBytes, err := core.PublicKeyPEM(pub)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		k := &Key{Name: kc.Name, Purpose: kc.Purpose, Algorithm: alg, Signer: s, Public: pub, KeyID: kid,
			WarnDays: kc.ExpiryWarningDays, Rules: kc.Allow}
		var chainPEM string
		if kc.Certificate != "" {
			if chainPEM, err = k.loadChain(kc.Certificate); err != nil {
				return nil, fmt.Errorf("%s.certificate: %w", field, err)
			}
			if err := k.CertValid(time.Now()); err != nil {
				log.Warn("key certificate not valid now; signing with it is refused", "key", k.Name, "err", err)
			}
		} else if kc.Purpose == "code" {
			// DESIGN.md: code keys carry a code-signing certificate whose
			// validity the signer enforces; without one there is nothing to
			// enforce and verifiers can only pin the bare key.
			log.Warn("code key has no certificate: its validity cannot be enforced; add keys[].certificate with a codeSigning chain", "key", k.Name)
		}
		k.Info = core.KeyInfo{Name: k.Name, Algorithm: k.Algorithm, Purpose: k.Purpose, KeyID: k.KeyID,
			PublicKey: string(pemBytes), CertificateChain: chainPEM, MaxDigests: cfg.Limits.MaxDigests}
		if na := k.NotAfter(); !na.IsZero() {
			k.Info.NotAfter = na.UTC().Format(time.RFC3339)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// loadChain reads the certificate chain (leaf first) into k.Chain, checks it
// certifies k's key, and returns the chain as PEM.
func (k *Key) loadChain(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	rest := b
	var out []byte
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return "", fmt.Errorf("parse certificate: %w", err)
		}
		k.Chain = append(k.Chain, c)
		out = append(out, pem.EncodeToMemory(blk)...)
	}
	if len(k.Chain) == 0 {
		return "", fmt.Errorf("%s holds no CERTIFICATE block", file)
	}
	leaf := k.Chain[0]
	type eq interface{ Equal(crypto.PublicKey) bool }
	if e, ok := leaf.PublicKey.(eq); !ok || !e.Equal(k.Public) {
		return "", fmt.Errorf("leaf certificate %q does not certify the key in the HSM (public keys differ)", leaf.Subject.CommonName)
	}
	for i := 0; i+1 < len(k.Chain); i++ {
		if err := k.Chain[i].CheckSignatureFrom(k.Chain[i+1]); err != nil {
			return "", fmt.Errorf("certificate %d is not signed by certificate %d: %w", i, i+1, err)
		}
	}
	if k.Purpose == "code" {
		ok := false
		for _, u := range leaf.ExtKeyUsage {
			if u == x509.ExtKeyUsageCodeSigning {
				ok = true
			}
		}
		if !ok {
			return "", fmt.Errorf("leaf certificate %q lacks the codeSigning extended key usage required for a code key", leaf.Subject.CommonName)
		}
	}
	return string(out), nil
}

// PKCS11Backend opens keys in PKCS#11 tokens, sharing one Token per
// (module, token) so keys of a token share its session pool.
type PKCS11Backend struct {
	maxSessions int
	tokens      map[string]*hsm.Token
}

// NewPKCS11Backend creates a backend; maxSessions 0 = GOMAXPROCS*2.
func NewPKCS11Backend(maxSessions int) *PKCS11Backend {
	return &PKCS11Backend{maxSessions: maxSessions, tokens: map[string]*hsm.Token{}}
}

type pkcs11Key struct {
	*hsm.Key
	tok *hsm.Token
}

func (k pkcs11Key) Ping(context.Context) error { return k.tok.Ping() }

// Open finds the key named by a pkcs11: URI.
func (b *PKCS11Backend) Open(_ context.Context, uri string) (KeySigner, error) {
	u, err := hsm.ParseURI(uri)
	if err != nil {
		return nil, err
	}
	mod, err := u.Module()
	if err != nil {
		return nil, err
	}
	slot := ""
	if u.SlotID != nil {
		slot = fmt.Sprint(*u.SlotID)
	}
	tokKey := mod + "|" + u.Token + "|" + u.Serial + "|" + slot
	tok, ok := b.tokens[tokKey]
	if !ok {
		tok, err = hsm.Open(u, hsm.Options{MaxSessions: b.maxSessions})
		if err != nil {
			return nil, err
		}
		b.tokens[tokKey] = tok
	}
	k, err := tok.FindKey(u.Object, u.ID)
	if err != nil {
		return nil, err
	}
	return pkcs11Key{Key: k, tok: tok}, nil
}

// Close closes all tokens.
func (b *PKCS11Backend) Close() error {
	var errs []error
	for k, t := range b.tokens {
		errs = append(errs, t.Close())
		delete(b.tokens, k)
	}
	return errors.Join(errs...)
}

// FileBackend loads a PEM private key from disk: for development only.
type FileBackend struct {
	log *slog.Logger
}

type fileKey struct{ crypto.Signer }

func (fileKey) Ping(context.Context) error { return nil }

// Open reads file:/path/key.pem (PKCS#8, SEC1 EC or PKCS#1 RSA).
func (b *FileBackend) Open(_ context.Context, uri string) (KeySigner, error) {
	p := strings.TrimPrefix(uri, "file:")
	if strings.HasPrefix(uri, "file://") {
		u, err := url.Parse(uri)
		if err != nil {
			return nil, err
		}
		p = u.Path
	}
	if b.log != nil {
		b.log.Warn("DEVELOPMENT ONLY: key loaded from a file, not an HSM; never use file: keys in production", "path", p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("file key: %w", err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, fmt.Errorf("file key %s: no PEM block", p)
	}
	var key any
	switch blk.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("file key %s: PEM type %q: want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", p, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("file key %s: %w", p, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("file key %s: %T cannot sign", p, key)
	}
	return fileKey{s}, nil
}

// Close is a no-op.
func (b *FileBackend) Close() error { return nil }
