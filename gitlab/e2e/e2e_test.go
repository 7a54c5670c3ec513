// Package e2e runs the GitLab CI/CD component end to end: a real
// .gitlab-ci.yml (gitlab/testdata/e2e) that includes gitlab/templates/sign.yml
// with a local include runs under gitlab-ci-local (shell executor, job
// isolation so outputs travel only as job artifacts), with an ID token minted
// by the testbench's GitLab issuer, against the real signetd on SoftHSM2; the
// outputs are verified in the pipeline and again here with signet verify and
// cosign. Publishing goes to a fake GitLab API that follows the documented
// endpoints.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/gitlab"
	"github.com/signet-ci/signet/gitlab/internal/fakegitlab"
	"github.com/signet-ci/signet/testbench"
)

const jobToken = "e2e-job-token"

type env struct {
	root    string // module root
	dir     string
	repo    string // the pipeline's project (a git repository)
	issuer  *testbench.GitLabIssuer
	signer  *testbench.Signer
	bins    testbench.Binaries
	cosign  string
	glci    string
	ca      *testbench.CA
	api     *fakegitlab.Server
	pubPath string
}

func setup(t *testing.T, ctx context.Context) *env {
	t.Helper()
	e := &env{dir: t.TempDir()}
	var err error
	if e.glci, err = testbench.FindTool("gitlab-ci-local"); err != nil {
		t.Fatalf("%v (npm install -g gitlab-ci-local@4.65.1)", err)
	}
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Fatalf("rsync not found (gitlab-ci-local --shell-isolation needs it; apt-get install rsync): %v", err)
	}
	if e.cosign, err = testbench.FindTool("cosign"); err != nil {
		t.Fatal(err)
	}
	if e.root, err = testbench.ModuleRoot(); err != nil {
		t.Fatal(err)
	}
	if e.ca, err = testbench.NewCA(filepath.Join(e.dir, "ca")); err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if e.issuer, err = testbench.StartGitLabIssuer(ictx, e.ca, testbench.IssuerOptions{}); err != nil {
		t.Fatal(err)
	}
	hsm, err := testbench.NewSoftHSM(ctx, filepath.Join(e.dir, "hsm"))
	if err != nil {
		t.Fatal(err)
	}
	uri, err := hsm.CreateKey("release", "ecdsa-p256")
	if err != nil {
		t.Fatal(err)
	}
	e.pubPath = hsm.PublicKeyPath("release")
	if e.bins, err = testbench.BuildBinaries(ctx, filepath.Join(e.dir, "bin")); err != nil {
		t.Fatal(err)
	}
	e.signer, err = testbench.StartSigner(ctx, testbench.SignerOptions{
		Signetd: e.bins.Signetd, Dir: filepath.Join(e.dir, "signer"), CA: e.ca, Env: hsm.Env(),
		Config: testbench.SignerConfig{
			Audience: testbench.DefaultAudience,
			Issuers:  []testbench.SignerIssuer{testbench.IssuerEntry("gitlab", e.issuer.Issuer)},
			Keys: []testbench.SignerKey{{
				Name: "release", Purpose: "firmware", URI: uri,
				Allow: []testbench.AllowRule{
					{Issuer: "gitlab", Claims: map[string]string{
						"project_id": testbench.GitLabProjectID, "namespace_id": testbench.GitLabNamespaceID, "ref_type": "branch", "ref": "main",
					}},
					{Issuer: "gitlab", Claims: map[string]string{
						"project_id": testbench.GitLabProjectID, "namespace_id": testbench.GitLabNamespaceID, "ref_type": "tag", "ref": "v*",
					}},
				},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.signer.Stop(); err != nil {
			t.Logf("stop signetd: %v", err)
		}
		if t.Failed() {
			t.Logf("signetd log:\n%s", e.signer.LogTail(40))
		}
	})
	e.api = fakegitlab.Start(testbench.GitLabProjectID, testbench.GitLabProjectPath, jobToken)
	t.Cleanup(e.api.Close)

	// The pipeline's project: the fixture as .gitlab-ci.yml and the component
	// at the same path as in this repository, so the local include resolves
	// exactly as it does in the repository.
	e.repo = filepath.Join(e.dir, "project")
	copyFile(t, filepath.Join(e.root, "gitlab", "testdata", "e2e", ".gitlab-ci.yml"), filepath.Join(e.repo, ".gitlab-ci.yml"))
	copyFile(t, filepath.Join(e.root, "gitlab", "templates", "sign.yml"), filepath.Join(e.repo, "gitlab", "templates", "sign.yml"))
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "-A"},
		{"-c", "user.name=Signet E2E", "-c", "user.email=e2e@signet.test", "commit", "-q", "-m", "pipeline"},
		{"remote", "add", "origin", e.issuer.BaseURL + "/" + testbench.GitLabProjectPath + ".git"},
	} {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = e.repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return e
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pipeline runs gitlab-ci-local in the project with vars (and job names).
func (e *env) pipeline(t *testing.T, ctx context.Context, vars map[string]string, jobs ...string) (string, error) {
	t.Helper()
	args := []string{
		"--cwd", ".", "--home", filepath.Join(e.dir, "glci-home"),
		"--shell-isolation", "--no-color", "--json-schema-validation", "--timestamps",
		"--ignore-predefined-vars", "CI_SERVER_URL,CI_API_V4_URL,CI_PROJECT_ID,CI_JOB_TOKEN,CI_COMMIT_TAG",
	}
	for k, v := range vars {
		args = append(args, "--variable", k+"="+v)
	}
	if len(jobs) > 0 {
		args = append(args, "--needs")
		args = append(args, jobs...)
	}
	cmd := exec.CommandContext(ctx, e.glci, args...)
	cmd.Dir = e.repo
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("gitlab-ci-local %s took %s", strings.Join(jobs, " "), time.Since(start).Round(time.Millisecond))
	if testing.Verbose() {
		t.Logf("gitlab-ci-local output:\n%s", out.String())
	}
	return out.String(), err
}

func (e *env) baseVars() map[string]string {
	return map[string]string{
		"E2E_SIGNER_URL": e.signer.URL,
		"E2E_CA_CERT":    e.ca.CAPath,
		"E2E_SIGNET":     e.bins.Signet,
		"E2E_COSIGN":     e.cosign,
		// The identity {server} is the token's iss; the verify job builds
		// the expected source repository from CI_SERVER_URL.
		"CI_SERVER_URL": e.issuer.BaseURL,
		// The component's default installer builds signet from this source
		// with Go, offline (module cache).
		"SIGNET_INSTALL_SOURCE": e.root,
	}
}

// pipelineCase is one run of the e2e pipeline.
type pipelineCase struct {
	name    string
	claims  map[string]any    // token claims over the GitLab defaults
	vars    map[string]string // extra gitlab-ci-local variables
	ref     string            // the source ref the provenance must name
	version string            // generic package version the files go to
	tag     string            // release tag whose links must be created ("" none)
}

func TestComponentPipeline(t *testing.T) {
	for _, tc := range []pipelineCase{
		{
			name: "branch", ref: "refs/heads/main", version: "1.0.0",
			vars: map[string]string{"SIGNET_GITLAB_PACKAGE_VERSION": "1.0.0", "E2E_REF_GLOB": "refs/heads/*"},
		},
		{
			name: "tag", ref: "refs/tags/v1.2.0", version: "v1.2.0", tag: "v1.2.0",
			claims: map[string]any{
				"ref": "v1.2.0", "ref_type": "tag", "ref_path": "refs/tags/v1.2.0",
				"sub": "project_path:" + testbench.GitLabProjectPath + ":ref_type:tag:ref:v1.2.0",
			},
			vars: map[string]string{"CI_COMMIT_TAG": "v1.2.0", "E2E_REF_GLOB": "refs/tags/v*"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) { runPipelineCase(t, tc) })
	}
}

func runPipelineCase(t *testing.T, tc pipelineCase) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	e := setup(t, ctx)

	claims := map[string]any{}
	for k, v := range tc.claims {
		claims[k] = v
	}
	configURI := e.issuer.Host() + "/" + testbench.GitLabProjectPath + "//.gitlab-ci.yml@" + tc.ref
	claims["ci_config_ref_uri"] = configURI
	token, err := e.issuer.Mint(claims)
	if err != nil {
		t.Fatal(err)
	}
	vars := e.baseVars()
	vars["SIGNET_ID_TOKEN"] = token
	vars["SIGNET_GITLAB_PUBLISH"] = "true"
	vars["CI_API_V4_URL"] = e.api.APIURL()
	vars["CI_JOB_TOKEN"] = jobToken
	vars["CI_PROJECT_ID"] = testbench.GitLabProjectID
	for k, v := range tc.vars {
		vars[k] = v
	}
	if tc.tag != "" {
		e.api.Lock()
		e.api.Releases[tc.tag] = nil
		e.api.Unlock()
	}

	out, err := e.pipeline(t, ctx, vars)
	if err != nil {
		t.Fatalf("pipeline failed: %v\n%s", err, out)
	}
	for _, job := range []string{"build", "signet-sign", "verify"} {
		if !jobResult(out, "PASS", job) {
			t.Errorf("job %s did not pass:\n%s", job, out)
		}
	}
	if !strings.Contains(out, "building signet from the source in "+e.root) {
		t.Errorf("the component did not build signet from source:\n%s", out)
	}
	if strings.Contains(out, token) {
		t.Errorf("the job log shows the ID token")
	}

	// The outputs travelled as job artifacts (shell isolation: every job runs
	// in its own copy of the project).
	arts := filepath.Join(e.repo, ".gitlab-ci-local", "artifacts")
	signOut := filepath.Join(arts, "signet-sign", "signet-out")
	signerPub := filepath.Join(signOut, "signer.pub")
	prov := filepath.Join(signOut, "provenance.intoto.jsonl")
	hsmPub, _ := os.ReadFile(e.pubPath)
	if got, err := os.ReadFile(signerPub); err != nil || !bytes.Contains(got, bytes.TrimSpace(hsmPub)) {
		t.Fatalf("signer.pub artifact (%v) does not hold the HSM key\n%s", err, got)
	}
	for _, a := range []string{"dist/firmware.bin", "dist/app.tar.gz"} {
		artifact := filepath.Join(arts, "build", a)
		sig := filepath.Join(signOut, a+".sig")
		verify := exec.CommandContext(ctx, e.bins.Signet, "verify", "--public-key", e.pubPath, "--signature", sig,
			"--provenance", prov, "--source-repo", e.issuer.BaseURL+"/"+testbench.GitLabProjectPath,
			"--ref", tc.ref, "--builder-id", "https://"+configURI, artifact)
		if b, err := verify.CombinedOutput(); err != nil {
			t.Errorf("signet verify %s: %v\n%s", a, err, b)
		}
		for _, args := range [][]string{
			{"verify-blob", "--key", e.pubPath, "--signature", sig, "--insecure-ignore-tlog=true", artifact},
			{"verify-blob-attestation", "--key", e.pubPath, "--signature", prov, "--type", "slsaprovenance1", "--insecure-ignore-tlog=true", artifact},
		} {
			if b, err := exec.CommandContext(ctx, e.cosign, args...).CombinedOutput(); err != nil {
				t.Errorf("cosign %s %s: %v\n%s", args[0], a, err, b)
			}
		}
	}
	// A tampered artifact must fail both verifiers.
	tampered := filepath.Join(e.dir, "tampered.bin")
	orig, _ := os.ReadFile(filepath.Join(arts, "build", "dist", "firmware.bin"))
	if err := os.WriteFile(tampered, append(orig, '!'), 0o644); err != nil {
		t.Fatal(err)
	}
	tsig := filepath.Join(signOut, "dist", "firmware.bin.sig")
	if b, err := exec.CommandContext(ctx, e.cosign, "verify-blob", "--key", e.pubPath, "--signature", tsig,
		"--insecure-ignore-tlog=true", tampered).CombinedOutput(); err == nil {
		t.Errorf("cosign accepted a tampered artifact:\n%s", b)
	}
	if b, err := exec.CommandContext(ctx, e.bins.Signet, "verify", "--public-key", e.pubPath, "--signature", tsig,
		tampered).CombinedOutput(); err == nil {
		t.Errorf("signet verify accepted a tampered artifact:\n%s", b)
	}

	// The provenance describes this GitLab job with the adapter's buildType.
	checkProvenance(t, prov, e, tc.ref)

	// Published to the (fake) generic package registry with the job token,
	// and linked from the release on the tag pipeline.
	files, releases, _ := e.api.Snapshot()
	published := map[string]string{
		"firmware.bin.sig":        filepath.Join(signOut, "dist", "firmware.bin.sig"),
		"app.tar.gz.sig":          filepath.Join(signOut, "dist", "app.tar.gz.sig"),
		"provenance.intoto.jsonl": prov,
		"signer.pub":              signerPub,
	}
	for name, local := range published {
		got, ok := files["demo-signatures/"+tc.version+"/"+name]
		want, _ := os.ReadFile(local)
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("package file %s (uploaded %v) differs from the job artifact %s; have %v", name, ok, local, keys(files))
		}
	}
	if tc.tag == "" {
		if len(releases) != 0 {
			t.Errorf("branch pipeline created release links: %v", releases)
		}
	} else {
		links := releases[tc.tag]
		if len(links) != len(published) {
			t.Errorf("release %s has %d links, want %d: %v", tc.tag, len(links), len(published), links)
		}
		for _, l := range links {
			name, _ := l["name"].(string)
			want := e.api.APIURL() + "/projects/" + testbench.GitLabProjectID + "/packages/generic/demo-signatures/" + tc.version + "/" + name
			if _, ok := published[name]; !ok || l["url"] != want || l["link_type"] != "other" {
				t.Errorf("release link %v, want name in %v, url %s, link_type other", l, keys2(published), want)
			}
		}
	}

	// signetd audited the signing with the job's identity.
	recs, err := testbench.AuditRecords(e.signer.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 2 {
		t.Fatalf("audit log has %d records, want sign + attest", len(recs))
	}
	if b, _ := json.Marshal(recs); !bytes.Contains(b, []byte(testbench.GitLabProjectID)) || !bytes.Contains(b, []byte(`"release"`)) {
		t.Errorf("audit records do not name project %s and key release: %s", testbench.GitLabProjectID, b)
	}
}

func checkProvenance(t *testing.T, path string, e *env, ref string) {
	t.Helper()
	envs, err := core.ReadEnvelopes(path)
	if err != nil {
		t.Fatalf("provenance: %v", err)
	}
	if pt := envs[0].Envelope.PayloadType; pt != core.PayloadTypeInToto {
		t.Errorf("provenance payloadType = %q, want %q", pt, core.PayloadTypeInToto)
	}
	var st map[string]any
	if err := json.Unmarshal(envs[0].Payload, &st); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"predicate.buildDefinition.buildType":                                 gitlab.BuildType,
		"predicate.buildDefinition.externalParameters.source.repository":      e.issuer.BaseURL + "/" + testbench.GitLabProjectPath,
		"predicate.buildDefinition.externalParameters.source.ref":             ref,
		"predicate.buildDefinition.externalParameters.buildAsserted.job_name": "signet-sign",
		"predicate.buildDefinition.internalParameters.job.job_id":             testbench.GitLabJobID,
		"predicate.buildDefinition.internalParameters.gitlab.project_id":      testbench.GitLabProjectID,
		"predicate.runDetails.metadata.invocationId":                          e.issuer.BaseURL + "/" + testbench.GitLabProjectPath + "/-/jobs/" + testbench.GitLabJobID,
	}
	for p, w := range want {
		if got := lookup(st, p); got != w {
			t.Errorf("provenance %s = %q, want %q", p, got, w)
		}
	}
}

