package core

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// PayloadTypeInToto is the DSSE payloadType of in-toto statements.
const PayloadTypeInToto = "application/vnd.in-toto+json"

// Envelope bounds for defensive parsing.
const (
	MaxEnvelopeBytes      = 24 << 20 // a whole envelope line
	MaxEnvelopeSignatures = 16
	MaxSignatureB64       = 4096 // base64 of a signature (RSA-4096 is 684 chars)
)

// PAE is the DSSE v1 pre-authentication encoding:
// "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
func PAE(payloadType string, payload []byte) []byte {
	return dsse.PAE(payloadType, payload)
}

// SignInput says what a signer wants to receive.
type SignInput int

const (
	// InputSHA256 means Sign receives SHA-256(message) (ECDSA, RSA; the
	// message itself never leaves the caller).
	InputSHA256 SignInput = iota
	// InputMessage means Sign receives the message itself (pure Ed25519
	// over the DSSE PAE).
	InputMessage
)

// MessageSigner is the seam between DSSE/signature-file logic and a key
// (local crypto.Signer, HSM, or the remote signer). It says whether it wants
// the SHA-256 digest of the message or the message itself.
type MessageSigner interface {
	// KeyID identifies the key (hex SHA-256 of the DER SubjectPublicKeyInfo).
	KeyID() string
	// Input says whether Sign receives SHA-256(message) or the message.
	Input() SignInput
	// Sign signs input (digest or message per Input) and returns the raw
	// signature (ASN.1 DER for ECDSA, PKCS#1 v1.5/PSS for RSA, 64 bytes for Ed25519).
	Sign(ctx context.Context, input []byte) ([]byte, error)
}

// SignEnvelope signs payload as a DSSE envelope with s.
func SignEnvelope(ctx context.Context, s MessageSigner, payloadType string, payload []byte) (*Envelope, error) {
	pae := PAE(payloadType, payload)
	input := pae
	if s.Input() == InputSHA256 {
		d := sha256.Sum256(pae)
		input = d[:]
	}
	sig, err := s.Sign(ctx, input)
	if err != nil {
		return nil, fmt.Errorf("sign DSSE envelope: %w", err)
	}
	return &Envelope{
		PayloadType: payloadType,
		Payload:     base64.StdEncoding.EncodeToString(payload),
		Signatures:  []EnvelopeSignature{{KeyID: s.KeyID(), Sig: base64.StdEncoding.EncodeToString(sig)}},
	}, nil
}

// ParseEnvelope parses one DSSE envelope defensively: bounded size, no
// unknown fields, no trailing data, valid base64, at least one signature.
// It returns the envelope and its decoded payload.
func ParseEnvelope(data []byte) (*Envelope, []byte, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, nil, errors.New("envelope is empty")
	}
	if len(data) > MaxEnvelopeBytes {
		return nil, nil, fmt.Errorf("envelope is %d bytes, over the %d byte limit", len(data), MaxEnvelopeBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var env Envelope
	if err := dec.Decode(&env); err != nil {
		return nil, nil, fmt.Errorf("envelope is not valid DSSE JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("envelope has trailing data after the JSON object")
	}
	if env.PayloadType == "" {
		return nil, nil, errors.New("envelope has no payloadType")
	}
	if len(env.Signatures) == 0 {
		return nil, nil, errors.New("envelope has no signatures")
	}
	if len(env.Signatures) > MaxEnvelopeSignatures {
		return nil, nil, fmt.Errorf("envelope has %d signatures, over the limit of %d", len(env.Signatures), MaxEnvelopeSignatures)
	}
	payload, err := decodeB64(env.Payload)
	if err != nil {
		return nil, nil, fmt.Errorf("envelope payload is not base64: %w", err)
	}
	for i, s := range env.Signatures {
		if len(s.Sig) > MaxSignatureB64 {
			return nil, nil, fmt.Errorf("envelope signature %d is %d characters, over the limit of %d", i, len(s.Sig), MaxSignatureB64)
		}
		if _, err := decodeB64(s.Sig); err != nil {
			return nil, nil, fmt.Errorf("envelope signature %d is not base64: %w", i, err)
		}
	}
	return &env, payload, nil
}

// decodeB64 accepts standard or URL-safe base64, padded or not, as the DSSE
// spec asks verifiers to.
func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	_, err := base64.StdEncoding.DecodeString(s)
	return nil, err
}

// VerifyEnvelope checks that at least one signature of env verifies with pub
// over the PAE, and returns the payload. Errors start with "dsse signature".
func VerifyEnvelope(env *Envelope, pub crypto.PublicKey) ([]byte, error) {
	payload, err := decodeB64(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("dsse payload: not base64: %w", err)
	}
	pae := PAE(env.PayloadType, payload)
	var lastErr error
	for _, s := range env.Signatures {
		sig, err := decodeB64(s.Sig)
		if err != nil {
			lastErr = fmt.Errorf("signature not base64: %w", err)
			continue
		}
		if err := VerifyMessage(pub, pae, sig); err != nil {
			lastErr = err
			continue
		}
		return payload, nil
	}
	return nil, fmt.Errorf("dsse signature: no signature of the envelope verifies with the given key: %w", lastErr)
}
