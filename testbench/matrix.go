package testbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/signet-ci/signet/core"
)

// The scenario matrix. Every row is a named case with an expected outcome;
// a row passes when what happened equals what was expected.
//
// Which row turns red when a protection of the signer is removed:
//
//	protection                   row(s) that catch it
//	audience check               hostile/wrong-audience (github, gitlab, jenkins)
//	issuer allowlist             hostile/wrong-issuer (a real issuer with valid
//	                             discovery+JWKS that the signer does not trust)
//	claim policy                 hostile/policy-other-repo (x3), hostile/policy-branch-on-tags-key
//	provenance identity check    hostile/statement-other-repo (x3)
//	audit before answer + fsync  crash/kill-9-audit-complete (every signature a client
//	                             received is in the log after kill -9) and
//	                             audit/fsync-before-answer (signetd under strace: an
//	                             fsync/fdatasync on the audit log precedes every answer)
//	token signature check        hostile/forged-token, hostile/alg-none,
//	                             hostile/hs256-confusion, hostile/tampered-claims
//	expiry / nbf / iat checks    hostile/expired-token, hostile/not-yet-valid
//	code certificate validity    hostile/code-cert-expired, hostile/code-cert-not-yet-valid
//	key purpose of allow rules   hostile/purpose-mismatch
//	client verifies + atomic out fault/signer-down, fault/signer-slow, fault/hsm-unavailable
//	                             (no partial outputs)

// Outcomes used as Expected/Got.
const (
	OutcomeVerified   = "signed, verified (signet+cosign)"
	OutcomeVerifiedEd = "signed, verified (signet; cosign DSSE)"
	OutcomeRejected   = "rejected by verifiers"
	OutcomeNoOutputs  = "failed, no outputs"
)

// Result is one row of the matrix.
type Result struct {
	Scenario   string        `json:"scenario"`
	Platform   string        `json:"platform"`
	Key        string        `json:"key"`
	Expected   string        `json:"expected"`
	Got        string        `json:"got"`
	Pass       bool          `json:"pass"`
	Duration   time.Duration `json:"-"`
	DurationMS int64         `json:"duration_ms"`
	Detail     string        `json:"detail,omitempty"`
}

// row is a scenario to run.
type row struct {
	name, platform, key, expected string
	run                           func(ctx context.Context) (got, detail string)
}

// MatrixOptions select the parts of the matrix.
type MatrixOptions struct {
	// Only runs rows whose scenario name contains this string (all when empty);
	// the audit/ rows always run.
	Only string
	// Rows, when set, runs exactly the rows with these scenario names.
	Rows []string
	// SkipLoad leaves out the load and crash rows.
	SkipLoad bool
	// Load configures the load/crash rows.
	Load LoadOptions
	// Progress is called after each row.
	Progress func(Result)
}

// RunMatrix runs every row in order, then checks the audit log.
func (b *Bench) RunMatrix(ctx context.Context, opts MatrixOptions) []Result {
	rows := b.rows(opts)
	var results []Result
	for _, r := range rows {
		if opts.Only != "" && !strings.Contains(r.name, opts.Only) && !strings.HasPrefix(r.name, "audit/") {
			continue
		}
		if len(opts.Rows) > 0 && !slices.Contains(opts.Rows, r.name) {
			continue
		}
		start := time.Now()
		before := b.auditSnapshot()
		got, detail := r.run(ctx)
		if !strings.HasPrefix(r.name, "audit/") {
			// After every row: the audit log verifies and grew by exactly
			// the answers signetd gave (successes plus refusals).
			if msg := b.auditDelta(ctx, before); msg != "" {
				got += " + " + msg
				detail = strings.TrimSpace(detail + " [audit: " + msg + "]")
			}
		}
		res := Result{Scenario: r.name, Platform: r.platform, Key: r.key, Expected: r.expected, Got: got,
			Pass: got == r.expected, Duration: time.Since(start), Detail: detail}
		res.DurationMS = res.Duration.Milliseconds()
		b.Log.Info("scenario", "name", r.name, "platform", r.platform, "key", r.key, "pass", res.Pass, "got", got, "took", res.Duration.Round(time.Millisecond))
		if !res.Pass && detail != "" {
			b.Log.Warn("scenario mismatch", "name", r.name, "detail", detail)
		}
		if opts.Progress != nil {
			opts.Progress(res)
		}
		results = append(results, res)
	}
	return results
}

