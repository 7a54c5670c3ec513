package testbench

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/signet-ci/signet/core"
)

// Code-signing keys of the bench (DESIGN.md "Firmware and code signing"):
// purpose code, ECDSA P-256 in SoftHSM2, each with an X.509 chain (leaf
// first, then the CA) issued by the bench's code-signing CA. Only GitHub tag
// builds of the demo repository may use them.
const (
	// CodeKey's leaf is valid now.
	CodeKey = "code"
	// CodeExpiredKey's leaf expired yesterday: signing must be refused.
	CodeExpiredKey = "code-expired"
	// CodeNotYetValidKey's leaf becomes valid tomorrow: signing must be refused.
	CodeNotYetValidKey = "code-not-yet-valid"
)

// ReleaseTag is the tag of the bench's GitHub release build (the ref the
// code keys allow: refs/tags/v*).
const ReleaseTag = "v1.4.0"

// CodeKeySpec is a code-signing key NewBench creates, with the validity of
// its leaf certificate relative to the bench's start.
type CodeKeySpec struct {
	Name                string
	NotBefore, NotAfter time.Duration
}

// CodeKeys are the bench's code-signing keys.
var CodeKeys = []CodeKeySpec{
	{CodeKey, -time.Hour, 90 * 24 * time.Hour},
	{CodeExpiredKey, -30 * 24 * time.Hour, -24 * time.Hour},
	{CodeNotYetValidKey, 24 * time.Hour, 30 * 24 * time.Hour},
}

// CodeSigningCA is a throw-away certification authority for code-signing
// certificates (ECDSA P-256, EKU codeSigning), separate from the TLS CA.
type CodeSigningCA struct {
	// Dir is where the CA writes its files.
	Dir string
	// CertPath is the PEM file of the CA certificate.
	CertPath string
	// Cert is the CA certificate.
	Cert *x509.Certificate

	key crypto.Signer
	serials
}

// NewCodeSigningCA creates a code-signing CA valid from 60 days ago to 120
// days from now (so it covers already-expired and not-yet-valid leaves: the
// leaf alone is what a validity row exercises) and writes dir/code-ca.pem.
func NewCodeSigningCA(dir string) (*CodeSigningCA, error) {
	now := time.Now()
	cert, key, path, err := newRootCA(dir, "code-ca.pem", "code-signing CA", "Signet testbench code-signing CA",
		now.Add(-60*24*time.Hour), now.Add(120*24*time.Hour), []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning})
	if err != nil {
		return nil, err
	}
	return &CodeSigningCA{Dir: dir, CertPath: path, Cert: cert, key: key}, nil
}

// IssueChain certifies pub for code signing (KeyUsage digitalSignature,
// ExtKeyUsage codeSigning, valid from notBefore to notAfter) and writes the
// chain PEM, leaf first then the CA, to path (signer.yaml keys[].certificate).
func (ca *CodeSigningCA) IssueChain(path, commonName string, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: ca.next(),
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"Signet testbench"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("code-signing CA: issue %q: %w", commonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("code-signing CA: parse %q: %w", commonName, err)
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})...)
	if err := writeFileAtomic(path, chain, 0o644); err != nil {
		return nil, fmt.Errorf("code-signing CA: %w", err)
	}
	return leaf, nil
}

// ReadPublicKey reads a PEM "PUBLIC KEY" file (e.g. SoftHSM.PublicKeyPath).
func ReadPublicKey(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("read public key %s: no PUBLIC KEY PEM block", path)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read public key %s: %w", path, err)
	}
	return pub, nil
}

// GitHubTagClaims are the claim overrides of a GitHub Actions run for a
// push of tag (refs/tags/TAG) running .github/workflows/release.yml.
func GitHubTagClaims(tag string) map[string]any {
	ref := "refs/tags/" + tag
	wf := GitHubRepository + "/.github/workflows/release.yml@" + ref
	return map[string]any{
		"sub":              "repo:" + GitHubRepository + ":ref:" + ref,
		"ref":              ref,
		"ref_type":         "tag",
		"ref_protected":    "false",
		"workflow_ref":     wf,
		"job_workflow_ref": wf,
	}
}

// GitHubTagEnv is the GITHUB_* environment matching GitHubTagClaims (to
// merge over GitHubIssuer.Env).
func GitHubTagEnv(tag string) map[string]string {
	ref := "refs/tags/" + tag
	return map[string]string{
		"GITHUB_REF":           ref,
		"GITHUB_REF_NAME":      tag,
		"GITHUB_REF_TYPE":      "tag",
		"GITHUB_REF_PROTECTED": "false",
		"GITHUB_WORKFLOW_REF":  GitHubRepository + "/.github/workflows/release.yml@" + ref,
	}
}

