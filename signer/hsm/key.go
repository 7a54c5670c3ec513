package hsm

import (
	"crypto"
	"crypto/ed25519"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/miekg/pkcs11"
)

// Key is a private key in a token, found by label (object=) and/or id (id=).
// Its handles are cached and re-found after a reconnect. Key implements
// crypto.Signer: for ECDSA/RSA the argument is a digest (opts as usual, an
// *rsa.PSSOptions selects PSS); for Ed25519 it is the message, signed with pure
// EdDSA (opts.HashFunc() must be 0).
type Key struct {
	t     *Token
	label string
	id    []byte

	mu     sync.RWMutex
	gen    uint64
	signer crypto.Signer       // crypto11 signer (ECDSA, RSA)
	edPriv pkcs11.ObjectHandle // Ed25519 private key handle
	isEd   bool
	pub    crypto.PublicKey
}

// FindKey finds the key pair named by label and/or id.
func (t *Token) FindKey(label string, id []byte) (*Key, error) {
	if label == "" && len(id) == 0 {
		return nil, errors.New("pkcs11: name the key with object= or id=")
	}
	k := &Key{t: t, label: label, id: id}
	c, gen, err := t.current()
	if err != nil {
		return nil, err
	}
	if err := k.bind(c, gen); err != nil {
		if IsTokenError(err) {
			if rerr := t.reconnect(gen); rerr != nil {
				return nil, rerr
			}
			c, gen, err = t.current()
			if err != nil {
				return nil, err
			}
			if err := k.bind(c, gen); err != nil {
				return nil, err
			}
			return k, nil
		}
		return nil, err
	}
	return k, nil
}

func (k *Key) name() string {
	if k.label != "" {
		return fmt.Sprintf("key %q", k.label)
	}
	return fmt.Sprintf("key id %x", k.id)
}

func keyTemplate(class uint, label string, id []byte) []*pkcs11.Attribute {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	if len(id) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	return tmpl
}

func findObjects(raw *pkcs11.Ctx, s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := raw.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	hs, _, err := raw.FindObjects(s, 4)
	if ferr := raw.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	return hs, err
}

// bind looks the key up on connection c and caches its handles.
func (k *Key) bind(c *conn, gen uint64) error {
	s, err := c.session()
	if err != nil {
		return err
	}
	bad := false
	defer func() { c.release(s, bad) }()
	privs, err := findObjects(c.raw, s, keyTemplate(pkcs11.CKO_PRIVATE_KEY, k.label, k.id))
	if err != nil {
		bad = IsTokenError(err)
		return fmt.Errorf("find %s: %w", k.name(), err)
	}
	switch len(privs) {
	case 0:
		return fmt.Errorf("%s not found in %s", k.name(), k.t.describe())
	case 1:
	default:
		return fmt.Errorf("%s is ambiguous in %s: %d private keys match; add id= to the URI", k.name(), k.t.describe(), len(privs))
	}
	attrs, err := c.raw.GetAttributeValue(s, privs[0], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
	})
	if err != nil {
		bad = IsTokenError(err)
		return fmt.Errorf("read %s attributes: %w", k.name(), err)
	}
	keyType := bytesToUlong(attrs[0].Value)
	id := attrs[1].Value
	label := string(attrs[2].Value)

	if keyType == ckkECEdwards {
		pubs, err := findObjects(c.raw, s, keyTemplate(pkcs11.CKO_PUBLIC_KEY, label, id))
		if err != nil || len(pubs) == 0 {
			return fmt.Errorf("find public half of %s: %v", k.name(), err)
		}
		pub, err := readEdPublic(c.raw, s, pubs[0])
		if err != nil {
			return fmt.Errorf("%s: %w", k.name(), err)
		}
		k.mu.Lock()
		k.isEd, k.edPriv, k.pub, k.gen, k.signer = true, privs[0], pub, gen, nil
		k.mu.Unlock()
		return nil
	}
	if len(id) == 0 {
		return fmt.Errorf("%s has no CKA_ID; crypto11 needs one to pair the public key", k.name())
	}
	sg, err := c.c11.FindKeyPair(id, []byte(label))
	if err != nil {
		return fmt.Errorf("find %s: %w", k.name(), err)
	}
	if sg == nil {
		return fmt.Errorf("%s: public key with the same CKA_ID not found", k.name())
	}
	k.mu.Lock()
	k.isEd, k.signer, k.pub, k.gen = false, sg, sg.Public(), gen
	k.mu.Unlock()
	return nil
}

func readEdPublic(raw *pkcs11.Ctx, s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (ed25519.PublicKey, error) {
	attrs, err := raw.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, fmt.Errorf("read CKA_EC_POINT: %w", err)
	}
	pt := attrs[0].Value
	if len(pt) == ed25519.PublicKeySize {
		return ed25519.PublicKey(pt), nil
	}
	var raw32 []byte
	if rest, err := asn1.Unmarshal(pt, &raw32); err == nil && len(rest) == 0 && len(raw32) == ed25519.PublicKeySize {
		return ed25519.PublicKey(raw32), nil
	}
	return nil, fmt.Errorf("CKA_EC_POINT of %d bytes is not an Ed25519 point", len(pt))
}

func bytesToUlong(bs []byte) uint {
	// PKCS#11 CK_ULONG in host order (little endian on amd64/arm64).
	var n uint
	for i := len(bs) - 1; i >= 0; i-- {
		n = n<<8 | uint(bs[i])
	}
	return n
}

// Public returns the public key.
func (k *Key) Public() crypto.PublicKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.pub
}

// Sign signs digest (ECDSA/RSA) or message (Ed25519). On a token error it
// reconnects once, re-finds the key and retries.
func (k *Key) Sign(_ io.Reader, data []byte, opts crypto.SignerOpts) ([]byte, error) {
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		c, gen, err := k.t.current()
		if err != nil {
			return nil, err
		}
		k.mu.RLock()
		stale := k.gen != gen
		k.mu.RUnlock()
		if stale {
			if err := k.bind(c, gen); err != nil {
				lastErr = err
				if IsTokenError(err) && attempt == 0 {
					if rerr := k.t.reconnect(gen); rerr != nil {
						return nil, rerr
					}
					continue
				}
				return nil, err
			}
		}
		sig, err := k.signOnce(c, data, opts)
		if err == nil {
			return sig, nil
		}
		lastErr = err
		if !IsTokenError(err) || attempt == 1 {
			break
		}
		if rerr := k.t.reconnect(gen); rerr != nil {
			return nil, fmt.Errorf("sign with %s: %w (and %v)", k.name(), err, rerr)
		}
	}
	return nil, fmt.Errorf("sign with %s: %w", k.name(), lastErr)
}

func (k *Key) signOnce(c *conn, data []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.mu.RLock()
	isEd, h, sg := k.isEd, k.edPriv, k.signer
	k.mu.RUnlock()
	if !isEd {
		return sg.Sign(nil, data, opts)
	}
	if opts != nil && opts.HashFunc() != 0 {
		return nil, errors.New("ed25519 signs the message itself: pass crypto.Hash(0)")
	}
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	if err := c.raw.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}, h); err != nil {
		c.release(s, IsTokenError(err))
		return nil, err
	}
	sig, err := c.raw.Sign(s, data)
	c.release(s, err != nil && IsTokenError(err))
	return sig, err
}
