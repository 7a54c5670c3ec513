package signer_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer"
)

// core's signer client against the real server: a batch larger than
// max_digests is split, every signature verifies, and each request leaves one
// audit record carrying the client's request id.
func TestCoreClientAgainstServer(t *testing.T) {
	cfg := fx.baseConfig(t)
	cfg.Limits.MaxDigests = 1000
	ts := fx.start(t, cfg)
	tok := mint(t, fx.gh, nil)
	c, err := core.NewClient(core.ClientOptions{BaseURL: ts.URL, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	var ds []core.DigestRequest
	for i := 0; i < 2500; i++ {
		n := fmt.Sprintf("dist/artifact-%04d.bin", i)
		ds = append(ds, core.DigestRequest{Name: n, SHA256: digestOf([]byte(n))})
	}
	ctx := context.Background()
	sr, err := c.Sign(ctx, "ed25519", ds)
	if err != nil {
		t.Fatal(err)
	}
	if len(sr.Signatures) != 2500 {
		t.Fatalf("%d signatures", len(sr.Signatures))
	}
	pub := readPub(t, "ed25519")
	for i, s := range sr.Signatures {
		sig, _ := base64.StdEncoding.DecodeString(s.Signature)
		d, _ := hex.DecodeString(ds[i].SHA256)
		if s.Name != ds[i].Name {
			t.Fatalf("order: %s vs %s", s.Name, ds[i].Name)
		}
		if err := core.VerifyDigest(pub, d, sig); err != nil {
			t.Fatalf("signature %d: %v", i, err)
		}
	}
	stmt := statementFor(t, "github", tok, []byte("x"), nil)
	ar, err := c.Attest(ctx, "ed25519", stmt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := core.VerifyEnvelope(&ar.Envelope, pub); err != nil {
		t.Fatal(err)
	}
	// A refusal reaches the client as an APIError with the stable code.
	other, _ := core.NewClient(core.ClientOptions{BaseURL: ts.URL, Token: mint(t, fx.gh, map[string]any{"repository_id": "7"}), RetryMax: -1})
	_, err = other.Sign(ctx, "ed25519", ds[:1])
	var apiErr *core.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != core.ErrCodePolicyDenied {
		t.Fatalf("refusal: %v", err)
	}
	n, err := signer.VerifyAuditLog(cfg.Audit.Path)
	if err != nil || n != 5 {
		t.Fatalf("audit %d %v, want 3 sign + 1 attest + 1 refusal", n, err)
	}
	seen := map[string]bool{}
	for _, line := range readLines(t, cfg.Audit.Path) {
		var r signer.AuditRecord
		json.Unmarshal(line, &r)
		if len(r.RequestID) != 32 || seen[r.RequestID] {
			t.Fatalf("request id %q not the client's (or reused)", r.RequestID)
		}
		seen[r.RequestID] = true
	}
}
