package core

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cosignPath finds cosign on PATH, then in $(go env GOPATH)/bin. The interop
// tests fail (never skip) when it is missing: run scripts/setup.sh.
func cosignPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("cosign"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopath = strings.TrimSpace(string(out))
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "cosign")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("cosign not found on PATH or in $(go env GOPATH)/bin: run scripts/setup.sh (go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5)")
	return ""
}

func runCosign(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cosignPath(t), args...)
	cmd.Dir = dir
	// No network here: keep cosign away from TUF/Rekor and password prompts.
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=", "COSIGN_YES=true", "TUF_ROOT="+filepath.Join(dir, ".sigstore"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// signArtifactLocally makes ARTIFACT.sig and a one-line provenance with a
// local key, exactly as `signet sign` writes them.
func signArtifactLocally(t *testing.T, s *LocalSigner, dir, name string, content []byte) (artifact string) {
	t.Helper()
	ctx := context.Background()
	artifact = filepath.Join(dir, name)
	writeFile(t, artifact, content)
	d := sha256.Sum256(content)
	sig, err := s.SignDigest(ctx, d[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(artifact+".sig", SigFileContent(sig), 0o644); err != nil {
		t.Fatal(err)
	}
	writeProvenance(t, s, dir, Subject{Name: name, Digest: map[string]string{"sha256": hex.EncodeToString(d[:])}})
	pub, err := PublicKeyPEM(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, PublicKeyFileName), pub)
	return artifact
}

// writeProvenance writes DIR/provenance.intoto.jsonl: one statement for
// subject with the GitHub test identity, signed by s.
func writeProvenance(t *testing.T, s *LocalSigner, dir string, subject Subject) {
	t.Helper()
	id, err := IdentityFromClaims("github", "", githubClaims())
	if err != nil {
		t.Fatal(err)
	}
	st, err := BuildStatement([]Subject{subject}, id, testBuildContext())
	if err != nil {
		t.Fatal(err)
	}
	env, err := SignEnvelope(context.Background(), s, PayloadTypeInToto, st)
	if err != nil {
		t.Fatal(err)
	}
	line, err := EnvelopesJSONL([]Envelope{*env})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, DefaultProvenanceName), line, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Our outputs pass cosign's verifiers.
func TestCosignVerifiesSignetOutputs(t *testing.T) {
	keys := testKeys(t)
	for _, name := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-pkcs1v15", "rsa-pss", "ed25519"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			artifact := signArtifactLocally(t, keys[name], dir, "app.tar.gz", []byte("release bits of "+name))

			// Signet verifies its own outputs first.
			keyPEM, _ := os.ReadFile(filepath.Join(dir, PublicKeyFileName))
			res, err := Verify(context.Background(), VerifyOptions{KeyPEM: keyPEM, Artifacts: []string{artifact}, ProvenancePath: filepath.Join(dir, DefaultProvenanceName),
				SourceRepo: "https://github.com/octo-org/octo-repo", RefGlob: "refs/heads/*", RunnerEnvironment: "github-hosted",
				BuilderID: "https://github.com/octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main"})
			if err != nil {
				t.Fatalf("signet verify: %v", err)
			}
			if got := strings.Join(res[0].Checks, ","); got != "signature,provenance-signature,subject-digest,source-repo,ref,builder-id,runner-environment" {
				t.Fatalf("checks = %s", got)
			}

			// DSSE envelopes are checked by cosign for every algorithm but
			// RSA-PSS: cosign loads a bare RSA public key as a PKCS#1 v1.5
			// verifier, so PSS keys are for `signet verify` only.
			out, err := runCosign(t, dir, "verify-blob-attestation", "--key", PublicKeyFileName, "--signature", DefaultProvenanceName,
				"--type", "slsaprovenance1", "--insecure-ignore-tlog=true", "app.tar.gz")
			if name == "rsa-pss" {
				if err == nil {
					t.Fatalf("cosign accepted a PSS envelope with a PKCS#1 v1.5 verifier?\n%s", out)
				}
			} else if err != nil || !strings.Contains(out, "Verified OK") {
				t.Fatalf("cosign verify-blob-attestation refused our envelope: %v\n%s", err, out)
			}

			// .sig: cosign checks ECDSA and RSA; Ed25519 .sig files are over
			// the digest (firmware convention) and cosign must refuse them.
			out, err = runCosign(t, dir, "verify-blob", "--key", PublicKeyFileName, "--signature", "app.tar.gz.sig", "--insecure-ignore-tlog=true", "app.tar.gz")
			if name == "ed25519" {
				if err == nil {
					t.Fatalf("cosign accepted an Ed25519 digest signature as a blob signature:\n%s", out)
				}
				return
			}
			if name == "rsa-pss" {
				// cosign loads RSA public keys as PKCS#1 v1.5 verifiers.
				if err == nil {
					t.Fatalf("cosign accepted a PSS signature with a PKCS#1 v1.5 verifier?\n%s", out)
				}
				return
			}
			if err != nil || !strings.Contains(out, "Verified OK") {
				t.Fatalf("cosign verify-blob refused our .sig: %v\n%s", err, out)
			}
		})
	}
}

