package testbench

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/signet-ci/signet/signer"
)

// WriteConfig's YAML is what signetd loads: the written file parses with
// the signer's own (strict) loader back to the same settings.
func TestWriteConfigLoadsInSigner(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := ca.WriteServerCert(dir, "signer")
	if err != nil {
		t.Fatal(err)
	}
	cfg := SignerConfig{
		Listen:   "127.0.0.1:8443",
		TLS:      &SignerTLS{Cert: certPath, Key: keyPath},
		Audience: DefaultAudience,
		Issuers:  []SignerIssuer{{Name: "github", URL: "https://127.0.0.1:1", Platform: "github", Algorithms: []string{"RS256"}, CA: ca.CAPath}},
		Keys: []SignerKey{{Name: "p256", Purpose: "firmware", URI: "pkcs11:token=bench;object=p256", Allow: []AllowRule{
			{Issuer: "github", Purpose: "firmware", Claims: map[string]string{"repository_id": GitHubRepositoryID}},
		}}},
		Audit:  SignerAudit{Path: filepath.Join(dir, "audit.jsonl")},
		Limits: SignerLimits{JTIUses: JTIBudget, MaxDigests: 1000, MaxTokenAge: time.Hour},
	}
	path := filepath.Join(dir, "signer.yaml")
	if err := WriteConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	got, err := signer.LoadConfig(path)
	if err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("signetd would refuse the bench's signer.yaml: %v\n%s", err, b)
	}
	if got.Audience != cfg.Audience || got.Audit != cfg.Audit || *got.TLS != *cfg.TLS {
		t.Errorf("loaded audience/audit/tls %q %+v %+v, want %q %+v %+v", got.Audience, got.Audit, *got.TLS, cfg.Audience, cfg.Audit, *cfg.TLS)
	}
	if !reflect.DeepEqual(got.Issuers, cfg.Issuers) || !reflect.DeepEqual(got.Keys[0].Allow, cfg.Keys[0].Allow) {
		t.Errorf("loaded issuers %+v keys %+v, want %+v %+v", got.Issuers, got.Keys, cfg.Issuers, cfg.Keys)
	}
	if l := got.Limits; l.JTIUses != JTIBudget || l.MaxDigests != 1000 || l.MaxTokenAge != time.Hour {
		t.Errorf("loaded limits %+v, want jti_uses %d, max_digests 1000, max_token_age 1h", l, JTIBudget)
	}
}

// FindTool falls back to $GOPATH/bin, and its error names the tool and how
// to install it.
func TestFindTool(t *testing.T) {
	gopath := t.TempDir()
	bin := filepath.Join(gopath, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	tool := filepath.Join(bin, "cosign")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	t.Setenv("GOPATH", gopath)
	if p, err := FindTool("cosign"); err != nil || p != tool {
		t.Errorf("FindTool(cosign) = %q, %v; want %s", p, err, tool)
	}
	_, err := FindTool("strace")
	if err == nil || !strings.Contains(err.Error(), "strace not found") || !strings.Contains(err.Error(), "apt-get install strace") {
		t.Errorf("FindTool(strace) error = %v; want it to name strace and how to install it", err)
	}
}
