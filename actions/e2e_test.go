package actions_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/testbench"
)

// The end-to-end test runs the repository's real action.yml under act
// (https://github.com/nektos/act) on this host, without Docker and without
// network: `-P ubuntu-latest=-self-hosted`, `--action-offline-mode`,
// `--pull=false`, a workflow of only actions/checkout (which act replaces by a
// copy of the local tree), `uses: ./` and `run:` steps. The job's token comes
// from the testbench's GitHub token endpoint (bearer checked, audience
// honoured), the signer is the real signetd on SoftHSM2, and the results are
// verified with `signet verify` and cosign.

const (
	repoURL    = "https://github.com/" + testbench.GitHubRepository
	releaseKey = "release" // allows signet-ci/demo on refs/heads/main
	lockedKey  = "tags-only"
)

type bench struct {
	act, cosign string
	// netGuard is the HTTP(S) proxy act and the job steps are given: any
	// attempt to reach a non-loopback host lands there and is refused.
	netGuard  *netGuard
	bins      testbench.Binaries
	ca        *testbench.CA // issuer + token endpoint TLS
	signerCA  *testbench.CA // signetd TLS, trusted via the ca-cert input only
	gh        *testbench.GitHubIssuer
	signer    *testbench.Signer
	pubKey    string // the release key's public key, from the HSM (what a verifier pins)
	repo      string // git work tree: the action's source + the test workflows
	headSHA   string
	event     string
	cacheRoot string
}