func (b *Bench) rows(opts MatrixOptions) []row {
	var rows []row
	// Good paths: every platform x every key algorithm.
	for _, p := range Platforms {
		for _, k := range MatrixKeys {
			want := OutcomeVerified
			if k.Algorithm == "ed25519" {
				want = OutcomeVerifiedEd
			}
			rows = append(rows, row{"good/sign-attest-verify", p, k.Name, want, func(ctx context.Context) (string, string) {
				return b.goodRun(ctx, "good-"+p+"-"+k.Name, p, k.Name)
			}})
		}
	}
	// The Jenkins plugin's folder-scoped issuer with ES256 tokens.
	rows = append(rows, row{"good/jenkins-folder-issuer-es256", "jenkins", "p256", OutcomeVerified, func(ctx context.Context) (string, string) {
		return b.goodRun(ctx, "good-jenkins-folder-es256", "jenkins-folder", "p256")
	}})
	// Hostile tokens, sent straight to the signer with core's client.
	type hostileToken struct {
		name, platform, expected string
		mint                     func() (string, error)
	}
	refused401 := "refused 401 " + core.ErrCodeUnauthenticated
	ht := []hostileToken{
		{"hostile/forged-token", "github", refused401, func() (string, error) { return b.GitHub.MintForeignKey(nil) }},
		{"hostile/alg-none", "github", refused401, func() (string, error) { return b.GitHub.MintAlgNone(nil) }},
		{"hostile/hs256-confusion", "gitlab", refused401, func() (string, error) { return b.GitLab.MintHS256PublicKey(nil) }},
		{"hostile/unknown-kid", "jenkins", refused401, func() (string, error) { return b.Jenkins.MintUnknownKid(nil) }},
		{"hostile/tampered-claims", "github", refused401, func() (string, error) {
			return b.GitHub.MintTampered(nil, map[string]any{"repository": "evil/other"})
		}},
		{"hostile/expired-token", "gitlab", refused401, func() (string, error) { return b.GitLab.MintExpired(nil) }},
		{"hostile/not-yet-valid", "jenkins", refused401, func() (string, error) { return b.Jenkins.MintNotYetValid(nil) }},
		{"hostile/wrong-audience", "github", refused401, func() (string, error) { return b.GitHub.MintWrongAudience(nil) }},
		{"hostile/wrong-audience", "gitlab", refused401, func() (string, error) { return b.GitLab.MintWrongAudience(nil) }},
		{"hostile/wrong-audience", "jenkins", refused401, func() (string, error) { return b.Jenkins.MintWrongAudience(nil) }},
		{"hostile/wrong-issuer", "github", refused401, func() (string, error) { return b.Rogue.Mint(nil) }},
		{"hostile/policy-other-repo", "github", "refused 403 " + core.ErrCodePolicyDenied, func() (string, error) {
			return b.GitHub.Mint(map[string]any{"repository": "evil/fork", "repository_id": "666", "repository_owner": "evil", "repository_owner_id": "667",
				"sub": "repo:evil/fork:ref:refs/heads/main"})
		}},
		{"hostile/policy-other-repo", "gitlab", "refused 403 " + core.ErrCodePolicyDenied, func() (string, error) {
			return b.GitLab.Mint(map[string]any{"project_id": "666", "project_path": "evil/fork", "namespace_id": "667", "namespace_path": "evil",
				"sub": "project_path:evil/fork:ref_type:branch:ref:main"})
		}},
		{"hostile/policy-other-repo", "jenkins", "refused 403 " + core.ErrCodePolicyDenied, func() (string, error) {
			return b.Jenkins.Mint(map[string]any{"sub": b.Jenkins.JenkinsURL + "job/evil/job/fork/"})
		}},
	}
	for _, h := range ht {
		rows = append(rows, row{h.name, h.platform, "p256", h.expected, func(ctx context.Context) (string, string) {
			tok, err := h.mint()
			if err != nil {
				return "mint error", err.Error()
			}
			return b.directSign(ctx, tok, "p256")
		}})
	}
	rows = append(rows,
		row{"hostile/token-too-old", "gitlab", "p256", refused401, func(ctx context.Context) (string, string) {
			// Still unexpired (a long job timeout), but issued beyond max_token_age.
			now := time.Now()
			tok, err := b.GitLab.Mint(map[string]any{"iat": now.Add(-3 * time.Hour).Unix(), "nbf": now.Add(-3 * time.Hour).Unix(), "exp": now.Add(time.Hour).Unix()})
			if err != nil {
				return "mint error", err.Error()
			}
			return b.directSign(ctx, tok, "p256")
		}},
		row{"hostile/jti-over-budget", "github", "p256", fmt.Sprintf("refused 401 %s at use %d", core.ErrCodeUnauthenticated, JTIBudget+1), func(ctx context.Context) (string, string) {
			return b.jtiBudget(ctx)
		}},
		row{"hostile/too-many-digests", "github", "p256", "refused 413 " + core.ErrCodeTooLarge, func(ctx context.Context) (string, string) {
			return b.tooManyDigests(ctx, 1001)
		}},
	)
	rows = append(rows, row{"hostile/policy-branch-on-tags-key", "github", TagsOnlyKey, "refused 403 " + core.ErrCodePolicyDenied, func(ctx context.Context) (string, string) {
		tok, err := b.GitHub.Mint(nil)
		if err != nil {
			return "mint error", err.Error()
		}
		return b.directSign(ctx, tok, TagsOnlyKey)
	}})
	// Code signing: a purpose-code key with an X.509 code-signing chain.
	certRefused := "refused 403 " + core.ErrCodeCertInvalid + ", " + OutcomeNoOutputs
	rows = append(rows,
		row{"good/code-signing-cert", "github", CodeKey, OutcomeCodeVerified, func(ctx context.Context) (string, string) {
			return b.goodCodeRun(ctx)
		}},
		row{"hostile/code-cert-expired", "github", CodeExpiredKey, certRefused, func(ctx context.Context) (string, string) {
			return b.codeCertRefused(ctx, CodeExpiredKey)
		}},
		row{"hostile/code-cert-not-yet-valid", "github", CodeNotYetValidKey, certRefused, func(ctx context.Context) (string, string) {
			return b.codeCertRefused(ctx, CodeNotYetValidKey)
		}},
		row{"hostile/purpose-mismatch", "github", CodeKey, "refused 403 " + core.ErrCodePurposeMismatch, func(ctx context.Context) (string, string) {
			return b.purposeMismatch(ctx)
		}},
	)
	// A statement naming another repository than the token vouches for.
	for _, p := range Platforms {
		rows = append(rows, row{"hostile/statement-other-repo", p, "p256", "refused 403 " + core.ErrCodeIdentityMismatch, func(ctx context.Context) (string, string) {
			return b.otherRepoStatement(ctx, p)
		}})
	}
	// Hostile tokens through the real CLI: refused, nothing written.
	rows = append(rows,
		row{"hostile/cli-forged-token", "github", "p256", OutcomeNoOutputs, func(ctx context.Context) (string, string) {
			tok, _ := b.GitHub.MintForeignKey(nil)
			return b.failingRun(ctx, "cli-forged", job{platform: "github", key: "p256", tokenOverride: tok})
		}},
		row{"hostile/cli-bad-runtime-bearer", "github", "p256", OutcomeNoOutputs, func(ctx context.Context) (string, string) {
			// The Actions runtime refuses the ID-token request (403): nothing reaches the signer.
			return b.failingRun(ctx, "cli-bad-bearer", job{platform: "github", key: "p256",
				extraEnv: map[string]string{"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "ghs_wrong"}})
		}},
		row{"hostile/cli-expired-token", "gitlab", "p256", OutcomeNoOutputs, func(ctx context.Context) (string, string) {
			tok, _ := b.GitLab.MintExpired(nil)
			return b.failingRun(ctx, "cli-expired", job{platform: "gitlab", key: "p256", token: tok})
		}},
		row{"hostile/cli-policy-refused", "jenkins", TagsOnlyKey, OutcomeNoOutputs, func(ctx context.Context) (string, string) {
			return b.failingRun(ctx, "cli-policy", job{platform: "jenkins", key: TagsOnlyKey})
		}},
	)
	// Tampering after signing: verifiers must reject.
	for _, t := range []struct{ what, platform, key string }{
		{"artifact", "github", "p256"}, {"signature", "gitlab", "rsa3072"}, {"envelope", "jenkins", "p384"},
		{"artifact", "gitlab", "ed25519"}, {"envelope", "github", "ed25519"},
	} {
		rows = append(rows, row{"tamper/" + t.what, t.platform, t.key, OutcomeRejected, func(ctx context.Context) (string, string) {
			return b.tamperRun(ctx, t.what, t.platform, t.key)
		}})
	}
	// A verifier expecting another source, ref or builder must refuse.
	rows = append(rows, row{"verify/wrong-expectations", "gitlab", "p256", "rejected: repo, ref, builder", func(ctx context.Context) (string, string) {
		return b.wrongExpectations(ctx)
	}})
	// Faults.
	rows = append(rows,
		row{"fault/signer-503-then-recovers", "github", "p256", OutcomeVerified, func(ctx context.Context) (string, string) {
			return b.fault503(ctx)
		}},
		row{"fault/signer-down", "gitlab", "p256", OutcomeNoOutputs + ", bounded", func(ctx context.Context) (string, string) {
			return b.faultDown(ctx)
		}},
		row{"fault/signer-slow", "jenkins", "p256", OutcomeNoOutputs + ", bounded", func(ctx context.Context) (string, string) {
			return b.faultSlow(ctx)
		}},
		row{"fault/hsm-unavailable", "github", "p384", "readyz 503, " + OutcomeNoOutputs, func(ctx context.Context) (string, string) {
			return b.faultHSMDown(ctx)
		}},
		row{"fault/hsm-recovered", "github", "p384", "readyz 200, " + OutcomeVerified, func(ctx context.Context) (string, string) {
			return b.faultHSMBack(ctx)
		}},
	)
	if !opts.SkipLoad {
		lo := opts.Load
		rows = append(rows,
			row{"load/parallel-ci-jobs", "mixed", "p256", "all signed", func(ctx context.Context) (string, string) {
				r, err := b.RunLoad(ctx, lo)
				b.LastLoad = r
				if err != nil {
					return "error", err.Error()
				}
				if r.Failed > 0 {
					return fmt.Sprintf("%d of %d failed", r.Failed, r.Jobs), r.String()
				}
				return "all signed", r.String()
			}},
			row{"crash/kill-9-audit-complete", "mixed", "p256", "every received signature audited, chain ok", func(ctx context.Context) (string, string) {
				return b.crashRun(ctx, lo)
			}},
		)
	}
	rows = append(rows,
		row{"audit/fsync-before-answer", "-", "p256", "fsync precedes every answer", func(ctx context.Context) (string, string) {
			return b.fsyncCheck(ctx)
		}},
		row{"audit/chain-verifies", "-", "-", "signetd audit verify ok", func(ctx context.Context) (string, string) {
			out, err := AuditVerify(ctx, b.Bins.Signetd, b.Signer.AuditPath)
			if err != nil {
				return "audit verify failed", err.Error()
			}
			return "signetd audit verify ok", strings.TrimSpace(out)
		}},
		row{"audit/counts-match", "-", "-", "records = successes + refusals", func(ctx context.Context) (string, string) {
			return b.auditCounts()
		}},
	)
	return rows
}

// job is one simulated CI job running `signet sign`.
type job struct {
	platform string
	key      string
	// token: the job's ID token for GitLab/Jenkins (minted with default
	// claims when empty). GitHub always uses the request endpoint unless
	// tokenOverride is set (then --token-env).
	token         string
	tokenOverride string
	signerURL     string
	extraArgs     []string
	extraEnv      map[string]string
	timeout       time.Duration
	artifacts     int
}

// artifactNames of a job workspace.
func artifactNames(n int) []string {
	if n <= 0 {
		n = 2
	}
	names := []string{"app.tar.gz", "firmware.bin"}
	for i := 2; i < n; i++ {
		names = append(names, fmt.Sprintf("extra-%03d.bin", i))
	}
	return names[:n]
}

// prepareWorkspace creates dir with random artifacts.
func prepareWorkspace(dir string, names []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, n := range names {
		size := 4096
		if i == 0 {
			size = 64 << 10
		}
		buf := make([]byte, size)
		rand.Read(buf) //nolint:errcheck
		if err := os.WriteFile(filepath.Join(dir, n), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// jobEnv is the platform environment of the job.
func (b *Bench) jobEnv(j job, ws string) (map[string]string, error) {
	var env map[string]string
	tok := j.token
	switch j.platform {
	case "github":
		env = b.GitHub.Env(ws)
	case "gitlab":
		if tok == "" {
			var err error
			if tok, err = b.GitLab.Mint(nil); err != nil {
				return nil, err
			}
		}
		env = b.GitLab.Env(ws, tok)
	case "jenkins", "jenkins-folder":
		jk := b.Jenkins
		if j.platform == "jenkins-folder" {
			jk = b.JenkinsFolder
		}
		if tok == "" {
			var err error
			if tok, err = jk.Mint(nil); err != nil {
				return nil, err
			}
		}
		env = jk.Env(ws, tok)
	default:
		return nil, fmt.Errorf("unknown platform %q", j.platform)
	}
	if j.tokenOverride != "" {
		env["SIGNET_TEST_TOKEN"] = j.tokenOverride
	}
	for k, v := range j.extraEnv {
		env[k] = v
	}
	return env, nil
}

// signJob runs `signet sign` for j in a fresh workspace b.Dir/runs/name.
func (b *Bench) signJob(ctx context.Context, name string, j job) (ws, out string, names []string, res commandResult, err error) {
	ws = filepath.Join(b.Dir, "runs", name)
	out = filepath.Join(ws, "out")
	names = artifactNames(j.artifacts)
	if err = prepareWorkspace(ws, names); err != nil {
		return
	}
	env, err := b.jobEnv(j, ws)
	if err != nil {
		return
	}
	signer := j.signerURL
	if signer == "" {
		signer = b.Proxy.URL
	}
	// No --platform: the CLI detects the platform from the environment.
	args := []string{"sign", "--signer", signer, "--audience", DefaultAudience, "--key", j.key,
		"--output-dir", out, "--ca-cert", b.CA.CAPath}
	if j.tokenOverride != "" {
		args = append(args, "--token-env", "SIGNET_TEST_TOKEN")
	}
	args = append(args, j.extraArgs...)
	args = append(args, names...)
	timeout := j.timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res = run(rctx, ws, env, b.Bins.Signet, args...)
	return
}

// expectedRepo is the source repository URI the provenance must name.
func (b *Bench) expectedRepo(platform string) string {
	switch strings.TrimSuffix(platform, "-folder") {
	case "github":
		return GitHubServerURL + "/" + GitHubRepository
	case "gitlab":
		return b.GitLab.BaseURL + "/" + GitLabProjectPath
	default:
		return JenkinsGitURL
	}
}

// expectedBuilder is the builder id and source ref the provenance must carry
// (DESIGN.md identity table), computed here independently of core.
func (b *Bench) expectedBuilder(platform string) (builder, ref string) {
	switch platform {
	case "github":
		return GitHubServerURL + "/" + GitHubRepository + "/.github/workflows/release.yml@refs/heads/main", "refs/heads/main"
	case "gitlab":
		return "https://" + b.GitLab.Host() + "/" + GitLabProjectPath + "//.gitlab-ci.yml@refs/heads/main", "refs/heads/main"
	case "jenkins-folder":
		return b.JenkinsFolder.JobURL, JenkinsBranch
	default:
		return b.Jenkins.JobURL, JenkinsBranch
	}
}

// goodRun signs and attests, then verifies with signet verify and cosign.
func (b *Bench) goodRun(ctx context.Context, name, platform, key string) (string, string) {
	reqBefore := b.GitHub.TokenRequests()
	ws, out, names, res, err := b.signJob(ctx, name, job{platform: platform, key: key})
	if err != nil {
		return "setup error", err.Error()
	}
	if res.Exit != 0 {
		return fmt.Sprintf("sign exit %d", res.Exit), res.tail()
	}
	if platform == "github" && b.GitHub.TokenRequests() == reqBefore {
		return "token not from ACTIONS_ID_TOKEN_REQUEST_URL", "the GitHub adapter never called the runtime's ID-token endpoint"
	}
	return b.verifyAll(ctx, ws, out, names, platform, key)
}

// verifyAll checks every artifact with signet verify and cosign.
func (b *Bench) verifyAll(ctx context.Context, ws, out string, names []string, platform, key string) (string, string) {
	k := b.Keys[key]
	prov := filepath.Join(out, "provenance.intoto.jsonl")
	if _, err := os.Stat(prov); err != nil {
		return "no provenance", err.Error()
	}
	for _, n := range names {
		art := filepath.Join(ws, n)
		sig := filepath.Join(out, n+".sig")
		builder, ref := b.expectedBuilder(platform)
		r := run(ctx, ws, nil, b.Bins.Signet, "verify", "--public-key", k.PubPath, "--signature", sig,
			"--provenance", prov, "--source-repo", b.expectedRepo(platform), "--builder-id", builder, "--ref", ref, art)
		if r.Exit != 0 {
			return "signet verify failed", n + ": " + r.tail()
		}
		if k.Algorithm != "ed25519" {
			r = run(ctx, ws, nil, b.Cosign, "verify-blob", "--key", k.PubPath, "--signature", sig, "--insecure-ignore-tlog=true", art)
			if r.Exit != 0 {
				return "cosign verify-blob failed", n + ": " + r.tail()
			}
		}
		r = run(ctx, ws, nil, b.Cosign, "verify-blob-attestation", "--key", k.PubPath, "--signature", prov,
			"--type", "slsaprovenance1", "--insecure-ignore-tlog=true", art)
		if r.Exit != 0 {
			return "cosign verify-blob-attestation failed", n + ": " + r.tail()
		}
	}
	if k.Algorithm == "ed25519" {
		return OutcomeVerifiedEd, ""
	}
	return OutcomeVerified, ""
}

// failingRun expects `signet sign` to fail with exit 1 and write nothing.
func (b *Bench) failingRun(ctx context.Context, name string, j job) (string, string) {
	ws, out, names, res, err := b.signJob(ctx, name, j)
	if err != nil {
		return "setup error", err.Error()
	}
	if res.Exit == 0 {
		return "signed", "sign succeeded; expected a refusal"
	}
	if res.Exit != 1 {
		return fmt.Sprintf("exit %d", res.Exit), res.tail()
	}
	if left := outputsLeft(ws, out, names); len(left) > 0 {
		return "partial outputs", strings.Join(left, ", ")
	}
	return OutcomeNoOutputs, lastLine(res.tail())
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// outputsLeft lists outputs (or temp files) a failed run left behind.
func outputsLeft(ws, out string, names []string) []string {
	var left []string
	for _, dir := range []string{ws, out} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			n := e.Name()
			if e.IsDir() {
				continue
			}
			if strings.HasSuffix(n, ".sig") || strings.Contains(n, "intoto") || strings.HasSuffix(n, ".pub") || strings.HasPrefix(n, ".") || strings.Contains(n, ".tmp") {
				left = append(left, filepath.Join(filepath.Base(dir), n))
			}
		}
	}
	sort.Strings(left)
	return left
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// outcome renders a signer client error as "refused STATUS CODE".
func outcome(err error) string {
	if err == nil {
		return "signed"
	}
	var he *core.HTTPError
	if errors.As(err, &he) {
		return fmt.Sprintf("refused %d %s", he.Status, he.API.Code)
	}
	return "error"
}

func (b *Bench) client(token string) (*core.Client, error) {
	return core.NewClient(core.ClientOptions{BaseURL: b.Proxy.URL, Token: token, CACertFile: b.CA.CAPath, RetryMax: -1})
}

func randomDigest() core.DigestRequest {
	buf := make([]byte, 32)
	rand.Read(buf) //nolint:errcheck
	sum := sha256.Sum256(buf)
	return core.DigestRequest{Name: "artifact-" + hex.EncodeToString(buf[:4]) + ".bin", SHA256: hex.EncodeToString(sum[:])}
}

// mintWithIdentity mints a token of platform (github, gitlab or jenkins)
// with overrides merged over the defaults, and returns it with the build
// identity core derives from exactly its claims.
func (b *Bench) mintWithIdentity(platform string, overrides map[string]any) (string, core.Identity, error) {
	var is *Issuer
	server := ""
	switch platform {
	case "github":
		is, server = b.GitHub.Issuer, GitHubServerURL
	case "gitlab":
		is = b.GitLab.Issuer
	case "jenkins":
		is = b.Jenkins.Issuer
	default:
		return "", core.Identity{}, fmt.Errorf("unknown platform %q", platform)
	}
	claims := is.Claims(overrides)
	tok, err := is.Mint(claims) // the full claims override every default (jti included)
	if err != nil {
		return "", core.Identity{}, err
	}
	id, err := core.IdentityFromClaims(platform, server, claims)
	if err != nil {
		return "", core.Identity{}, fmt.Errorf("identity from %s claims: %w", platform, err)
	}
	return tok, id, nil
}

// digestStatement is the in-toto statement of one digest built by id on platform.
func digestStatement(d core.DigestRequest, id core.Identity, platform string) ([]byte, error) {
	return core.BuildStatement([]core.Subject{{Name: d.Name, Digest: map[string]string{"sha256": d.SHA256}}}, id, &core.BuildContext{Platform: platform})
}

// directSign sends one digest with token to key, bypassing every client check.
func (b *Bench) directSign(ctx context.Context, token, key string) (string, string) {
	c, err := b.client(token)
	if err != nil {
		return "client error", err.Error()
	}
	_, err = c.Sign(ctx, key, []core.DigestRequest{randomDigest()})
	if err != nil {
		return outcome(err), err.Error()
	}
	return "signed", ""
}

// jtiBudget uses one GitHub token until the signer refuses it.
func (b *Bench) jtiBudget(ctx context.Context) (string, string) {
	tok, err := b.GitHub.Mint(nil)
	if err != nil {
		return "mint error", err.Error()
	}
	c, err := b.client(tok)
	if err != nil {
		return "client error", err.Error()
	}
	for use := 1; use <= JTIBudget+5; use++ {
		if _, err := c.Sign(ctx, "p256", []core.DigestRequest{randomDigest()}); err != nil {
			return fmt.Sprintf("%s at use %d", outcome(err), use), err.Error()
		}
	}
	return fmt.Sprintf("signed %d times", JTIBudget+5), "the token was never refused"
}

// tooManyDigests posts one request over the signer's max_digests, bypassing
// the client's batch splitting.
func (b *Bench) tooManyDigests(ctx context.Context, n int) (string, string) {
	tok, err := b.GitHub.Mint(nil)
	if err != nil {
		return "mint error", err.Error()
	}
	req := core.SignRequest{Key: "p256"}
	for i := 0; i < n; i++ {
		req.Digests = append(req.Digests, randomDigest())
	}
	body, err := json.Marshal(req)
	if err != nil {
		return "encode error", err.Error()
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, b.Proxy.URL+"/v1/sign", bytes.NewReader(body))
	if err != nil {
		return "request error", err.Error()
	}
	hr.Header.Set("Authorization", "Bearer "+tok)
	hr.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: b.CA.TLSClientConfig()}, Timeout: 30 * time.Second}
	resp, err := hc.Do(hr)
	if err != nil {
		return "error", err.Error()
	}
	defer resp.Body.Close()
	var eb core.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb) //nolint:errcheck
	if resp.StatusCode < 300 {
		return "signed", fmt.Sprintf("%d digests accepted in one request", n)
	}
	return fmt.Sprintf("refused %d %s", resp.StatusCode, eb.Error.Code), eb.Error.Message
}

// otherRepoStatement: a valid token, but a statement whose identity names
// another repository. The signer must refuse it.
func (b *Bench) otherRepoStatement(ctx context.Context, platform string) (string, string) {
	tok, id, err := b.mintWithIdentity(platform, nil)
	if err != nil {
		return "mint error", err.Error()
	}
	id.SourceRepo = "https://evil.example.com/attacker/other-repo"
	stmt, err := digestStatement(randomDigest(), id, platform)
	if err != nil {
		return "statement error", err.Error()
	}
	c, err := b.client(tok)
	if err != nil {
		return "client error", err.Error()
	}
	_, err = c.Attest(ctx, "p256", stmt)
	if err != nil {
		return outcome(err), err.Error()
	}
	return "signed", "the signer signed a statement naming another repository"
}

// tamperRun signs, changes one output (or the artifact), and expects every
// applicable verifier to reject.
func (b *Bench) tamperRun(ctx context.Context, what, platform, key string) (string, string) {
	ws, out, names, res, err := b.signJob(ctx, "tamper-"+what+"-"+platform+"-"+key, job{platform: platform, key: key})
	if err != nil {
		return "setup error", err.Error()
	}
	if res.Exit != 0 {
		return fmt.Sprintf("sign exit %d", res.Exit), res.tail()
	}
	n := names[0]
	art := filepath.Join(ws, n)
	sig := filepath.Join(out, n+".sig")
	prov := filepath.Join(out, "provenance.intoto.jsonl")
	switch what {
	case "artifact":
		f, err := os.OpenFile(art, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return "tamper error", err.Error()
		}
		f.Write([]byte{0}) //nolint:errcheck
		f.Close()
	case "signature":
		raw, err := core.ReadSigFile(sig)
		if err != nil {
			return "tamper error", err.Error()
		}
		raw[len(raw)/2] ^= 0x01
		if err := os.WriteFile(sig, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o644); err != nil {
			return "tamper error", err.Error()
		}
	case "envelope":
		// Re-point the statement's subject digest at another artifact while
		// keeping the signature: the DSSE signature must no longer verify.
		data, err := os.ReadFile(prov)
		if err != nil {
			return "tamper error", err.Error()
		}
		envs, err := core.ParseEnvelopes(data)
		if err != nil || len(envs) == 0 {
			return "tamper error", fmt.Sprint("parse envelopes: ", err)
		}
		e := envs[0].Envelope
		payload, err := base64.StdEncoding.DecodeString(e.Payload)
		if err != nil {
			return "tamper error", err.Error()
		}
		// Claim the artifact came from another repository.
		tampered := strings.Replace(string(payload), "signet-ci/demo", "signet-ci/evil", 1)
		if tampered == string(payload) {
			return "tamper error", "payload does not name signet-ci/demo"
		}
		e.Payload = base64.StdEncoding.EncodeToString([]byte(tampered))
		line, err := core.EnvelopesJSONL([]core.Envelope{*e})
		if err != nil {
			return "tamper error", err.Error()
		}
		if err := os.WriteFile(prov, line, 0o644); err != nil {
			return "tamper error", err.Error()
		}
	}
	k := b.Keys[key]
	var accepted []string
	r := run(ctx, ws, nil, b.Bins.Signet, "verify", "--public-key", k.PubPath, "--signature", sig, "--provenance", prov, art)
	if r.Exit == 0 {
		accepted = append(accepted, "signet verify")
	} else if r.Exit != 1 {
		accepted = append(accepted, fmt.Sprintf("signet verify exit %d (%s)", r.Exit, firstLine(r.tail())))
	}
	if k.Algorithm != "ed25519" && what != "envelope" {
		if r := run(ctx, ws, nil, b.Cosign, "verify-blob", "--key", k.PubPath, "--signature", sig, "--insecure-ignore-tlog=true", art); r.Exit == 0 {
			accepted = append(accepted, "cosign verify-blob")
		}
	}
	if what != "signature" {
		if r := run(ctx, ws, nil, b.Cosign, "verify-blob-attestation", "--key", k.PubPath, "--signature", prov,
			"--type", "slsaprovenance1", "--insecure-ignore-tlog=true", art); r.Exit == 0 {
			accepted = append(accepted, "cosign verify-blob-attestation")
		}
	}
	if len(accepted) > 0 {
		return "accepted by " + strings.Join(accepted, ", "), ""
	}
	return OutcomeRejected, ""
}

// wrongExpectations signs, then runs signet verify with one expectation wrong at a time.
func (b *Bench) wrongExpectations(ctx context.Context) (string, string) {
	ws, out, names, res, err := b.signJob(ctx, "wrong-expectations", job{platform: "gitlab", key: "p256"})
	if err != nil {
		return "setup error", err.Error()
	}
	if res.Exit != 0 {
		return fmt.Sprintf("sign exit %d", res.Exit), res.tail()
	}
	k := b.Keys["p256"]
	builder, ref := b.expectedBuilder("gitlab")
	repo := b.expectedRepo("gitlab")
	base := []string{"verify", "--public-key", k.PubPath, "--signature", filepath.Join(out, names[0]+".sig"),
		"--provenance", filepath.Join(out, "provenance.intoto.jsonl")}
	if r := run(ctx, ws, nil, b.Bins.Signet, append(base, "--source-repo", repo, "--ref", ref, "--builder-id", builder, names[0])...); r.Exit != 0 {
		return "right expectations rejected", r.tail()
	}
	var accepted []string
	for _, c := range []struct{ what, repo, ref, builder string }{
		{"repo", repo + "-fork", ref, builder},
		{"ref", repo, "refs/tags/v*", builder},
		{"builder", repo, ref, builder + "-evil"},
	} {
		r := run(ctx, ws, nil, b.Bins.Signet, append(base, "--source-repo", c.repo, "--ref", c.ref, "--builder-id", c.builder, names[0])...)
		if r.Exit != 1 {
			accepted = append(accepted, fmt.Sprintf("%s (exit %d)", c.what, r.Exit))
		}
	}
	if len(accepted) > 0 {
		return "not rejected: " + strings.Join(accepted, ", "), ""
	}
	return "rejected: repo, ref, builder", ""
}

// fault503: the proxy answers 503 three times; the client retries and succeeds.
func (b *Bench) fault503(ctx context.Context) (string, string) {
	before := b.Proxy.Injected503()
	b.Proxy.Fail503(3)
	defer b.Proxy.Fail503(0)
	ws, out, names, res, err := b.signJob(ctx, "fault-503", job{platform: "github", key: "p256"})
	if err != nil {
		return "setup error", err.Error()
	}
	injected := b.Proxy.Injected503() - before
	if injected != 3 {
		return fmt.Sprintf("%d 503s injected", injected), "the client did not go through the proxy's 503s"
	}
	if res.Exit != 0 {
		return fmt.Sprintf("sign exit %d", res.Exit), res.tail()
	}
	got, detail := b.verifyAll(ctx, ws, out, names, "github", "p256")
	return got, strings.TrimSpace(fmt.Sprintf("after %d injected 503s. %s", injected, detail))
}

// clientDeadline is the overall deadline given to `signet sign` in the fault rows.
const clientDeadline = 5 * time.Second

// faultDown: nothing listens at the signer URL.
func (b *Bench) faultDown(ctx context.Context) (string, string) {
	addr, err := FreePort()
	if err != nil {
		return "setup error", err.Error()
	}
	got, detail := b.failingRun(ctx, "fault-down", job{platform: "gitlab", key: "p256", signerURL: "https://" + addr,
		extraArgs: []string{"--timeout", clientDeadline.String()}, timeout: 90 * time.Second})
	if got == OutcomeNoOutputs {
		got += ", bounded"
	}
	return got, detail
}

// faultSlow: the proxy delays every signing request well past the client's
// --timeout. "Bounded" is shown by the outcome, not by a clock: a client that
// waited for the signer would get its signature once the delay passed (and
// the row would read "signed"); one that hung would be killed by the bench's
// 90 s guard (exit 137). Exit 1 with nothing written means it gave up by itself.
func (b *Bench) faultSlow(ctx context.Context) (string, string) {
	b.Proxy.SetDelay(6 * clientDeadline)
	defer b.Proxy.SetDelay(0)
	got, detail := b.failingRun(ctx, "fault-slow", job{platform: "jenkins", key: "p256",
		extraArgs: []string{"--timeout", clientDeadline.String()}, timeout: 90 * time.Second})
	if got == OutcomeNoOutputs {
		got += ", bounded"
	}
	return got, detail
}

// waitReadyz polls /readyz until it answers want (or 15 s pass).
func (b *Bench) waitReadyz(ctx context.Context, want int) (int, string) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body, err := b.Signer.Readyz(ctx)
		if err == nil && code == want {
			return code, body
		}
		if time.Now().After(deadline) {
			if err != nil {
				return 0, err.Error()
			}
			return code, body
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// faultHSMDown: the token disappears mid-run, between the signer's answer to
// /v1/sign and the /v1/attest call. /readyz must fail, the attest is refused
// (503 until the client's deadline), and the client writes nothing at all —
// not even the signatures it already received.
func (b *Bench) faultHSMDown(ctx context.Context) (string, string) {
	var once sync.Once
	var unplugErr error
	unplugged := false
	b.Proxy.OnAnswer(func(a Answer) {
		if strings.HasPrefix(a.Path, "/v1/sign") && a.Status == http.StatusOK {
			once.Do(func() {
				unplugErr = b.HSM.Unplug()
				unplugged = unplugErr == nil
			})
		}
	})
	got, detail := b.failingRun(ctx, "fault-hsm-down", job{platform: "github", key: "p384",
		extraArgs: []string{"--timeout", clientDeadline.String()}, timeout: 90 * time.Second})
	b.Proxy.OnAnswer(nil)
	if !unplugged {
		return "token not unplugged mid-run", fmt.Sprint(unplugErr, " ", detail)
	}
	code, body := b.waitReadyz(ctx, http.StatusServiceUnavailable)
	return fmt.Sprintf("readyz %d, %s", code, got), "unplugged after the sign answer; " + firstLine(body) + " / " + detail
}

// faultHSMBack: the token returns; the signer recovers without a restart.
func (b *Bench) faultHSMBack(ctx context.Context) (string, string) {
	if err := b.HSM.Replug(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "setup error", err.Error()
	}
	code, body := b.waitReadyz(ctx, http.StatusOK)
	got, detail := b.goodRun(ctx, "fault-hsm-back", "github", "p384")
	return fmt.Sprintf("readyz %d, %s", code, got), strings.TrimSpace(firstLine(body) + " " + detail)
}

// auditCounts compares the audit log with what signetd answered on the
// signing endpoints (counted by the proxy): allowed records = 2xx answers,
// refusal records = 4xx/5xx answers.
func (b *Bench) auditCounts() (string, string) {
	recs, err := AuditRecords(b.Signer.AuditPath)
	if err != nil {
		return "audit unreadable", err.Error()
	}
	allowed, refused := 0, 0
	for _, r := range recs {
		if isAllowed(r) {
			allowed++
		} else {
			refused++
		}
	}
	ok, bad := 0, 0
	for status, n := range b.Proxy.Statuses() {
		if status < 300 {
			ok += n
		} else {
			bad += n
		}
	}
	detail := fmt.Sprintf("audit: %d allowed + %d refused; signer answered %d ok + %d refused (%d records in all)", allowed, refused, ok, bad, len(recs))
	if allowed != ok || refused != bad {
		return "counts differ", detail
	}
	return "records = successes + refusals", detail
}

// auditSnap is where the main signer's audit log and the proxy's list of
// answers stood before a row.
type auditSnap struct {
	records, answers int
}

func (b *Bench) auditSnapshot() auditSnap {
	recs, _ := AuditRecords(b.Signer.AuditPath)
	return auditSnap{records: len(recs), answers: len(b.Proxy.Answers(0))}
}

// auditDelta returns "" when the log verifies and its new records are
// exactly the row's answers: one record per answer, same request id, allow
// for a 2xx and deny otherwise.
func (b *Bench) auditDelta(ctx context.Context, before auditSnap) string {
	if _, err := AuditVerify(ctx, b.Bins.Signetd, b.Signer.AuditPath); err != nil {
		return "audit chain broken"
	}
	recs, err := AuditRecords(b.Signer.AuditPath)
	if err != nil {
		return "audit unreadable"
	}
	if before.records > len(recs) {
		return "audit log shrank"
	}
	type key struct {
		rid     string
		allowed bool
	}
	want := map[key]int{}
	answers := b.Proxy.Answers(before.answers)
	for _, a := range answers {
		want[key{a.RequestID, a.Status < 300}]++
	}
	newRecs := recs[before.records:]
	for _, r := range newRecs {
		k := key{fmt.Sprint(r["request_id"]), isAllowed(r)}
		if want[k] == 0 {
			return fmt.Sprintf("audit record seq %v (request %s, %s) matches no answer", r["seq"], k.rid, r["decision"])
		}
		want[k]--
	}
	for k, n := range want {
		if n > 0 {
			return fmt.Sprintf("answer to request %s (allowed=%v) has no audit record", k.rid, k.allowed)
		}
	}
	return ""
}

// isAllowed reads a record's decision: "allow" (signetd writes allow | deny).
func isAllowed(r map[string]any) bool { return r["decision"] == "allow" }
