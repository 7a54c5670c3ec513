package core

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// VerificationKey is a public key loaded for verification, with the
// certificate chain it came from, if any.
type VerificationKey struct {
	Public crypto.PublicKey
	Chain  []*x509.Certificate // leaf first; empty for a bare public key
}

// ParseVerificationKey loads a public key from PEM: a "PUBLIC KEY" block
// (PKIX), or a certificate chain (leaf first). For a chain, each certificate
// must be signed by the next one. Supported: ECDSA P-256/P-384, RSA (>= 2048
// bits), Ed25519.
func ParseVerificationKey(pemBytes []byte) (*VerificationKey, error) {
	rest := pemBytes
	var vk VerificationKey
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case string(cryptoutils.PublicKeyPEMType), "ECDSA PUBLIC KEY", "RSA PUBLIC KEY":
			if vk.Public != nil {
				continue // only the first PUBLIC KEY counts (it must match a leaf certificate, checked below)
			}
			pub, err := cryptoutils.UnmarshalPEMToPublicKey(pem.EncodeToMemory(block))
			if err != nil {
				return nil, fmt.Errorf("public key PEM: %w", err)
			}
			vk.Public = pub
		case string(cryptoutils.CertificatePEMType):
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate PEM: %w", err)
			}
			vk.Chain = append(vk.Chain, cert)
		default:
			return nil, fmt.Errorf("unexpected PEM block %q: want PUBLIC KEY or CERTIFICATE", block.Type)
		}
	}
	if len(vk.Chain) > 0 {
		leafPub := vk.Chain[0].PublicKey
		if vk.Public != nil && !publicKeysEqual(vk.Public, leafPub) {
			return nil, errors.New("key file: the PUBLIC KEY does not match the leaf certificate")
		}
		vk.Public = leafPub
		for i := 0; i+1 < len(vk.Chain); i++ {
			if err := vk.Chain[i].CheckSignatureFrom(vk.Chain[i+1]); err != nil {
				return nil, fmt.Errorf("certificate chain: certificate %d (%s) is not signed by certificate %d (%s): %w",
					i, vk.Chain[i].Subject, i+1, vk.Chain[i+1].Subject, err)
			}
		}
	}
	if vk.Public == nil {
		return nil, errors.New("no PUBLIC KEY or CERTIFICATE PEM block found")
	}
	if err := checkKeyType(vk.Public); err != nil {
		return nil, err
	}
	return &vk, nil
}

func checkKeyType(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("unsupported ECDSA curve %s: want P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small: want at least 2048", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	if e, ok := a.(eq); ok {
		return e.Equal(b)
	}
	return false
}

// KeyIDOf returns the hex SHA-256 of the DER SubjectPublicKeyInfo of pub.
func KeyIDOf(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// PublicKeyPEM returns the PKIX "PUBLIC KEY" PEM of pub.
func PublicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	return cryptoutils.MarshalPublicKeyToPEM(pub)
}

// VerifyDigest checks sig over a SHA-256 digest (the .sig format): ECDSA
// ASN.1, RSA PKCS#1 v1.5 or PSS over the digest; Ed25519 over the 32 digest
// bytes (firmware convention).
func VerifyDigest(pub crypto.PublicKey, digest, sig []byte) error {
	if len(digest) != sha256.Size {
		return fmt.Errorf("digest is %d bytes, want %d (SHA-256)", len(digest), sha256.Size)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return errors.New("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig); err != nil {
			if err2 := rsa.VerifyPSS(k, crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}); err2 != nil {
				return errors.New("RSA signature does not verify (tried PKCS#1 v1.5 and PSS)")
			}
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, digest, sig) {
			return errors.New("Ed25519 signature over the SHA-256 digest does not verify")
		}
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

// VerifyMessage checks sig over msg: ECDSA and RSA over SHA-256(msg), Ed25519
// over msg itself (pure Ed25519, as DSSE and cosign use it).
func VerifyMessage(pub crypto.PublicKey, msg, sig []byte) error {
	if k, ok := pub.(ed25519.PublicKey); ok {
		if !ed25519.Verify(k, msg, sig) {
			return errors.New("Ed25519 signature does not verify")
		}
		return nil
	}
	d := sha256.Sum256(msg)
	return VerifyDigest(pub, d[:], sig)
}
