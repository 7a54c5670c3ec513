package jenkins

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/testbench"
)

// e2e is a signer on SoftHSM2 trusting two Jenkins issuers (the plugin's
// default RS256 and its ES256 option, both with the recommended claim
// templates), plus a third Jenkins the signer does not know.
type e2e struct {
	bins    testbench.Binaries
	cosign  string
	ca      *testbench.CA
	jenkins *testbench.JenkinsIssuer // trusted, RS256
	es256   *testbench.JenkinsIssuer // trusted, ES256
	other   *testbench.JenkinsIssuer // another Jenkins, not trusted
	signer  *testbench.Signer
	pubKey  string // the HSM key's public key (what a verifier pins)
}

const e2eKey = "release"

func setupE2E(t *testing.T) *e2e {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	e := &e2e{}
	var err error
	if e.cosign, err = testbench.FindTool("cosign"); err != nil {
		t.Fatalf("cosign is required: %v", err)
	}
	built := make(chan error, 1)
	go func() {
		var err error
		e.bins, err = testbench.BuildBinaries(ctx, filepath.Join(dir, "bin"))
		built <- err
	}()
	if e.ca, err = testbench.NewCA(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	if e.jenkins, err = testbench.StartJenkinsIssuer(ctx, e.ca, testbench.IssuerOptions{JenkinsClaimTemplates: true}); err != nil {
		t.Fatal(err)
	}
	if e.es256, err = testbench.StartJenkinsIssuer(ctx, e.ca, testbench.IssuerOptions{JenkinsClaimTemplates: true, Alg: "ES256"}); err != nil {
		t.Fatal(err)
	}
	if e.other, err = testbench.StartJenkinsIssuer(ctx, e.ca, testbench.IssuerOptions{JenkinsClaimTemplates: true}); err != nil {
		t.Fatal(err)
	}
	hsm, err := testbench.NewSoftHSM(ctx, filepath.Join(dir, "hsm"))
	if err != nil {
		t.Fatal(err)
	}
	uri, err := hsm.CreateKey(e2eKey, "ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	e.pubKey = hsm.PublicKeyPath(e2eKey)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	cfg := testbench.SignerConfig{
		Audience: testbench.DefaultAudience,
		Issuers: []testbench.SignerIssuer{
			testbench.IssuerEntry("jenkins", e.jenkins.Issuer),
			testbench.IssuerEntry("jenkins-es256", e.es256.Issuer),
		},
		Keys: []testbench.SignerKey{{
			Name: e2eKey, Purpose: "code", URI: uri,
			Allow: []testbench.AllowRule{
				// the main branch of the demo job, from its repository (docs/jenkins.md)
				{Issuer: "jenkins", Claims: map[string]string{
					"sub": e.jenkins.JobURL, "git_url": testbench.JenkinsGitURL, "branch": "main",
				}},
				// any branch job of the demo multibranch project
				{Issuer: "jenkins-es256", Claims: map[string]string{
					"sub": e.es256.JenkinsURL + "job/signet-ci/job/demo/job/*/",
				}},
			},
		}},
	}
	e.signer, err = testbench.StartSigner(ctx, testbench.SignerOptions{
		Signetd: e.bins.Signetd, Dir: filepath.Join(dir, "signer"), CA: e.ca, Config: cfg, Env: hsm.Env(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("signetd log:\n%s", e.signer.LogTail(40))
		}
		e.signer.Stop() //nolint:errcheck
	})
	return e
}

// newWorkspace makes a Jenkins workspace with two build outputs.
func newWorkspace(t *testing.T) string {
	t.Helper()
	ws := filepath.Join(t.TempDir(), "workspace", "signet-ci_demo_main")
	if err := os.MkdirAll(filepath.Join(ws, "dist"), 0o755); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 1<<20)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "dist", "app.tar.gz"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "dist", "app.sbom.json"), []byte(`{"bomFormat":"CycloneDX"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return ws
}

type cmdResult struct {
	exit           int
	stdout, stderr string
}

// run runs bin in dir with exactly env plus PATH and HOME, as a Jenkins
// agent runs a build step.
func run(t *testing.T, dir string, env map[string]string, bin string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cmdResult{stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run %s: %v", bin, err)
		}
		res.exit = ee.ExitCode()
	}
	return res
}

func (e *e2e) sign(t *testing.T, ws string, env map[string]string, extra ...string) cmdResult {
	t.Helper()
	args := append([]string{"sign", "--signer", e.signer.URL, "--audience", testbench.DefaultAudience, "--key", e2eKey}, extra...)
	args = append(args, "dist/*")
	return run(t, ws, env, e.bins.Signet, args...)
}

func (e *e2e) auditCount(t *testing.T) int {
	t.Helper()
	recs, err := testbench.AuditRecords(e.signer.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

func mustExist(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("output %s missing or empty: %v", p, err)
		}
	}
}

// noOutputs asserts a refused run left nothing behind.
func noOutputs(t *testing.T, ws string) {
	t.Helper()
	for _, p := range []string{"dist/app.tar.gz.sig", "dist/app.sbom.json.sig", "provenance.intoto.jsonl", "signer.pub"} {
		if _, err := os.Stat(filepath.Join(ws, p)); err == nil {
			t.Errorf("a refused run wrote %s", p)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(ws, "*.tmp"))
	if len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}

func (e *e2e) cosignVerify(t *testing.T, ws, pub string, artifacts ...string) {
	t.Helper()
	for _, a := range artifacts {
		r := run(t, ws, nil, e.cosign, "verify-blob", "--key", pub, "--signature", a+".sig", "--insecure-ignore-tlog=true", a)
		if r.exit != 0 {
			t.Errorf("cosign verify-blob %s: exit %d\n%s%s", a, r.exit, r.stdout, r.stderr)
		}
	}
}

func (e *e2e) cosignVerifyAttestation(t *testing.T, ws, pub, prov string, artifacts ...string) {
	t.Helper()
	for _, a := range artifacts {
		r := run(t, ws, nil, e.cosign, "verify-blob-attestation", "--key", pub, "--signature", prov,
			"--type", "slsaprovenance1", "--insecure-ignore-tlog=true", a)
		if r.exit != 0 {
			t.Errorf("cosign verify-blob-attestation %s: exit %d\n%s%s", a, r.exit, r.stdout, r.stderr)
		}
	}
}

// statement decodes the first DSSE envelope of a provenance file.
func statement(t *testing.T, path string) map[string]any {
	t.Helper()
	envs, err := core.ReadEnvelopes(path)
	if err != nil {
		t.Fatal(err)
	}
	if pt := envs[0].Envelope.PayloadType; pt != core.PayloadTypeInToto {
		t.Errorf("payloadType = %q", pt)
	}
	var st map[string]any
	if err := json.Unmarshal(envs[0].Payload, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// at walks a decoded JSON document: at(doc, "predicate", "runDetails", ...).
func at(v any, path ...string) any {
	for _, p := range path {
		switch m := v.(type) {
		case map[string]any:
			v = m[p]
		case []any:
			var i int
			if _, err := fmt.Sscan(p, &i); err != nil || i >= len(m) {
				return nil
			}
			v = m[i]
		default:
			return nil
		}
	}
	return v
}

// TestEndToEnd: a Jenkins-shaped build (Jenkins' environment, a token as the
// OpenID Connect Provider plugin mints it) signs and attests through the real
// signetd on SoftHSM2, directly and through the signetSign pipeline step;
// outputs verify with signet and cosign; bad tokens and jobs are refused.
func TestEndToEnd(t *testing.T) {
	e := setupE2E(t)

	t.Run("signet sign in a Jenkins build", func(t *testing.T) {
		ws := newWorkspace(t)
		tok, err := e.jenkins.Mint(nil)
		if err != nil {
			t.Fatal(err)
		}
		env := e.jenkins.Env(ws, tok)
		outFile := ws + "@tmp/signet-outputs.json"
		env["SIGNET_OUTPUTS"] = outFile
		before := e.auditCount(t)
		r := e.sign(t, ws, env) // --platform auto: the adapter must detect Jenkins
		if r.exit != 0 {
			t.Fatalf("signet sign: exit %d\nstdout: %s\nstderr: %s", r.exit, r.stdout, r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, tok) {
			t.Error("signet printed the token")
		}
		arts := []string{"dist/app.sbom.json", "dist/app.tar.gz"}
		mustExist(t, filepath.Join(ws, "dist/app.tar.gz.sig"), filepath.Join(ws, "dist/app.sbom.json.sig"),
			filepath.Join(ws, "provenance.intoto.jsonl"), filepath.Join(ws, "signer.pub"), outFile)

		// The outputs file the signetSign step reads.
		var out outputs
		b, err := os.ReadFile(outFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("outputs file: %v\n%s", err, b)
		}
		if out.Key.Name != e2eKey || out.Key.Algorithm != "ecdsa-p256" || len(out.Signatures) != 2 || out.Provenance == "" || out.PublicKey == "" || out.AuditSeq == 0 {
			t.Errorf("outputs file = %+v", out)
		}

		// signet verify with the pinned HSM key and the identity expectations.
		r = run(t, ws, nil, e.bins.Signet, "verify", "--public-key", e.pubKey, "--provenance", "provenance.intoto.jsonl",
			"--source-repo", testbench.JenkinsGitURL, "--ref", "main", "--builder-id", e.jenkins.JobURL, arts[0], arts[1])
		if r.exit != 0 {
			t.Errorf("signet verify: exit %d\n%s%s", r.exit, r.stdout, r.stderr)
		}
		r = run(t, ws, nil, e.bins.Signet, "verify", "--public-key", e.pubKey, "--provenance", "provenance.intoto.jsonl",
			"--builder-id", e.jenkins.JenkinsURL+"job/other/", arts[1])
		if r.exit != 1 {
			t.Errorf("signet verify with another job as --builder-id: exit %d, want 1\n%s%s", r.exit, r.stdout, r.stderr)
		}
		// cosign, with the key signet wrote and with the pinned HSM key.
		e.cosignVerify(t, ws, "signer.pub", arts...)
		e.cosignVerify(t, ws, e.pubKey, arts...)
		e.cosignVerifyAttestation(t, ws, e.pubKey, "provenance.intoto.jsonl", arts...)

		// The statement: identity from the token, Jenkins facts per docs/jenkins.md.
		st := statement(t, filepath.Join(ws, "provenance.intoto.jsonl"))
		if b, err := json.Marshal(at(st, "predicate", "buildDefinition")); err == nil {
			t.Logf("buildDefinition: %s", b)
		}
		jobURL := e.jenkins.JobURL
		checks := []struct {
			path []string
			want any
		}{
			{[]string{"predicate", "buildDefinition", "buildType"}, buildType},
			{[]string{"predicate", "runDetails", "builder", "id"}, jobURL},
			{[]string{"predicate", "runDetails", "metadata", "invocationId"}, jobURL + "42/"},
			{[]string{"predicate", "buildDefinition", "resolvedDependencies", "0", "uri"}, "git+" + testbench.JenkinsGitURL + "@main"},
			{[]string{"predicate", "buildDefinition", "resolvedDependencies", "0", "digest", "gitCommit"}, testbench.JenkinsGitCommit},
			{[]string{"predicate", "buildDefinition", "externalParameters", "job"}, jobURL},
			{[]string{"predicate", "buildDefinition", "externalParameters", "job_name"}, "signet-ci/demo/main"},
			{[]string{"predicate", "buildDefinition", "externalParameters", "source", "repository"}, testbench.JenkinsGitURL},
			{[]string{"predicate", "buildDefinition", "externalParameters", "source", "commit"}, testbench.JenkinsGitCommit},
			{[]string{"predicate", "buildDefinition", "externalParameters", "source", "branch"}, "main"},
			// GIT_BRANCH=origin/main is not what the branch claim says: build-asserted.
			{[]string{"predicate", "buildDefinition", "externalParameters", "buildAsserted", "GIT_BRANCH"}, "origin/main"},
			{[]string{"predicate", "buildDefinition", "externalParameters", "buildAsserted", "NODE_NAME"}, "built-in"},
			{[]string{"predicate", "buildDefinition", "externalParameters", "buildAsserted", "GIT_COMMIT"}, nil},
			{[]string{"predicate", "buildDefinition", "internalParameters", "jenkins_url"}, e.jenkins.JenkinsURL},
			{[]string{"predicate", "buildDefinition", "internalParameters", "build_url"}, jobURL + "42/"},
			{[]string{"predicate", "buildDefinition", "internalParameters", "build_number"}, "42"},
		}
		for _, c := range checks {
			if got := at(st, c.path...); fmt.Sprint(got) != fmt.Sprint(c.want) && !(c.want == nil && got == nil) {
				t.Errorf("%s = %v, want %v", strings.Join(c.path, "."), got, c.want)
			}
		}

		// The signer audited both calls as allowed, for this job.
		recs, err := testbench.AuditRecords(e.signer.AuditPath)
		if err != nil {
			t.Fatal(err)
		}
		ops := map[string]bool{}
		for _, rec := range recs[before:] {
			if rec["decision"] != "allow" || rec["subject"] != jobURL || rec["key"] != e2eKey {
				t.Errorf("audit record %v", rec)
			}
			ops[fmt.Sprint(rec["operation"])] = true
		}
		if !ops["sign"] || !ops["attest"] {
			t.Errorf("audit records %v lack sign and attest", recs[before:])
		}
		if out, err := testbench.AuditVerify(context.Background(), e.bins.Signetd, e.signer.AuditPath); err != nil {
			t.Errorf("audit chain: %v\n%s", err, out)
		}
	})

	t.Run("ES256 credential, as-file binding", func(t *testing.T) {
		ws := newWorkspace(t)
		tok, err := e.es256.Mint(nil)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(ws+"@tmp", "secretFiles", "id_token.txt")
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		env := e.es256.Env(ws, "")
		delete(env, "SIGNET_ID_TOKEN")
		env["SIGNET_ID_TOKEN_FILE"] = f
		r := e.sign(t, ws, env, "--platform", "jenkins", "--output-dir", "signed")
		if r.exit != 0 {
			t.Fatalf("signet sign: exit %d\n%s%s", r.exit, r.stdout, r.stderr)
		}
		arts := []string{"dist/app.sbom.json", "dist/app.tar.gz"}
		for _, a := range arts {
			r := run(t, ws, nil, e.cosign, "verify-blob", "--key", e.pubKey, "--signature", "signed/"+a+".sig", "--insecure-ignore-tlog=true", a)
			if r.exit != 0 {
				t.Errorf("cosign verify-blob %s: %s%s", a, r.stdout, r.stderr)
			}
		}
		e.cosignVerifyAttestation(t, ws, e.pubKey, "signed/provenance.intoto.jsonl", arts...)
		r = run(t, ws, nil, e.bins.Signet, "verify", "--public-key", e.pubKey, "--provenance", "signed/provenance.intoto.jsonl",
			"--signature", "signed/dist/app.tar.gz.sig", "--builder-id", e.es256.JobURL, "dist/app.tar.gz")
		if r.exit != 0 {
			t.Errorf("signet verify: exit %d\n%s%s", r.exit, r.stdout, r.stderr)
		}
	})

	t.Run("signetSign step with sh really executed", func(t *testing.T) {
		for _, credType := range []string{"string", "file"} {
			t.Run(credType, func(t *testing.T) {
				ws := newWorkspace(t)
				tok, err := e.jenkins.Mint(nil)
				if err != nil {
					t.Fatal(err)
				}
				env := e.jenkins.Env(ws, "")
				delete(env, "SIGNET_ID_TOKEN") // only withCredentials binds it
				env["WORKSPACE_TMP"] = ws + "@tmp"
				env["PATH"] = os.Getenv("PATH")
				env["HOME"] = os.Getenv("HOME")
				res := runHarness(t, harnessConfig{
					Exec: true,
					Args: map[string]any{
						"key": e2eKey, "artifacts": "dist/*", "credentialsId": "signet-oidc", "credentialsType": credType,
						"signerUrl": e.signer.URL, "audience": testbench.DefaultAudience,
						"caCert": e.ca.CAPath, "signet": e.bins.Signet,
					},
					Env:         env,
					Credentials: map[string]harnessCredential{"signet-oidc": {Type: credType, Secret: tok}},
				})
				if res.Error != "" {
					sh := res.find("sh")
					out := ""
					if len(sh) > 0 {
						out = sh[0].Output
					}
					t.Fatalf("signetSign failed: %s\n%s", res.Error, out)
				}
				sh := res.find("sh")[0]
				if strings.Contains(sh.Output, tok) {
					t.Error("the build log shows the token")
				}
				if !strings.Contains(sh.Output, "+ "+e.bins.Signet+" sign --platform jenkins") {
					t.Errorf("build log lacks the traced command:\n%s", sh.Output)
				}
				sigs, _ := res.Result["signatures"].([]any)
				if len(sigs) != 2 {
					t.Fatalf("returned signatures = %v", res.Result["signatures"])
				}
				if res.Result["key"] != e2eKey || res.Result["provenance"] == nil {
					t.Errorf("returned map = %v", res.Result)
				}
				archived := fmt.Sprint(res.Result["archived"])
				for _, want := range []string{"dist/app.tar.gz.sig", "dist/app.sbom.json.sig", "provenance.intoto.jsonl", "signer.pub"} {
					if !strings.Contains(archived, want) {
						t.Errorf("archived %s lacks %s", archived, want)
					}
				}
				arts := []string{"dist/app.sbom.json", "dist/app.tar.gz"}
				e.cosignVerify(t, ws, e.pubKey, arts...)
				e.cosignVerifyAttestation(t, ws, e.pubKey, fmt.Sprint(res.Result["provenance"]), arts...)
			})
		}
	})

	t.Run("refusals", func(t *testing.T) {
		intruder := e.jenkins.JenkinsURL + "job/intruder/"
		tests := []struct {
			name    string
			issuer  *testbench.JenkinsIssuer
			claims  map[string]any
			env     map[string]string // overrides of the Jenkins env
			extra   []string          // extra signet sign flags
			audited bool              // the request reached the signer (a deny record)
			want    []string          // in stderr
		}{
			{
				name: "credential without audience", issuer: e.jenkins, claims: map[string]any{"aud": nil},
				want: []string{"has no aud claim", `set its Audience to "` + testbench.DefaultAudience + `"`},
			},
			{
				name: "credential for another audience", issuer: e.jenkins, claims: map[string]any{"aud": "sts.amazonaws.com"},
				want: []string{`"sts.amazonaws.com"`, `"` + testbench.DefaultAudience + `"`},
			},
			{
				// core checks aud for every token source, so --token-env does not
				// bypass it: refused before any request (the signer's own refusal
				// of aud-less tokens is tested in signer/ and the testbench).
				name: "no audience, adapter bypassed with --token-env", issuer: e.jenkins, claims: map[string]any{"aud": nil},
				env: map[string]string{"MY_TOKEN": "$TOKEN"}, extra: []string{"--token-env", "MY_TOKEN"}, audited: false,
				want: []string{"--token-env MY_TOKEN", "no aud claim"},
			},
			{
				name: "token from another Jenkins", issuer: e.other, audited: true,
				want: []string{"issuer is not configured on this signer"},
			},
			{
				name: "job outside the policy", issuer: e.jenkins, claims: map[string]any{"sub": intruder},
				env:     map[string]string{"JOB_URL": intruder, "BUILD_URL": intruder + "42/", "JOB_NAME": "intruder"},
				audited: true,
				want:    []string{"policy_denied", `claim "sub" is "` + intruder + `"`},
			},
			{
				name: "branch outside the policy", issuer: e.jenkins, claims: map[string]any{"branch": "feature/x"},
				env:     map[string]string{"BRANCH_NAME": "feature/x", "GIT_BRANCH": "origin/feature/x"},
				audited: true,
				want:    []string{"policy_denied", `claim "branch" is "feature/x", rule wants "main"`},
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ws := newWorkspace(t)
				tok, err := tt.issuer.Mint(tt.claims)
				if err != nil {
					t.Fatal(err)
				}
				env := tt.issuer.Env(ws, tok)
				for k, v := range tt.env {
					env[k] = strings.ReplaceAll(v, "$TOKEN", tok)
				}
				before := e.auditCount(t)
				r := e.sign(t, ws, env, tt.extra...)
				if r.exit != 1 {
					t.Fatalf("signet sign: exit %d, want 1\nstdout: %s\nstderr: %s", r.exit, r.stdout, r.stderr)
				}
				t.Logf("refused as expected: %s", strings.TrimSpace(r.stderr))
				for _, w := range tt.want {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
					}
				}
				if strings.Contains(r.stdout+r.stderr, tok) {
					t.Error("the refusal message shows the token")
				}
				noOutputs(t, ws)
				after := e.auditCount(t)
				switch {
				case tt.audited && after == before:
					t.Error("the signer has no audit record of the refusal")
				case !tt.audited && after != before:
					t.Errorf("the adapter should have refused before calling the signer, but %d audit record(s) appeared", after-before)
				}
				if tt.audited {
					recs, _ := testbench.AuditRecords(e.signer.AuditPath)
					for _, rec := range recs[before:] {
						if rec["decision"] != "deny" {
							t.Errorf("audit record of a refusal: %v", rec)
						}
					}
				}
			})
		}
	})
}