func newBench(t *testing.T, ctx context.Context) *bench {
	t.Helper()
	b := &bench{}
	var err error
	// The test fails (never skips) when a tool is missing.
	if b.act, err = testbench.FindTool("act"); err != nil {
		t.Fatal(err)
	}
	if b.cosign, err = testbench.FindTool("cosign"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b.netGuard = startNetGuard(t)
	if b.bins, err = testbench.BuildBinaries(ctx, filepath.Join(dir, "bin")); err != nil {
		t.Fatalf("build binaries: %v", err)
	}
	// Two CAs: the runner trusts the issuer's (the token endpoint stands for
	// GitHub's publicly trusted one, via SSL_CERT_FILE); the signer's private
	// CA is trusted only through the action's ca-cert input.
	if b.ca, err = testbench.NewCA(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	if b.signerCA, err = testbench.NewCA(filepath.Join(dir, "signer-ca")); err != nil {
		t.Fatal(err)
	}
	if b.gh, err = testbench.StartGitHubIssuer(ctx, b.ca, testbench.IssuerOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.gh.Close() })
	hsm, err := testbench.NewSoftHSM(ctx, filepath.Join(dir, "hsm"))
	if err != nil {
		t.Fatal(err)
	}
	releaseURI, err := hsm.CreateKey(releaseKey, "ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	lockedURI, err := hsm.CreateKey(lockedKey, "ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	b.pubKey = hsm.PublicKeyPath(releaseKey)
	b.signer, err = testbench.StartSigner(ctx, testbench.SignerOptions{
		Signetd: b.bins.Signetd,
		Dir:     filepath.Join(dir, "signer"),
		CA:      b.signerCA,
		Env:     hsm.Env(),
		Config: testbench.SignerConfig{
			Audience: testbench.DefaultAudience,
			Issuers:  []testbench.SignerIssuer{testbench.IssuerEntry("github", b.gh.Issuer)},
			Keys: []testbench.SignerKey{
				{Name: releaseKey, Purpose: "code", URI: releaseURI, Allow: []testbench.AllowRule{{
					Issuer: "github", Claims: map[string]string{"repository_id": testbench.GitHubRepositoryID, "ref": "refs/heads/main"},
				}}},
				{Name: lockedKey, Purpose: "code", URI: lockedURI, Allow: []testbench.AllowRule{{
					Issuer: "github", Claims: map[string]string{"repository_id": testbench.GitHubRepositoryID, "ref": "refs/tags/v*"},
				}}},
			},
		},
	})
	if err != nil {
		t.Fatalf("start signetd: %v", err)
	}
	t.Cleanup(func() {
		if err := b.signer.Stop(); err != nil {
			t.Logf("stop signetd: %v", err)
		}
	})

	b.repo = filepath.Join(dir, "repo")
	b.cacheRoot = filepath.Join(dir, "act-cache")
	b.headSHA = makeRepo(t, b.repo)
	wf := testbench.GitHubRepository + "/.github/workflows/sign.yml@refs/heads/main"
	b.gh.SetRequestClaims(map[string]any{
		"sha": b.headSHA, "workflow_sha": b.headSHA, "job_workflow_sha": b.headSHA,
		"workflow": "sign", "workflow_ref": wf, "job_workflow_ref": wf,
	})
	b.event = filepath.Join(dir, "event.json")
	event := map[string]any{
		"ref": "refs/heads/main", "after": b.headSHA,
		"head_commit": map[string]any{"id": b.headSHA},
		"repository":  map[string]any{"full_name": testbench.GitHubRepository, "name": testbench.GitHubRepo, "owner": map[string]any{"name": testbench.GitHubOwner}},
		"sender":      map[string]any{"login": "octocat"},
	}
	eb, _ := json.Marshal(event)
	if err := os.WriteFile(b.event, eb, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// makeRepo builds a git work tree holding the module's source (so `uses: ./`
// builds signet from it, as on a real runner) and the test workflows, with
// origin github.com/signet-ci/demo so act reports that repository.
func makeRepo(t *testing.T, repo string) string {
	t.Helper()
	root, err := testbench.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == ".git" || rel == ".github" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(repo, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(path, filepath.Join(repo, rel))
	})
	if err != nil {
		t.Fatalf("copy the module into the test repository: %v", err)
	}
	wfs, _ := filepath.Glob(filepath.Join(root, "actions", "testdata", "workflows", "*.yml"))
	if len(wfs) == 0 {
		t.Fatal("no workflows in actions/testdata/workflows")
	}
	for _, wf := range wfs {
		if err := copyFile(wf, filepath.Join(repo, ".github", "workflows", filepath.Base(wf))); err != nil {
			t.Fatal(err)
		}
	}
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-c", "user.name=Signet Test", "-c", "user.email=test@signet.test", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	git("remote", "add", "origin", repoURL+".git")
	git("add", "-A")
	git("commit", "-q", "-m", "test repository")
	return git("rev-parse", "HEAD")
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// actRun is one act run: its combined log and the files the workflow's
// collect step copied out.
type actRun struct {
	err     error
	log     string
	results string // RESULT_DIR
}

func (r *actRun) output(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.results, "outputs", name))
	if err != nil {
		t.Fatalf("the workflow did not record output %s (did the collect step run?): %v\nact log:\n%s", name, err, r.log)
	}
	return string(b)
}

// runAct runs workflow (a file of actions/testdata/workflows) under act.
func (b *bench) runAct(t *testing.T, ctx context.Context, workflow string, env map[string]string, withToken bool) *actRun {
	t.Helper()
	results := t.TempDir()
	vars := map[string]string{
		"SIGNER_URL":                 b.signer.URL,
		"SIGNER_AUDIENCE":            testbench.DefaultAudience,
		"SIGNER_KEY":                 releaseKey,
		"SIGNER_CA":                  b.signerCA.CAPath,
		"RESULT_DIR":                 results,
		"GITHUB_WORKFLOW_REF":        testbench.GitHubRepository + "/.github/workflows/" + workflow + "@refs/heads/main",
		"GITHUB_WORKFLOW_SHA":        b.headSHA,
		"GITHUB_REPOSITORY_ID":       testbench.GitHubRepositoryID,
		"GITHUB_REPOSITORY_OWNER_ID": testbench.GitHubOwnerID,
		// The runtime's token endpoint is TLS under the bench CA.
		"SSL_CERT_FILE": b.ca.CAPath,
		// Offline: the action builds signet from the module cache only.
		"GOFLAGS":     "-mod=mod",
		"GOTOOLCHAIN": "local",
		"GOPROXY":     "off",
	}
	for k, v := range b.netGuard.env() {
		vars[k] = v
	}
	if withToken {
		vars["ACTIONS_ID_TOKEN_REQUEST_URL"] = b.gh.RequestURL
		vars["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = b.gh.RequestToken
	}
	for k, v := range env {
		vars[k] = v
	}
	args := []string{"push",
		"-W", filepath.Join(".github", "workflows", workflow),
		"-P", "ubuntu-latest=-self-hosted",
		"--action-offline-mode", "--pull=false", "--no-cache-server",
		"--action-cache-path", filepath.Join(b.cacheRoot, strconv.FormatInt(time.Now().UnixNano(), 36)),
		"-e", b.event,
	}
	for k, v := range vars {
		args = append(args, "--env", k+"="+v)
	}
	cmd := exec.CommandContext(ctx, b.act, args...)
	cmd.Dir = b.repo
	// ACT_DISABLE_VERSION_CHECK: act otherwise asks api.nektosact.com for notices.
	cmd.Env = append(os.Environ(), "ACT_DISABLE_VERSION_CHECK=1", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "GOPROXY=off")
	for k, v := range b.netGuard.env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if reqs := b.netGuard.drain(); len(reqs) > 0 {
		t.Errorf("act or the job tried to reach the network: %q", reqs)
	}
	return &actRun{err: err, log: out.String(), results: results}
}

// netGuard is a loopback HTTP proxy that refuses everything and records what
// was asked. Go (act, signet, the go command) and curl/git honour
// HTTP(S)_PROXY; loopback addresses (our issuer and signer) bypass it.
type netGuard struct {
	ln  net.Listener
	mu  sync.Mutex
	got []string
}

func startNetGuard(t *testing.T) *netGuard {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &netGuard{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				g.mu.Lock()
				g.got = append(g.got, strings.TrimSpace(line))
				g.mu.Unlock()
				io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}()
		}
	}()
	return g
}

func (g *netGuard) env() map[string]string {
	u := "http://" + g.ln.Addr().String()
	return map[string]string{"HTTP_PROXY": u, "HTTPS_PROXY": u, "http_proxy": u, "https_proxy": u, "NO_PROXY": "", "no_proxy": ""}
}

// drain returns and forgets the recorded requests.
func (g *netGuard) drain() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	got := g.got
	g.got = nil
	return got
}