// cosign's outputs pass `signet verify`.
func TestSignetVerifiesCosignOutputs(t *testing.T) {
	dir := t.TempDir()
	if out, err := runCosign(t, dir, "generate-key-pair"); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(dir, "app.bin"), []byte("cosign-signed content\n"))
	if out, err := runCosign(t, dir, "sign-blob", "--key", "cosign.key", "--tlog-upload=false", "--yes",
		"--new-bundle-format=false", "--use-signing-config=false", "--output-signature", "app.bin.sig", "app.bin"); err != nil {
		t.Fatalf("cosign sign-blob: %v\n%s", err, out)
	}
	pred := `{"buildDefinition":{"buildType":"https://actions.github.io/buildtypes/workflow/v1","externalParameters":{"workflow":{"path":"x"}}},"runDetails":{"builder":{"id":"https://example.com/builder"}}}`
	writeFile(t, filepath.Join(dir, "pred.json"), []byte(pred))
	if out, err := runCosign(t, dir, "attest-blob", "--key", "cosign.key", "--tlog-upload=false", "--yes",
		"--new-bundle-format=false", "--use-signing-config=false", "--predicate", "pred.json", "--type", "slsaprovenance1",
		"--output-signature", "app.intoto.json", "app.bin"); err != nil {
		t.Fatalf("cosign attest-blob: %v\n%s", err, out)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Verify(context.Background(), VerifyOptions{KeyPEM: keyPEM, Artifacts: []string{filepath.Join(dir, "app.bin")},
		ProvenancePath: filepath.Join(dir, "app.intoto.json")})
	if err != nil {
		t.Fatalf("signet verify refused cosign's outputs: %v", err)
	}
	if got := strings.Join(res[0].Checks, ","); got != "signature,provenance-signature,subject-digest" {
		t.Fatalf("checks = %s", got)
	}
	// Another key is refused.
	other := testKeys(t)["ecdsa-p256"]
	otherPEM, _ := PublicKeyPEM(other.Public())
	_, err = Verify(context.Background(), VerifyOptions{KeyPEM: otherPEM, Artifacts: []string{filepath.Join(dir, "app.bin")}})
	assertCheck(t, err, CheckSignature, "does not verify")
}

func assertCheck(t *testing.T, err error, check, msg string) {
	t.Helper()
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a VerifyError for check %s", err, check)
	}
	if ve.Check != check || !strings.Contains(err.Error(), msg) {
		t.Fatalf("err = %v (check %s), want check %s with %q", err, ve.Check, check, msg)
	}
}