// createCodeKeys makes the code-signing CA and, per CodeKeys entry, an
// ECDSA P-256 key in the HSM with its chain.
func (b *Bench) createCodeKeys() error {
	ca, err := NewCodeSigningCA(filepath.Join(b.Dir, "codesign"))
	if err != nil {
		return err
	}
	b.CodeCA = ca
	now := time.Now()
	for _, ck := range CodeKeys {
		start := time.Now()
		k := KeySpec{Name: ck.Name, Algorithm: "ecdsa-p256", Purpose: "code"}
		if k.URI, err = b.HSM.CreateKey(k.Name, k.Algorithm); err != nil {
			return err
		}
		k.PubPath = b.HSM.PublicKeyPath(k.Name)
		pub, err := ReadPublicKey(k.PubPath)
		if err != nil {
			return err
		}
		k.Chain = filepath.Join(ca.Dir, k.Name+"-chain.pem")
		leaf, err := ca.IssueChain(k.Chain, "Signet testbench release signing ("+k.Name+")", pub,
			now.Add(ck.NotBefore).Truncate(time.Second), now.Add(ck.NotAfter).Truncate(time.Second))
		if err != nil {
			return err
		}
		b.Keys[k.Name] = k
		b.Log.Info("HSM code-signing key created", "key", k.Name, "not_before", leaf.NotBefore.UTC().Format(time.RFC3339),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// codeKeyRules are the allow rules of the code keys: a rule set shared by
// the bench's release keys, each rule restricted to a purpose. Firmware
// keys may be used by any build of the demo repository; code keys only by
// its tag builds. The firmware rule comes first so that a branch build
// asking for a code key is answered with the purpose refusal.
func codeKeyRules() []AllowRule {
	return []AllowRule{
		{Issuer: "github", Purpose: "firmware", Claims: map[string]string{"repository_id": GitHubRepositoryID, "repository_owner_id": GitHubOwnerID}},
		{Issuer: "github", Purpose: "code", Claims: map[string]string{"repository_id": GitHubRepositoryID, "ref": "refs/tags/v*"}},
	}
}

// withTagBuild makes the GitHub Actions runtime hand out tokens of a tag
// build of ReleaseTag while f runs.
func (b *Bench) withTagBuild(f func()) {
	b.GitHub.SetRequestClaims(GitHubTagClaims(ReleaseTag))
	defer b.GitHub.SetRequestClaims(nil)
	f()
}

// OutcomeCodeVerified is the outcome of a good code-signing run.
const OutcomeCodeVerified = "signed, verified (signet chain+cosign), chain in signer.pub"

// goodCodeRun: a GitHub tag build signs and attests with the code key;
// signer.pub must carry the public key and the chain (leaf first), and
// signet verify (pinned to the chain file and to signer.pub) and cosign
// (pinned to the HSM public key and to signer.pub) must accept every output.
func (b *Bench) goodCodeRun(ctx context.Context) (string, string) {
	var (
		ws, out string
		names   []string
		res     commandResult
		err     error
	)
	reqBefore := b.GitHub.TokenRequests()
	b.withTagBuild(func() {
		ws, out, names, res, err = b.signJob(ctx, "good-code-signing", job{platform: "github", key: CodeKey, extraEnv: GitHubTagEnv(ReleaseTag)})
	})
	if err != nil {
		return "setup error", err.Error()
	}
	if res.Exit != 0 {
		return fmt.Sprintf("sign exit %d", res.Exit), res.tail()
	}
	if b.GitHub.TokenRequests() == reqBefore {
		return "token not from ACTIONS_ID_TOKEN_REQUEST_URL", "the GitHub adapter never called the runtime's ID-token endpoint"
	}
	k := b.Keys[CodeKey]
	signerPub := filepath.Join(out, core.PublicKeyFileName)
	if msg := checkSignerPub(signerPub, k); msg != "" {
		return "signer.pub lacks the chain", msg
	}
	prov := filepath.Join(out, "provenance.intoto.jsonl")
	ref := "refs/tags/" + ReleaseTag
	builder := GitHubServerURL + "/" + GitHubRepository + "/.github/workflows/release.yml@" + ref
	for _, n := range names {
		art := filepath.Join(ws, n)
		sig := filepath.Join(out, n+".sig")
		for _, pin := range []string{k.Chain, signerPub} {
			r := run(ctx, ws, nil, b.Bins.Signet, "verify", "--public-key", pin, "--signature", sig, "--provenance", prov,
				"--source-repo", b.expectedRepo("github"), "--builder-id", builder, "--ref", ref, art)
			if r.Exit != 0 {
				return "signet verify failed", fmt.Sprintf("%s (--public-key %s): %s", n, filepath.Base(pin), r.tail())
			}
		}
		// cosign pins a public key: the HSM's, and signer.pub (whose first
		// block is the public key, the chain following it).
		for _, pin := range []string{k.PubPath, signerPub} {
			if r := run(ctx, ws, nil, b.Cosign, "verify-blob", "--key", pin, "--signature", sig, "--insecure-ignore-tlog=true", art); r.Exit != 0 {
				return "cosign verify-blob failed", fmt.Sprintf("%s (--key %s): %s", n, filepath.Base(pin), r.tail())
			}
			if r := run(ctx, ws, nil, b.Cosign, "verify-blob-attestation", "--key", pin, "--signature", prov,
				"--type", "slsaprovenance1", "--insecure-ignore-tlog=true", art); r.Exit != 0 {
				return "cosign verify-blob-attestation failed", fmt.Sprintf("%s (--key %s): %s", n, filepath.Base(pin), r.tail())
			}
		}
	}
	return OutcomeCodeVerified, "tag build " + ref + "; signet verify pinned to " + filepath.Base(k.Chain) + " and signer.pub, cosign to the HSM public key and signer.pub"
}

// checkSignerPub returns "" when path holds k's public key and exactly the
// certificates of k's chain file, in order (leaf first).
func checkSignerPub(path string, k KeySpec) string {
	got, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	want, err := os.ReadFile(k.Chain)
	if err != nil {
		return err.Error()
	}
	pubPEM, err := os.ReadFile(k.PubPath)
	if err != nil {
		return err.Error()
	}
	blocks := func(data []byte, typ string) [][]byte {
		var out [][]byte
		for rest := data; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				return out
			}
			if blk.Type == typ {
				out = append(out, blk.Bytes)
			}
		}
	}
	pubs := blocks(got, "PUBLIC KEY")
	wantPub := blocks(pubPEM, "PUBLIC KEY")
	if len(pubs) != 1 || len(wantPub) != 1 || !bytes.Equal(pubs[0], wantPub[0]) {
		return fmt.Sprintf("%s: %d PUBLIC KEY blocks, want the HSM key's", filepath.Base(path), len(pubs))
	}
	certs, wantCerts := blocks(got, "CERTIFICATE"), blocks(want, "CERTIFICATE")
	if len(certs) != len(wantCerts) {
		return fmt.Sprintf("%s: %d certificates, the chain has %d", filepath.Base(path), len(certs), len(wantCerts))
	}
	for i := range certs {
		if !bytes.Equal(certs[i], wantCerts[i]) {
			return fmt.Sprintf("%s: certificate %d differs from the chain's", filepath.Base(path), i)
		}
	}
	return ""
}

// codeCertRefused: a GitHub tag build (allowed by the key's policy) asks for
// a code key whose certificate is not valid now. The signer must refuse
// (403 certificate_invalid) and `signet sign` must write nothing.
func (b *Bench) codeCertRefused(ctx context.Context, key string) (string, string) {
	tok, err := b.GitHub.Mint(GitHubTagClaims(ReleaseTag))
	if err != nil {
		return "mint error", err.Error()
	}
	got, detail := b.directSign(ctx, tok, key)
	if got != "refused 403 "+core.ErrCodeCertInvalid {
		return got, detail
	}
	var cli, cliDetail string
	b.withTagBuild(func() {
		cli, cliDetail = b.failingRun(ctx, "cli-"+key, job{platform: "github", key: key, extraEnv: GitHubTagEnv(ReleaseTag)})
	})
	return got + ", " + cli, strings.TrimSpace(firstLine(detail) + " / " + cliDetail)
}

// purposeMismatch: a branch build of the demo repository, which the shared
// rule set allows only for firmware keys, asks for the code key.
func (b *Bench) purposeMismatch(ctx context.Context) (string, string) {
	tok, err := b.GitHub.Mint(nil)
	if err != nil {
		return "mint error", err.Error()
	}
	return b.directSign(ctx, tok, CodeKey)
}