// TestComponentWithoutIDToken runs the signing job without the id_tokens:
// variable: the job fails and its log shows the block to add.
func TestComponentWithoutIDToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := setup(t, ctx)
	vars := e.baseVars()
	vars["SIGNET_INSTALL_BIN"] = e.bins.Signet
	out, err := e.pipeline(t, ctx, vars, "signet-sign")
	if err == nil {
		t.Fatalf("the pipeline passed without an ID token:\n%s", out)
	}
	for _, want := range []string{
		"SIGNET_ID_TOKEN is empty or not set",
		"signet-sign >   id_tokens:",
		"signet-sign >     SIGNET_ID_TOKEN:",
		"signet-sign >       aud: " + testbench.DefaultAudience,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("job log lacks %q:\n%s", want, out)
		}
	}
	if !jobResult(out, "FAIL", "signet-sign") {
		t.Errorf("signet-sign is not reported as failed:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(e.repo, ".gitlab-ci-local", "artifacts", "signet-sign", "signet-out", "signer.pub")); err == nil {
		t.Errorf("a failed signing left outputs behind")
	}
}

// jobResult reports whether gitlab-ci-local's summary has a line
// " PASS  [ 1 s] job" (or FAIL) for job.
func jobResult(out, verdict, job string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == verdict && f[len(f)-1] == job {
			return true
		}
	}
	return false
}

