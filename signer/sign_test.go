package signer_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/testbench"
)

func writeFile(t *testing.T, p string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// statementFor builds the statement a client would send for artifact with
// the identity derived from token's claims, optionally altered.
func statementFor(t *testing.T, platform, token string, artifact []byte, alter func(*core.Identity)) []byte {
	t.Helper()
	claims, err := testbench.ParseUnverified(token)
	if err != nil {
		t.Fatal(err)
	}
	server := ""
	id, err := core.IdentityFromClaims(platform, server, claims)
	if err != nil {
		t.Fatal(err)
	}
	if alter != nil {
		alter(&id)
	}
	stmt, err := core.BuildStatement([]core.Subject{{Name: "app.bin", Digest: map[string]string{"sha256": digestOf(artifact)}}},
		id, &core.BuildContext{Platform: platform})
	if err != nil {
		t.Fatal(err)
	}
	return stmt
}

func TestEveryAlgorithmSignsAndVerifies(t *testing.T) {
	ts := fx.start(t, fx.baseConfig(t))
	cosign := cosignPath(t)
	dir := t.TempDir()
	artifact := []byte("signet artifact bytes\n")
	artPath := writeFile(t, filepath.Join(dir, "app.bin"), artifact)
	for _, name := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-3072-pss", "ed25519"} {
		t.Run(name, func(t *testing.T) {
			pub := readPub(t, name)
			tok := mint(t, fx.gh, nil)
			var sr core.SignResponse
			req := core.SignRequest{Key: name, Digests: []core.DigestRequest{{Name: "app.bin", SHA256: digestOf(artifact)}}}
			if code, apiErr := ts.call(t, "/v1/sign", tok, req, &sr); apiErr != nil {
				t.Fatalf("sign: %d %+v", code, apiErr)
			}
			if sr.Key.Algorithm != name || sr.Key.MaxDigests != 1000 || sr.Audit.Seq == 0 || len(sr.Audit.Hash) != 64 {
				t.Fatalf("response key/audit: %+v %+v", sr.Key, sr.Audit)
			}
			sig, err := base64.StdEncoding.DecodeString(sr.Signatures[0].Signature)
			if err != nil {
				t.Fatal(err)
			}
			d, _ := hex.DecodeString(digestOf(artifact))
			if err := core.VerifyDigest(pub, d, sig); err != nil {
				t.Fatalf("core.VerifyDigest: %v", err)
			}
			// cosign checks .sig files of ECDSA and RSA PKCS#1 v1.5 keys
			// (Ed25519 .sig is over the digest by design; cosign's RSA
			// verifier is PKCS#1 v1.5 only).
			if name != "ed25519" && name != "rsa-3072-pss" {
				sigPath := writeFile(t, filepath.Join(dir, name+".sig"), []byte(sr.Signatures[0].Signature))
				out, err := exec.Command(cosign, "verify-blob", "--key", fx.pubs[name], "--signature", sigPath,
					"--insecure-ignore-tlog=true", artPath).CombinedOutput()
				if err != nil {
					t.Fatalf("cosign verify-blob: %v\n%s", err, out)
				}
			}
			// Attestation: DSSE over the PAE, verified by core and cosign.
			stmt := statementFor(t, "github", tok, artifact, nil)
			var ar core.AttestResponse
			if code, apiErr := ts.call(t, "/v1/attest", tok, core.AttestRequest{Key: name, Statement: stmt}, &ar); apiErr != nil {
				t.Fatalf("attest: %d %+v", code, apiErr)
			}
			payload, err := core.VerifyEnvelope(&ar.Envelope, pub)
			if err != nil {
				t.Fatalf("core.VerifyEnvelope: %v", err)
			}
			if string(payload) != string(stmt) {
				t.Fatal("envelope payload differs from the statement sent")
			}
			if ar.Envelope.Signatures[0].KeyID != sr.Key.KeyID || ar.Audit.Seq != sr.Audit.Seq+1 {
				t.Fatalf("keyid %s / audit %+v", ar.Envelope.Signatures[0].KeyID, ar.Audit)
			}
			if name != "rsa-3072-pss" {
				line, _ := json.Marshal(ar.Envelope)
				envPath := writeFile(t, filepath.Join(dir, name+".intoto.jsonl"), append(line, '\n'))
				out, err := exec.Command(cosign, "verify-blob-attestation", "--key", fx.pubs[name], "--signature", envPath,
					"--type", "slsaprovenance1", "--insecure-ignore-tlog=true", artPath).CombinedOutput()
				if err != nil {
					t.Fatalf("cosign verify-blob-attestation: %v\n%s", err, out)
				}
			}
		})
	}
	n, err := signerVerify(ts)
	if err != nil || n != 10 {
		t.Fatalf("audit: %d records, %v; want 10", n, err)
	}
}

func TestAttestRefusesForeignIdentity(t *testing.T) {
	ts := fx.start(t, fx.baseConfig(t))
	artifact := []byte("x")
	tests := []struct {
		name  string
		alter func(*core.Identity)
		field string
	}{
		{"other repository", func(id *core.Identity) { id.SourceRepo = "https://github.com/evil/fork" }, "source_repo"},
		{"other commit", func(id *core.Identity) { id.SourceDigest = strings.Repeat("a", 40) }, "source_digest"},
		{"other builder", func(id *core.Identity) {
			id.BuilderID = "https://github.com/evil/fork/.github/workflows/x.yml@refs/heads/main"
		}, "builder_id"},
		{"other ref", func(id *core.Identity) { id.SourceRef = "refs/tags/v9.9.9" }, "source_ref"},
		{"other repository id", func(id *core.Identity) { id.ImmutableIDs["repository_id"] = "1" }, "repository_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := mint(t, fx.gh, nil)
			stmt := statementFor(t, "github", tok, artifact, tc.alter)
			code, apiErr := ts.call(t, "/v1/attest", tok, core.AttestRequest{Key: "ecdsa-p256", Statement: stmt}, nil)
			if code != http.StatusForbidden || apiErr == nil || apiErr.Code != core.ErrCodeIdentityMismatch || !strings.Contains(apiErr.Message, tc.field) {
				t.Fatalf("want 403 identity_mismatch naming %s, got %d %+v", tc.field, code, apiErr)
			}
			if strings.Contains(apiErr.Message, tok) {
				t.Fatal("error echoes the token")
			}
		})
	}
	t.Run("gitlab and jenkins identities accepted", func(t *testing.T) {
		for _, c := range []struct {
			platform string
			tok      string
		}{{"gitlab", mint(t, fx.gl, nil)}, {"jenkins", mint(t, fx.jk, nil)}} {
			stmt := statementFor(t, c.platform, c.tok, artifact, nil)
			var ar core.AttestResponse
			if code, apiErr := ts.call(t, "/v1/attest", c.tok, core.AttestRequest{Key: "ecdsa-p256", Statement: stmt}, &ar); apiErr != nil {
				t.Fatalf("%s attest: %d %+v", c.platform, code, apiErr)
			}
		}
	})
	t.Run("malformed statement", func(t *testing.T) {
		tok := mint(t, fx.gh, nil)
		code, apiErr := ts.call(t, "/v1/attest", tok, core.AttestRequest{Key: "ecdsa-p256", Statement: []byte(`{"_type":"nope"}`)}, nil)
		if code != http.StatusBadRequest || apiErr.Code != core.ErrCodeBadRequest {
			t.Fatalf("got %d %+v", code, apiErr)
		}
	})
}
