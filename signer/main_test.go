package signer_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer"
	"github.com/signet-ci/signet/signer/hsm"
	"github.com/signet-ci/signet/signer/internal/testhsm"
	"github.com/signet-ci/signet/testbench"
)

// fixture is shared by all tests: one SoftHSM2 token with one key per
// algorithm, a test CA and three real TLS OIDC issuers.
type fixture struct {
	dir     string
	hsm     *testhsm.HSM
	ca      *testbench.CA
	gh      *testbench.GitHubIssuer
	gl      *testbench.GitLabIssuer
	jk      *testbench.JenkinsIssuer
	rogue   *testbench.GitHubIssuer // a real issuer the signer does not trust
	pubs    map[string]string       // key name -> public key PEM path
	certDir string
	signetd string // built binary
}

var fx *fixture

// keyAlgs: key name -> algorithm (the HSM label equals the name).
var keyAlgs = map[string]string{
	"ecdsa-p256":   "ecdsa-p256",
	"ecdsa-p384":   "ecdsa-p384",
	"rsa-3072":     "rsa-3072",
	"rsa-3072-pss": "rsa-3072-pss",
	"ed25519":      "ed25519",
}

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "signer test setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "signer-test")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	f := &fixture{dir: dir, pubs: map[string]string{}}
	f.hsm, err = testhsm.Setup(filepath.Join(dir, "hsm"))
	if err != nil {
		return 1, err
	}
	for name, alg := range keyAlgs {
		pub, err := hsm.GenerateKey(f.hsm.URI(name), alg)
		if err != nil {
			return 1, fmt.Errorf("generate %s: %w", name, err)
		}
		p, _ := core.PublicKeyPEM(pub)
		f.pubs[name] = filepath.Join(dir, name+".pub")
		if err := os.WriteFile(f.pubs[name], p, 0o644); err != nil {
			return 1, err
		}
	}
	f.ca, err = testbench.NewCA(filepath.Join(dir, "ca"))
	if err != nil {
		return 1, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if f.gh, err = testbench.StartGitHubIssuer(ctx, f.ca, testbench.IssuerOptions{}); err != nil {
		return 1, err
	}
	if f.gl, err = testbench.StartGitLabIssuer(ctx, f.ca, testbench.IssuerOptions{}); err != nil {
		return 1, err
	}
	if f.jk, err = testbench.StartJenkinsIssuer(ctx, f.ca, testbench.IssuerOptions{JenkinsClaimTemplates: true}); err != nil {
		return 1, err
	}
	if f.rogue, err = testbench.StartGitHubIssuer(ctx, f.ca, testbench.IssuerOptions{}); err != nil {
		return 1, err
	}
	f.signetd = filepath.Join(dir, "signetd")
	build := exec.Command("go", "build", "-o", f.signetd, "github.com/signet-ci/signet/cmd/signetd")
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("go build signetd: %w: %s", err, out)
	}
	fx = f
	return m.Run(), nil
}

// baseConfig is a config with every key allowed for the default GitHub job
// (repository_id), GitLab project and Jenkins job.
func (f *fixture) baseConfig(t testing.TB) *signer.Config {
	t.Helper()
	dir := t.TempDir()
	var keys strings.Builder
	for _, name := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-3072-pss", "ed25519"} {
		purpose := "code"
		if name == "ed25519" {
			purpose = "firmware"
		}
		fmt.Fprintf(&keys, `
  - name: %s
    purpose: %s
    algorithm: %s
    uri: %q
    allow:
      - issuer: github
        claims: {repository_id: %q}
      - issuer: gitlab
        claims: {project_id: %q}
      - issuer: jenkins
        claims: {sub: %q}
`, name, purpose, keyAlgs[name], f.hsm.URI(name), testbench.GitHubRepositoryID, testbench.GitLabProjectID, f.jk.JobURL)
	}
	y := fmt.Sprintf(`
listen: 127.0.0.1:0
audience: %s
issuers:
  - name: github
    url: %s
    ca: %s
  - name: gitlab
    url: %s
    ca: %s
  - name: jenkins
    url: %s
    ca: %s
keys:%s
audit:
  path: %s
limits:
  rate_per_second: 100000
  rate_burst: 100000
`, testbench.DefaultAudience, f.gh.URL, f.ca.CAPath, f.gl.URL, f.ca.CAPath, f.jk.URL, f.ca.CAPath, keys.String(), filepath.Join(dir, "audit.jsonl"))
	cfg, err := signer.ParseConfig([]byte(y), dir)
	if err != nil {
		t.Fatalf("base config: %v\n%s", err, y)
	}
	return cfg
}

// testServer runs a Server in-process behind httptest.
type testServer struct {
	*httptest.Server
	srv *signer.Server
	cfg *signer.Config
}

func (f *fixture) start(t testing.TB, cfg *signer.Config) *testServer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := signer.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	ts := &testServer{Server: hs, srv: s, cfg: cfg}
	t.Cleanup(func() {
		hs.Close()
		if err := s.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return ts
}

// call POSTs v to path with token and decodes the answer into out (2xx) or
// returns the API error.
func (ts *testServer) call(t testing.TB, path, token string, v any, out any) (int, *core.APIError) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return ts.callRaw(t, path, token, b, out)
}

func (ts *testServer) callRaw(t testing.TB, path, token string, body []byte, out any) (int, *core.APIError) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 {
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				t.Fatalf("decode %s: %v: %s", path, err, data)
			}
		}
		return resp.StatusCode, nil
	}
	var eb core.ErrorBody
	if err := json.Unmarshal(data, &eb); err != nil {
		t.Fatalf("error body of %s is not JSON: %s", path, data)
	}
	return resp.StatusCode, &eb.Error
}

func mint(t testing.TB, is interface {
	Mint(map[string]any) (string, error)
}, claims map[string]any) string {
	t.Helper()
	tok, err := is.Mint(claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func signReq(key string, names ...string) core.SignRequest {
	r := core.SignRequest{Key: key}
	for _, n := range names {
		r.Digests = append(r.Digests, core.DigestRequest{Name: n, SHA256: digestOf([]byte(n))})
	}
	return r
}

// cosignPath finds cosign (testbench.FindTool: PATH or $(go env GOPATH)/bin);
// tests fail (never skip) without it.
func cosignPath(t testing.TB) string {
	t.Helper()
	p, err := testbench.FindTool("cosign")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// issueCert certifies pub with a throw-away CA; EKU codeSigning.
func issueCert(t testing.TB, pub any, notBefore, notAfter time.Time, dir string) string {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test code CA"},
		NotBefore: notBefore.Add(-time.Hour), NotAfter: notAfter.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "release signing"},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	p := filepath.Join(dir, fmt.Sprintf("chain-%d.pem", time.Now().UnixNano()))
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readPub(t testing.TB, name string) any {
	t.Helper()
	b, err := os.ReadFile(fx.pubs[name])
	if err != nil {
		t.Fatal(err)
	}
	vk, err := core.ParseVerificationKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return vk.Public
}

func signerVerify(ts *testServer) (uint64, error) {
	return signer.VerifyAuditLog(ts.cfg.Audit.Path)
}

func newServerErr(cfg *signer.Config) (*signer.Server, error) {
	s, err := signer.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		s.Close()
	}
	return s, err
}
