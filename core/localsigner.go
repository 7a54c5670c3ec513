package core

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
)

// LocalSigner is a MessageSigner over an in-process crypto.Signer (a file
// key for development and tests, or a crypto11 HSM key). ECDSA and RSA sign
// the SHA-256 digest; Ed25519 signs the message itself.
type LocalSigner struct {
	signer crypto.Signer
	keyID  string
	pss    bool
}

// NewLocalSigner wraps s; pss selects RSASSA-PSS instead of PKCS#1 v1.5 for RSA keys.
func NewLocalSigner(s crypto.Signer, pss bool) (*LocalSigner, error) {
	switch s.Public().(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("unsupported key type %T", s.Public())
	}
	id, err := KeyIDOf(s.Public())
	if err != nil {
		return nil, err
	}
	return &LocalSigner{signer: s, keyID: id, pss: pss}, nil
}

// KeyID is the hex SHA-256 of the key's SubjectPublicKeyInfo.
func (l *LocalSigner) KeyID() string { return l.keyID }

// Public returns the public key.
func (l *LocalSigner) Public() crypto.PublicKey { return l.signer.Public() }

// Input is InputMessage for Ed25519, InputSHA256 otherwise.
func (l *LocalSigner) Input() SignInput {
	if _, ok := l.signer.Public().(ed25519.PublicKey); ok {
		return InputMessage
	}
	return InputSHA256
}

// Sign signs a SHA-256 digest (ECDSA, RSA) or a message (Ed25519).
func (l *LocalSigner) Sign(_ context.Context, input []byte) ([]byte, error) {
	var opts crypto.SignerOpts = crypto.SHA256
	switch l.signer.Public().(type) {
	case ed25519.PublicKey:
		opts = crypto.Hash(0)
	case *rsa.PublicKey:
		if l.pss {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		}
	}
	sig, err := l.signer.Sign(rand.Reader, input, opts)
	if err != nil {
		return nil, fmt.Errorf("sign with key %s: %w", l.keyID[:12], err)
	}
	return sig, nil
}

// SignDigest signs a SHA-256 artifact digest as a .sig signature: ECDSA/RSA
// over the digest, Ed25519 over the 32 digest bytes (firmware convention).
func (l *LocalSigner) SignDigest(ctx context.Context, digest []byte) ([]byte, error) {
	return l.Sign(ctx, digest)
}