// summaryFromLog returns the job summary act printed for the run: the text
// after "Summary - " up to the next act log line ("[workflow/job] ...").
func summaryFromLog(log string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(log, "\n") {
		if _, rest, ok := strings.Cut(line, "Summary - "); ok && !in {
			in = true
			b.WriteString(rest + "\n")
			continue
		}
		if in {
			if strings.HasPrefix(strings.TrimSpace(line), "[") {
				break
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// annotations returns the `::error title=signet::` messages act printed.
func annotations(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if _, msg, ok := strings.Cut(line, "::error title=signet::"); ok {
			out = append(out, strings.ReplaceAll(strings.ReplaceAll(msg, "%0A", "\n"), "%25", "%"))
		}
	}
	return out
}

func run(t *testing.T, ctx context.Context, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestActionEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	b := newBench(t, ctx)

	t.Run("signs and attests three artifacts", func(t *testing.T) {
		before := b.gh.TokenRequests()
		r := b.runAct(t, ctx, "sign.yml", nil, true)
		if r.err != nil {
			t.Fatalf("act run failed: %v\n%s", r.err, r.log)
		}
		if got := b.gh.TokenRequests() - before; got < 1 {
			t.Errorf("the token endpoint was called %d times; the action must get its token there", got)
		}
		if regexp.MustCompile(`eyJ[A-Za-z0-9_-]{10,}\.eyJ`).MatchString(r.log) {
			t.Errorf("a JWT appears unmasked in the job log")
		}
		if o := r.output(t, "OUTCOME"); o != "success" {
			t.Fatalf("sign step outcome %q", o)
		}
		b.checkSuccess(t, ctx, r)
	})

	t.Run("provenance off signs only", func(t *testing.T) {
		r := b.runAct(t, ctx, "sign.yml", map[string]string{"SIGNER_PROVENANCE": "false"}, true)
		if r.err != nil {
			t.Fatalf("act run failed: %v\n%s", r.err, r.log)
		}
		if p := r.output(t, "PROVENANCE"); p != "" {
			t.Errorf("provenance output %q with provenance: false", p)
		}
		if _, err := os.Stat(filepath.Join(r.results, "signed", "provenance.intoto.jsonl")); !os.IsNotExist(err) {
			t.Errorf("a provenance file was written with provenance: false (stat: %v)", err)
		}
		sigs := strings.Split(r.output(t, "SIGNATURES"), "\n")
		if len(sigs) != 3 {
			t.Fatalf("signatures %q, want 3", sigs)
		}
		art := filepath.Join(r.results, "dist", "firmware.bin")
		if out, err := run(t, ctx, b.cosign, "verify-blob", "--key", b.pubKey, "--signature",
			filepath.Join(r.results, "signed", "dist", "firmware.bin.sig"), "--insecure-ignore-tlog=true", art); err != nil {
			t.Errorf("cosign verify-blob: %v\n%s", err, out)
		}
	})

	failures := []struct {
		name, workflow string
		env            map[string]string
		withToken      bool
		want           func(b *bench) []string // substrings of one annotation
		tokenRequested bool
		minAttempts    int // failed signer requests the client must have logged (retries)
	}{
		{
			name: "missing id-token permission", workflow: "missing-permission.yml", withToken: false,
			want: func(*bench) []string { return []string{"this job lacks `permissions: id-token: write`"} },
		},
		{
			name: "signer unreachable", workflow: "sign.yml", withToken: true, tokenRequested: true,
			env:         map[string]string{"SIGNER_URL": "https://" + unusedAddr(t)},
			minAttempts: 3,
			want: func(*bench) []string {
				return []string{"signer unreachable", "127.0.0.1", "could not be reached", "`signer-url`"}
			},
		},
		{
			// ca-cert given as PEM text rather than a path: the refusal can
			// only come back if the action trusted the signer's TLS with it.
			name: "policy refusal", workflow: "sign.yml", withToken: true, tokenRequested: true,
			env: map[string]string{"SIGNER_KEY": lockedKey, "SIGNER_CA": readFile(t, b.signerCA.CAPath)},
			want: func(b *bench) []string {
				return []string{"policy_denied", lastAuditReason(t, b.signer.AuditPath)}
			},
		},
		{
			name: "signer certificate not trusted without ca-cert", workflow: "sign.yml", withToken: true, tokenRequested: true,
			env:  map[string]string{"SIGNER_CA": ""},
			want: func(*bench) []string { return []string{"certificate", "not trusted", "`ca-cert`"} },
		},
		{
			name: "glob matching nothing", workflow: "no-match.yml", withToken: true,
			want: func(*bench) []string { return []string{`glob "dist/*.does-not-exist" matches no files`, "`artifacts`"} },
		},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			before := b.gh.TokenRequests()
			r := b.runAct(t, ctx, tc.workflow, tc.env, tc.withToken)
			if r.err == nil {
				t.Fatalf("act run succeeded; want the sign step to fail\n%s", r.log)
			}
			if o := r.output(t, "OUTCOME"); o != "failure" {
				t.Fatalf("sign step outcome %q, want failure\n%s", o, r.log)
			}
			for _, name := range []string{"SIGNATURES", "PROVENANCE", "DIGESTS", "AUDIT_SEQ", "PUBLIC_KEY"} {
				if v := r.output(t, name); v != "" {
					t.Errorf("output %s = %q after a failure; want no outputs", name, v)
				}
			}
			// No partial outputs: nothing was written to the output dir.
			if left := listFiles(t, filepath.Join(r.results, "signed")); len(left) > 0 {
				t.Errorf("files left after a failure: %v", left)
			}
			if requested := b.gh.TokenRequests() > before; requested != tc.tokenRequested {
				t.Errorf("token requested = %v, want %v", requested, tc.tokenRequested)
			}
			want := tc.want(b)
			anns := annotations(r.log)
			found := false
			for _, a := range anns {
				ok := true
				for _, w := range want {
					ok = ok && strings.Contains(a, w)
				}
				found = found || ok
			}
			// Retries are visible in the log: the signer client logs each
			// failed attempt (go-retryablehttp's "request failed").
			if n := strings.Count(r.log, `msg="request failed"`); n < tc.minAttempts {
				t.Errorf("the signer client logged %d failed attempts, want at least %d (retries with backoff)", n, tc.minAttempts)
			}
			if os.Getenv("SIGNET_E2E_LOG") != "" {
				t.Logf("annotations: %q\nlog:\n%s", anns, r.log)
			}
			if !found {
				t.Errorf("no ::error annotation containing all of %q; annotations: %q\nact log:\n%s", want, anns, r.log)
			}
		})
	}
}

// checkSuccess verifies what a successful run published.
func (b *bench) checkSuccess(t *testing.T, ctx context.Context, r *actRun) {
	t.Helper()
	at := func(rel string) string { return filepath.Join(r.results, rel) }

	var digests []struct{ Name, Path, SHA256, Signature string }
	if err := json.Unmarshal([]byte(r.output(t, "DIGESTS")), &digests); err != nil {
		t.Fatalf("digests output is not JSON: %v", err)
	}
	wantNames := []string{"dist/app-linux-amd64.tar.gz", "dist/app.cdx.json", "dist/firmware.bin"}
	var gotNames []string
	for _, d := range digests {
		gotNames = append(gotNames, d.Name)
	}
	if strings.Join(gotNames, ",") != strings.Join(wantNames, ",") {
		t.Fatalf("digests name %v, want %v", gotNames, wantNames)
	}
	sigs := strings.Split(r.output(t, "SIGNATURES"), "\n")
	if len(sigs) != 3 {
		t.Fatalf("signatures output has %d lines, want 3: %q", len(sigs), sigs)
	}
	prov := r.output(t, "PROVENANCE")
	if prov != "signed/provenance.intoto.jsonl" {
		t.Errorf("provenance output %q, want signed/provenance.intoto.jsonl (output-dir: signed)", prov)
	}
	seq, err := strconv.ParseUint(r.output(t, "AUDIT_SEQ"), 10, 64)
	if err != nil || seq == 0 {
		t.Errorf("audit-seq output %q is not a positive sequence number", r.output(t, "AUDIT_SEQ"))
	}
	if last := lastAuditSeq(t, b.signer.AuditPath); seq != last {
		t.Errorf("audit-seq output %d, but the signer's last audit record is %d", seq, last)
	}
	pinned, err := os.ReadFile(b.pubKey)
	if err != nil {
		t.Fatal(err)
	}
	published, err := os.ReadFile(at(r.output(t, "PUBLIC_KEY")))
	if err != nil {
		t.Fatalf("public-key output: %v", err)
	}
	if !bytes.Contains(published, bytes.TrimSpace(pinned)) {
		t.Errorf("public-key output %s is not the HSM key's public key", r.output(t, "PUBLIC_KEY"))
	}
	// act hands each step a fresh GITHUB_STEP_SUMMARY file and prints what
	// the step wrote to it ("⚙  Summary - ...") when the step ends.
	summary := summaryFromLog(r.log)
	if !strings.Contains(string(summary), "| artifact | sha256 | signature file | key | audit sequence |") {
		t.Errorf("summary lacks the table header:\n%s\nact log:\n%s", summary, r.log)
	}

	for i, d := range digests {
		art := at(d.Name)
		sum := sha256File(t, art)
		if d.SHA256 != sum {
			t.Errorf("%s: digests output sha256 %s, file has %s", d.Name, d.SHA256, sum)
		}
		if d.Signature != sigs[i] || d.Signature != "signed/"+d.Name+".sig" {
			t.Errorf("%s: signature %q (signatures line %q), want signed/%s.sig", d.Name, d.Signature, sigs[i], d.Name)
		}
		row := fmt.Sprintf("| %s | `%s` | %s | %s", d.Name, sum, d.Signature, releaseKey)
		if !strings.Contains(string(summary), row) || !strings.Contains(string(summary), fmt.Sprintf("| %d |", seq)) {
			t.Errorf("summary lacks the row %q ... %d:\n%s", row, seq, summary)
		}
		sig := at(d.Signature)
		// signet verify with the pinned key and the expected repository and ref.
		if out, err := run(t, ctx, b.bins.Signet, "verify", "--public-key", b.pubKey, "--signature", sig,
			"--provenance", at(prov), "--source-repo", repoURL, "--ref", "refs/heads/*",
			"--builder-id", repoURL+"/.github/workflows/sign.yml@refs/heads/main",
			"--runner-environment", "github-hosted", art); err != nil {
			t.Errorf("signet verify %s: %v\n%s", d.Name, err, out)
		}
		// cosign, with the same pinned key.
		if out, err := run(t, ctx, b.cosign, "verify-blob", "--key", b.pubKey, "--signature", sig,
			"--insecure-ignore-tlog=true", art); err != nil {
			t.Errorf("cosign verify-blob %s: %v\n%s", d.Name, err, out)
		}
		if out, err := run(t, ctx, b.cosign, "verify-blob-attestation", "--key", b.pubKey, "--signature", at(prov),
			"--type", "slsaprovenance1", "--insecure-ignore-tlog=true", art); err != nil {
			t.Errorf("cosign verify-blob-attestation %s: %v\n%s", d.Name, err, out)
		}
	}

	// The verifiers must refuse what they should.
	art0, sig0 := at(digests[0].Name), at(digests[0].Signature)
	if out, err := run(t, ctx, b.bins.Signet, "verify", "--public-key", b.pubKey, "--signature", sig0,
		"--provenance", at(prov), "--source-repo", "https://github.com/evil-org/demo", art0); err == nil {
		t.Errorf("signet verify accepted the provenance for another repository:\n%s", out)
	}
	if out, err := run(t, ctx, b.cosign, "verify-blob", "--key", b.pubKey, "--signature", sig0,
		"--insecure-ignore-tlog=true", at(digests[2].Name)); err == nil {
		t.Errorf("cosign accepted %s's signature for %s:\n%s", digests[0].Name, digests[2].Name, out)
	}

	// The provenance says what GitHub's own attestation would.
	b.checkProvenance(t, at(prov))
}

func (b *bench) checkProvenance(t *testing.T, path string) {
	t.Helper()
	envs, err := core.ReadEnvelopes(path)
	if err != nil {
		t.Fatalf("provenance: %v", err)
	}
	env, payload := envs[0].Envelope, envs[0].Payload
	var st struct {
		Subject   []struct{ Name string }
		Predicate struct {
			BuildDefinition struct {
				BuildType          string
				ExternalParameters struct {
					Workflow      struct{ Ref, Repository, Path string }
					BuildAsserted map[string]string
				}
				InternalParameters struct {
					Github map[string]any
				}
				ResolvedDependencies []struct {
					URI    string
					Digest map[string]string
				}
			}
			RunDetails struct {
				Builder  struct{ ID string }
				Metadata struct{ InvocationID string }
			}
		}
	}
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatalf("statement: %v", err)
	}
	bd, rd := st.Predicate.BuildDefinition, st.Predicate.RunDetails
	checks := []struct{ field, got, want string }{
		{"payloadType", env.PayloadType, "application/vnd.in-toto+json"},
		{"buildType", bd.BuildType, "https://actions.github.io/buildtypes/workflow/v1"},
		{"externalParameters.workflow.repository", bd.ExternalParameters.Workflow.Repository, repoURL},
		{"externalParameters.workflow.path", bd.ExternalParameters.Workflow.Path, ".github/workflows/sign.yml"},
		{"externalParameters.workflow.ref", bd.ExternalParameters.Workflow.Ref, "refs/heads/main"},
		// from the event payload (GITHUB_EVENT_PATH), marked as build-asserted
		{"externalParameters.buildAsserted[event.head_commit.id]", bd.ExternalParameters.BuildAsserted["event.head_commit.id"], b.headSHA},
		{"externalParameters.buildAsserted[event.sender]", bd.ExternalParameters.BuildAsserted["event.sender"], "octocat"},
		{"internalParameters.github.repository_id", fmt.Sprint(bd.InternalParameters.Github["repository_id"]), testbench.GitHubRepositoryID},
		{"internalParameters.github.event_name", fmt.Sprint(bd.InternalParameters.Github["event_name"]), "push"},
		{"runDetails.builder.id", rd.Builder.ID, testbench.GitHubServerURL + "/" + testbench.GitHubRepository + "/.github/workflows/sign.yml@refs/heads/main"},
		{"runDetails.metadata.invocationId", rd.Metadata.InvocationID, repoURL + "/actions/runs/" + testbench.GitHubRunID + "/attempts/1"},
	}
	if len(bd.ResolvedDependencies) == 0 {
		t.Fatal("no resolvedDependencies")
	}
	checks = append(checks,
		struct{ field, got, want string }{"resolvedDependencies[0].uri", bd.ResolvedDependencies[0].URI, "git+" + repoURL + "@refs/heads/main"},
		struct{ field, got, want string }{"resolvedDependencies[0].digest.gitCommit", bd.ResolvedDependencies[0].Digest["gitCommit"], b.headSHA})
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("provenance %s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if len(st.Subject) != 3 {
		t.Errorf("statement has %d subjects, want 3", len(st.Subject))
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// auditRecords reads the signer's audit log (JSON lines).
func auditRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	recs, err := testbench.AuditRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Fatalf("audit log %s is missing or empty", path)
	}
	return recs
}

func lastAuditSeq(t *testing.T, path string) uint64 {
	recs := auditRecords(t, path)
	seq, err := strconv.ParseUint(fmt.Sprint(recs[len(recs)-1]["seq"]), 10, 64)
	if err != nil {
		t.Fatalf("last audit record has no sequence number: %v", recs[len(recs)-1])
	}
	return seq
}

// lastAuditReason is the reason of the signer's last (refusal) record: what
// the annotation must carry.
func lastAuditReason(t *testing.T, path string) string {
	recs := auditRecords(t, path)
	reason, _ := recs[len(recs)-1]["reason"].(string)
	if reason == "" {
		t.Fatalf("last audit record has no reason: %v", recs[len(recs)-1])
	}
	return reason
}

// unusedAddr is a loopback address nothing listens on.
func unusedAddr(t *testing.T) string {
	addr, err := testbench.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
