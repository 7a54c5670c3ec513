package testbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// KeySpec is one signer key of the bench.
type KeySpec struct {
	Name      string // key name in signer.yaml and the SoftHSM label
	Algorithm string // ecdsa-p256 | ecdsa-p384 | rsa-3072 | ed25519
	URI       string
	PubPath   string // PEM public key, from the HSM (what a verifier pins)
	Purpose   string // firmware (default) | code
	Chain     string // code keys: PEM certificate chain, leaf first then the CA
}

// MatrixKeys are the key algorithms of the matrix.
var MatrixKeys = []KeySpec{
	{Name: "p256", Algorithm: "ecdsa-p256"},
	{Name: "p384", Algorithm: "ecdsa-p384"},
	{Name: "rsa3072", Algorithm: "rsa-3072"},
	{Name: "ed25519", Algorithm: "ed25519"},
}

// Platforms of the matrix.
var Platforms = []string{"github", "gitlab", "jenkins"}

// JTIBudget is the bench signer's per-jti use budget (limits.jti_uses).
const JTIBudget = 20

// TagsOnlyKey only allows GitHub tokens for tags v*: a branch build is refused by policy.
const TagsOnlyKey = "tags-only"

// BenchOptions configure NewBench.
type BenchOptions struct {
	// Dir is the working directory (created).
	Dir string
	// Logger receives progress (default: discard).
	Logger *slog.Logger
	// Binaries are prebuilt signet/signetd; empty: built into Dir/bin.
	Binaries Binaries
	// Cosign is the cosign binary; empty: PATH, then $(go env GOPATH)/bin.
	Cosign string
}

// Bench is the whole environment of the matrix: CA, issuers (plus one rogue
// issuer the signer does not trust), SoftHSM2 with a key of every
// algorithm, the real signetd behind a fault-injecting proxy, and the binaries.
type Bench struct {
	Dir     string
	CA      *CA
	GitHub  *GitHubIssuer
	GitLab  *GitLabIssuer
	Jenkins *JenkinsIssuer
	// JenkinsFolder is a folder-scoped Jenkins issuer signing ES256.
	JenkinsFolder *JenkinsIssuer
	// Rogue is a GitHub-like issuer that is not in the signer's allowlist.
	Rogue  *GitHubIssuer
	HSM    *SoftHSM
	Bins   Binaries
	Cosign string
	Signer *Signer
	Proxy  *Proxy
	Keys   map[string]KeySpec
	// CodeCA issued the certificates of the code-signing keys (CodeKeys).
	CodeCA *CodeSigningCA
	Log    *slog.Logger
	// LastLoad is the report of the last load row (nil before).
	LastLoad *LoadReport

	cancel context.CancelFunc
}

// toolInstall says how to install the tools the bench and the end-to-end
// tests run (scripts/setup.sh installs all of them).
var toolInstall = map[string]string{
	"cosign": "go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5",
	"act":    "go install github.com/nektos/act@v0.2.89",
	"strace": "apt-get install strace",
}

// FindTool looks for the program name on PATH, then in $(go env GOPATH)/bin
// (where `go install` puts it). The error says how to install it.
func FindTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	how := "run scripts/setup.sh"
	if cmd, ok := toolInstall[name]; ok {
		how += " (" + cmd + ")"
	}
	return "", fmt.Errorf("%s not found on PATH or in $(go env GOPATH)/bin: install it: %s", name, how)
}

// FindCosign is FindTool("cosign") (ctx is unused; kept for callers).
func FindCosign(ctx context.Context) (string, error) { return FindTool("cosign") }

// NewBench sets everything up. Close it when done.
func NewBench(ctx context.Context, opts BenchOptions) (*Bench, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench dir: %w", err)
	}
	bctx, cancel := context.WithCancel(context.Background())
	b := &Bench{Dir: opts.Dir, Log: log, Keys: map[string]KeySpec{}, cancel: cancel, Bins: opts.Binaries, Cosign: opts.Cosign}
	ok := false
	defer func() {
		if !ok {
			b.Close()
		}
	}()
	var err error
	if b.Cosign == "" {
		if b.Cosign, err = FindTool("cosign"); err != nil {
			return nil, err
		}
	}
	// Build the binaries while the HSM keys are generated.
	type buildRes struct {
		bins Binaries
		err  error
	}
	buildc := make(chan buildRes, 1)
	if b.Bins.Signet == "" || b.Bins.Signetd == "" {
		log.Info("building signet and signetd")
		go func() {
			bins, err := BuildBinaries(ctx, filepath.Join(opts.Dir, "bin"))
			buildc <- buildRes{bins, err}
		}()
	} else {
		buildc <- buildRes{b.Bins, nil}
	}
	if b.CA, err = NewCA(filepath.Join(opts.Dir, "ca")); err != nil {
		return nil, err
	}
	if b.GitHub, err = StartGitHubIssuer(bctx, b.CA, IssuerOptions{}); err != nil {
		return nil, err
	}
	if b.GitLab, err = StartGitLabIssuer(bctx, b.CA, IssuerOptions{}); err != nil {
		return nil, err
	}
	if b.Jenkins, err = StartJenkinsIssuer(bctx, b.CA, IssuerOptions{JenkinsClaimTemplates: true}); err != nil {
		return nil, err
	}
	if b.JenkinsFolder, err = StartJenkinsIssuer(bctx, b.CA, IssuerOptions{Alg: "ES256", JenkinsFolder: "signet-ci", JenkinsClaimTemplates: true}); err != nil {
		return nil, err
	}
	if b.Rogue, err = StartGitHubIssuer(bctx, b.CA, IssuerOptions{}); err != nil {
		return nil, err
	}
	log.Info("issuers up", "github", b.GitHub.URL, "gitlab", b.GitLab.URL, "jenkins", b.Jenkins.URL, "rogue", b.Rogue.URL)
	if b.HSM, err = NewSoftHSM(ctx, filepath.Join(opts.Dir, "hsm")); err != nil {
		return nil, err
	}
	keys := append([]KeySpec{}, MatrixKeys...)
	keys = append(keys, KeySpec{Name: TagsOnlyKey, Algorithm: "ecdsa-p256"})
	for _, k := range keys {
		start := time.Now()
		if k.URI, err = b.HSM.CreateKey(k.Name, k.Algorithm); err != nil {
			return nil, err
		}
		k.PubPath = b.HSM.PublicKeyPath(k.Name)
		b.Keys[k.Name] = k
		log.Info("HSM key created", "key", k.Name, "algorithm", k.Algorithm, "took", time.Since(start).Round(time.Millisecond))
	}
	if err := b.createCodeKeys(); err != nil {
		return nil, err
	}
	br := <-buildc
	if br.err != nil {
		return nil, br.err
	}
	b.Bins = br.bins
	cfg := b.SignerConfig()
	log.Info("starting signetd")
	if b.Signer, err = StartSigner(ctx, SignerOptions{Signetd: b.Bins.Signetd, Dir: filepath.Join(opts.Dir, "signer"), CA: b.CA, Config: cfg, Env: b.HSM.Env()}); err != nil {
		return nil, err
	}
	if b.Proxy, err = StartProxy(bctx, b.CA, b.Signer.URL); err != nil {
		return nil, err
	}
	log.Info("signetd ready", "url", b.Signer.URL, "proxy", b.Proxy.URL, "audit", b.Signer.AuditPath)
	ok = true
	return b, nil
}