// Each tampering is refused with its own message.
func TestVerifyTampering(t *testing.T) {
	ctx := context.Background()
	s := testKeys(t)["ecdsa-p256"]
	content := []byte("the real release")
	fresh := func(t *testing.T) (dir, artifact string, keyPEM []byte) {
		dir = t.TempDir()
		artifact = signArtifactLocally(t, s, dir, "app.tar.gz", content)
		keyPEM, _ = os.ReadFile(filepath.Join(dir, PublicKeyFileName))
		return
	}
	opts := func(dir, artifact string, keyPEM []byte) VerifyOptions {
		return VerifyOptions{KeyPEM: keyPEM, Artifacts: []string{artifact}, ProvenancePath: filepath.Join(dir, DefaultProvenanceName)}
	}
	flip := func(t *testing.T, path string, at int) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if at < 0 {
			at = len(b) + at
		}
		b[at] ^= 0x01
		writeFile(t, path, b)
	}

	t.Run("artifact byte", func(t *testing.T) {
		dir, artifact, keyPEM := fresh(t)
		flip(t, artifact, 3)
		_, err := Verify(ctx, opts(dir, artifact, keyPEM))
		assertCheck(t, err, CheckArtifact, "the artifact changed after signing")
		o := opts(dir, artifact, keyPEM)
		o.ProvenancePath = ""
		_, err = Verify(ctx, o)
		assertCheck(t, err, CheckSignature, "artifact or signature changed")
	})
	t.Run("signature byte", func(t *testing.T) {
		dir, artifact, keyPEM := fresh(t)
		sigPath := artifact + ".sig"
		raw, _ := ReadSigFile(sigPath)
		raw[len(raw)-2] ^= 0x01 // inside s of the DER signature
		writeFile(t, sigPath, SigFileContent(raw))
		_, err := Verify(ctx, opts(dir, artifact, keyPEM))
		assertCheck(t, err, CheckSignature, "although the provenance vouches for the artifact")
		writeFile(t, sigPath, []byte("not base64!\n"))
		_, err = Verify(ctx, opts(dir, artifact, keyPEM))
		assertCheck(t, err, CheckSignature, "is not base64")
	})
	t.Run("envelope payload", func(t *testing.T) {
		dir, artifact, keyPEM := fresh(t)
		envs, err := ReadEnvelopes(filepath.Join(dir, DefaultProvenanceName))
		if err != nil {
			t.Fatal(err)
		}
		e := *envs[0].Envelope
		forged := strings.Replace(string(envs[0].Payload), "octo-org/octo-repo", "evil-org/octo-repo", 1)
		e.Payload = b64(forged)
		line, _ := EnvelopesJSONL([]Envelope{e})
		writeFile(t, filepath.Join(dir, DefaultProvenanceName), line)
		_, err = Verify(ctx, opts(dir, artifact, keyPEM))
		assertCheck(t, err, CheckProvenanceSig, "DSSE signature does not verify")
	})
	t.Run("subject digest", func(t *testing.T) {
		// A validly signed statement whose subject digest is another one.
		dir, artifact, keyPEM := fresh(t)
		writeProvenance(t, s, dir, Subject{Name: "app.tar.gz", Digest: map[string]string{"sha256": strings.Repeat("ab", 32)}})
		_, err := Verify(ctx, opts(dir, artifact, keyPEM))
		assertCheck(t, err, CheckSubjectDigest, "provenance was made for different content")
	})
	t.Run("expectations", func(t *testing.T) {
		dir, artifact, keyPEM := fresh(t)
		for _, tc := range []struct {
			mut   func(*VerifyOptions)
			check string
		}{
			{func(o *VerifyOptions) { o.SourceRepo = "https://github.com/evil/repo" }, CheckSourceRepo},
			{func(o *VerifyOptions) { o.RefGlob = "refs/tags/v*" }, CheckRef},
			{func(o *VerifyOptions) { o.BuilderID = "https://github.com/evil/wf" }, CheckBuilderID},
			{func(o *VerifyOptions) { o.RunnerEnvironment = "self-hosted" }, CheckRunnerEnvironment},
		} {
			o := opts(dir, artifact, keyPEM)
			tc.mut(&o)
			_, err := Verify(ctx, o)
			assertCheck(t, err, tc.check, "")
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		dir, artifact, _ := fresh(t)
		otherPEM, _ := PublicKeyPEM(testKeys(t)["ecdsa-p384"].Public())
		_, err := Verify(ctx, opts(dir, artifact, otherPEM))
		assertCheck(t, err, CheckProvenanceSig, "DSSE signature does not verify")
	})
}

func b64(s string) string {
	return base64.StdEncoding.EncodeToString([]byte(s))
}