func lookup(m map[string]any, path string) string {
	var cur any = m
	for _, part := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[part]
	}
	s, _ := cur.(string)
	return s
}

func keys2(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestComponentForkMergeRequestRefused runs the signing job with the token of
// a merge-request pipeline from a fork running in the project: project_* name
// the fork, job_project_* the project. A signer policy pinned to the
// project's project_id refuses it, and the job fails without outputs.
func TestComponentForkMergeRequestRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := setup(t, ctx)
	token, err := e.issuer.Mint(map[string]any{
		"project_id": "9001", "project_path": "mallory/demo", "namespace_id": "9000", "namespace_path": "mallory",
		"job_project_id": testbench.GitLabProjectID, "job_project_path": testbench.GitLabProjectPath,
		"job_namespace_id": testbench.GitLabNamespaceID, "job_namespace_path": testbench.GitLabNamespace,
		"pipeline_source": "merge_request_event", "ref": "feature", "ref_path": "refs/heads/feature", "ref_protected": "false",
		"sub": "project_path:mallory/demo:ref_type:branch:ref:feature",
	})
	if err != nil {
		t.Fatal(err)
	}
	vars := e.baseVars()
	vars["SIGNET_INSTALL_BIN"] = e.bins.Signet
	vars["SIGNET_ID_TOKEN"] = token
	out, err := e.pipeline(t, ctx, vars, "signet-sign")
	if err == nil {
		t.Fatalf("a fork merge-request pipeline got signatures:\n%s", out)
	}
	if !jobResult(out, "FAIL", "signet-sign") || !strings.Contains(out, "policy_denied") {
		t.Errorf("want signet-sign to fail with policy_denied:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(e.repo, ".gitlab-ci-local", "artifacts", "signet-sign", "signet-out", "signer.pub")); err == nil {
		t.Errorf("a refused signing left outputs behind")
	}
	recs, err := testbench.AuditRecords(e.signer.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(recs); !bytes.Contains(b, []byte("9001")) {
		t.Errorf("the refusal is not audited with the fork's project_id: %s", b)
	}
}