// SignerConfig is the bench's signer.yaml: the three platform issuers (not
// the rogue one), and per firmware key one allow rule per platform pinned to
// the bench's repository by immutable id (GitHub repository_id, GitLab
// project_id) or job URL (Jenkins); the code keys carry their certificate
// chain and allow GitHub tag builds only (codeKeyRules).
func (b *Bench) SignerConfig() SignerConfig {
	rules := []AllowRule{
		{Issuer: "github", Claims: map[string]string{"repository_id": GitHubRepositoryID, "repository_owner_id": GitHubOwnerID}},
		{Issuer: "gitlab", Claims: map[string]string{"project_id": GitLabProjectID, "namespace_id": GitLabNamespaceID}},
		{Issuer: "jenkins", Claims: map[string]string{"sub": b.Jenkins.JenkinsURL + "job/signet-ci/job/demo/job/*/"}},
		{Issuer: "jenkins-folder", Claims: map[string]string{"sub": b.JenkinsFolder.JenkinsURL + "job/signet-ci/job/demo/job/*/"}},
	}
	cfg := SignerConfig{
		Audience: DefaultAudience,
		// A small jti budget (a job uses 2-5: sign, attest, retries) so the
		// budget row is quick; max_digests 1000 is the documented default.
		Limits: SignerLimits{JTIUses: JTIBudget, MaxDigests: 1000, MaxTokenAge: time.Hour},
		Issuers: []SignerIssuer{
			IssuerEntry("github", b.GitHub.Issuer),
			IssuerEntry("gitlab", b.GitLab.Issuer),
			IssuerEntry("jenkins", b.Jenkins.Issuer),
			IssuerEntry("jenkins-folder", b.JenkinsFolder.Issuer),
		},
	}
	for _, k := range MatrixKeys {
		k := b.Keys[k.Name]
		cfg.Keys = append(cfg.Keys, SignerKey{Name: k.Name, Purpose: "firmware", URI: k.URI, Allow: rules})
	}
	t := b.Keys[TagsOnlyKey]
	cfg.Keys = append(cfg.Keys, SignerKey{Name: t.Name, Purpose: "firmware", URI: t.URI, Allow: []AllowRule{
		{Issuer: "github", Claims: map[string]string{"repository_id": GitHubRepositoryID, "ref": "refs/tags/v*"}},
	}})
	// Code-signing keys: purpose code with a certificate chain; allowed for
	// GitHub tag builds of the demo repository only.
	for _, ck := range CodeKeys {
		k := b.Keys[ck.Name]
		cfg.Keys = append(cfg.Keys, SignerKey{Name: k.Name, Purpose: "code", URI: k.URI, Certificate: k.Chain, Allow: codeKeyRules()})
	}
	return cfg
}

// Close stops signetd, the proxy and the issuers.
func (b *Bench) Close() {
	if b.Signer != nil {
		b.Signer.Stop() //nolint:errcheck
	}
	b.cancel()
}

// commandResult is one finished child process.
type commandResult struct {
	Exit     int
	Stdout   string
	Stderr   string
	Duration time.Duration
}

func (r commandResult) tail() string {
	s := strings.TrimSpace(r.Stderr)
	if s == "" {
		s = strings.TrimSpace(r.Stdout)
	}
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return s
}

// run executes bin with args and exactly env (plus PATH/HOME), in dir.
func run(ctx context.Context, dir string, env map[string]string, bin string, args ...string) commandResult {
	start := time.Now()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := commandResult{Stdout: out.String(), Stderr: errb.String(), Duration: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.Exit = ee.ExitCode()
		if res.Exit < 0 {
			res.Exit = 128 + 9
		}
	default:
		res.Exit = -1
		res.Stderr += "\n" + err.Error()
	}
	return res
}
