package hsm

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// Algorithms are the key algorithms signet supports. rsa-3072 and rsa-3072-pss
// are the same key type with different signature schemes.
var Algorithms = []string{"ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-3072-pss", "ed25519"}

// oidEd25519 is id-Ed25519 (RFC 8410), used as CKA_EC_PARAMS.
var oidEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}

// GenerateKey creates a key pair inside the PKCS#11 token named by the RFC 7512
// uri (object= becomes CKA_LABEL, id= CKA_ID; a random 16-byte id when absent)
// and returns its public key. algorithm is ecdsa-p256, ecdsa-p384, rsa-3072
// (or rsa-3072-pss) or ed25519. It refuses to create a second key with the same
// label or id.
func GenerateKey(uri string, algorithm string) (crypto.PublicKey, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if u.Object == "" {
		return nil, fmt.Errorf("generate key: the uri needs object=LABEL")
	}
	t, err := Open(u, Options{MaxSessions: 2})
	if err != nil {
		return nil, err
	}
	defer t.Close()
	return t.GenerateKey(u.Object, u.ID, algorithm)
}

// GenerateKey creates a key pair with the given label and id in t.
func (t *Token) GenerateKey(label string, id []byte, algorithm string) (crypto.PublicKey, error) {
	c, _, err := t.current()
	if err != nil {
		return nil, err
	}
	if len(id) == 0 {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	// Refuse duplicates: a second object with the same label would make the
	// signer's URI ambiguous.
	if err := c.checkFree(label, id); err != nil {
		return nil, err
	}
	switch algorithm {
	case "ecdsa-p256", "ecdsa-p384":
		curve := elliptic.P256()
		if algorithm == "ecdsa-p384" {
			curve = elliptic.P384()
		}
		k, err := c.c11.GenerateECDSAKeyPairWithLabel(id, []byte(label), curve)
		if err != nil {
			return nil, fmt.Errorf("generate %s key %q: %w", algorithm, label, err)
		}
		return k.Public(), nil
	case "rsa-3072", "rsa-3072-pss":
		k, err := c.c11.GenerateRSAKeyPairWithLabel(id, []byte(label), 3072)
		if err != nil {
			return nil, fmt.Errorf("generate %s key %q: %w", algorithm, label, err)
		}
		return k.Public(), nil
	case "ed25519":
		if err := c.generateEd25519(label, id); err != nil {
			return nil, fmt.Errorf("generate ed25519 key %q: %w", label, err)
		}
		k, err := t.FindKey(label, id)
		if err != nil {
			return nil, err
		}
		return k.Public(), nil
	default:
		return nil, fmt.Errorf("unknown algorithm %q (want one of %s)", algorithm, strings.Join(Algorithms, ", "))
	}
}

func (c *conn) checkFree(label string, id []byte) error {
	s, err := c.session()
	if err != nil {
		return err
	}
	defer c.release(s, false)
	for _, tmpl := range [][]*pkcs11.Attribute{
		{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)},
		{pkcs11.NewAttribute(pkcs11.CKA_ID, id)},
	} {
		hs, err := findObjects(c.raw, s, tmpl)
		if err != nil {
			return fmt.Errorf("look for existing keys: %w", err)
		}
		if len(hs) > 0 {
			return fmt.Errorf("a key with label %q or id %x already exists in the token; choose another object= label", label, id)
		}
	}
	return nil
}

func (c *conn) generateEd25519(label string, id []byte) error {
	params, err := asn1.Marshal(oidEd25519)
	if err != nil {
		return err
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	defer c.release(s, false)
	pub := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	priv := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	_, _, err = c.raw.GenerateKeyPair(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmECEdwardsKeyPairGen, nil)}, pub, priv)
	return err
}
