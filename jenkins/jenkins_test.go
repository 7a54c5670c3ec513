package jenkins

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/signet-ci/signet/core"
)

const (
	testJenkins  = "https://ci.example.com/"
	testJobURL   = "https://ci.example.com/job/team/job/app/"
	testBuildURL = "https://ci.example.com/job/team/job/app/42/"
	testAudience = "https://signer.example.com"
	testGitURL   = "https://git.example.com/team/app.git"
	testCommit   = "0123456789abcdef0123456789abcdef01234567"
)

// jenkinsEnv is the environment Jenkins gives a pipeline build of job
// team/app #42 on agent linux-1 after `checkout scm` of a multibranch branch.
func jenkinsEnv() map[string]string {
	return map[string]string{
		"JENKINS_URL":  testJenkins,
		"JENKINS_HOME": "/var/jenkins_home",
		"JOB_URL":      testJobURL,
		"BUILD_URL":    testBuildURL,
		"JOB_NAME":     "team/app",
		"BUILD_NUMBER": "42",
		"NODE_NAME":    "linux-1",
		"GIT_URL":      testGitURL,
		"GIT_COMMIT":   testCommit,
		"GIT_BRANCH":   "main",
		"BRANCH_NAME":  "main",
		"WORKSPACE":    "/var/jenkins_home/workspace/team_app_main",
	}
}

func envFunc(m map[string]string) core.Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// pluginClaims are the claims the OpenID Connect Provider plugin puts in a
// build's token with its default build claim templates (sub = ${JOB_URL},
// build_number = ${BUILD_NUMBER} as an integer) for a credential with an
// audience; iss is the root issuer ${JENKINS_URL}oidc.
func pluginClaims() map[string]any {
	now := time.Now()
	return map[string]any{
		"iss":          testJenkins + "oidc",
		"aud":          testAudience,
		"sub":          testJobURL,
		"build_number": 42,
		"iat":          now.Unix(),
		"exp":          now.Add(time.Hour).Unix(),
	}
}

// mint signs claims RS256 with kid = the credential id, as the plugin does.
func mint(t *testing.T, claims map[string]any) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "signet-oidc"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"pipeline build", jenkinsEnv(), true},
		{"only JENKINS_URL and JENKINS_HOME", map[string]string{"JENKINS_URL": testJenkins, "JENKINS_HOME": "/var/jenkins_home"}, true},
		{"only JENKINS_URL and BUILD_URL", map[string]string{"JENKINS_URL": testJenkins, "BUILD_URL": testBuildURL}, true},
		{"JENKINS_URL alone", map[string]string{"JENKINS_URL": testJenkins}, false},
		{"no root URL configured", map[string]string{"JENKINS_HOME": "/var/jenkins_home", "BUILD_URL": "x"}, false},
		{"github actions", map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com"}, false},
		{"gitlab", map[string]string{"GITLAB_CI": "true", "CI_SERVER_URL": "https://gitlab.com"}, false},
		{"empty", map[string]string{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(envFunc(tt.env))
			if got := p.Detect(envFunc(tt.env)); got != tt.want {
				t.Fatalf("Detect = %v, want %v", got, tt.want)
			}
			if p.Name() != "jenkins" {
				t.Fatalf("Name = %q", p.Name())
			}
		})
	}
}

func TestIDToken(t *testing.T) {
	good := mint(t, pluginClaims())
	noAud := pluginClaims()
	delete(noAud, "aud")
	otherAud := pluginClaims()
	otherAud["aud"] = "sts.amazonaws.com"
	listAud := pluginClaims()
	listAud["aud"] = []string{"sts.amazonaws.com", testAudience}
	listTok := mint(t, listAud)

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "id-token")
	if err := os.WriteFile(tokenFile, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bigFile := filepath.Join(dir, "big")
	if err := os.WriteFile(bigFile, []byte(strings.Repeat("a", maxTokenFileBytes+1)), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		env     map[string]string
		want    string   // token wanted on success
		wantErr []string // substrings of the error
	}{
		{name: "string credential", env: map[string]string{tokenVar: good}, want: good},
		{name: "string credential with whitespace", env: map[string]string{tokenVar: " " + good + "\n"}, want: good},
		{name: "file credential", env: map[string]string{tokenFileVar: tokenFile}, want: good},
		{name: "aud list containing the audience", env: map[string]string{tokenVar: listTok}, want: listTok},
		{name: "nothing bound", env: map[string]string{},
			wantErr: []string{"no OIDC id token", "SIGNET_ID_TOKEN", "withCredentials([string(credentialsId: 'signet-oidc', variable: 'SIGNET_ID_TOKEN')])", "SIGNET_ID_TOKEN_FILE"}},
		{name: "empty variable", env: map[string]string{tokenVar: "  "}, wantErr: []string{"$SIGNET_ID_TOKEN is set but empty", "withCredentials"}},
		{name: "missing file", env: map[string]string{tokenFileVar: filepath.Join(dir, "nope")}, wantErr: []string{"read the id token from the file", "nope"}},
		{name: "oversized file", env: map[string]string{tokenFileVar: bigFile}, wantErr: []string{"larger than", "not an id token"}},
		{name: "not a JWT", env: map[string]string{tokenVar: "s3cr3t-password"}, wantErr: []string{"not a JWT", "OpenID Connect id token"}},
		{name: "bad payload", env: map[string]string{tokenVar: "a.!!!.c"}, wantErr: []string{"not base64url"}},
		{name: "credential without audience", env: map[string]string{tokenVar: mint(t, noAud)},
			wantErr: []string{"$SIGNET_ID_TOKEN", "has no aud claim", "refuses", `set its Audience to "` + testAudience + `"`}},
		{name: "credential for another audience", env: map[string]string{tokenVar: mint(t, otherAud)},
			wantErr: []string{`aud is "sts.amazonaws.com"`, `signer's audience (--audience) is "` + testAudience + `"`, `set its Audience to "` + testAudience + `"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := New(envFunc(tt.env)).IDToken(context.Background(), testAudience)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("IDToken succeeded, want error containing %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("IDToken: %v", err)
			}
			if tt.want != "" && got != tt.want {
				t.Fatalf("IDToken = %q, want %q", got, tt.want)
			}
			if len(strings.Split(got, ".")) != 3 {
				t.Fatalf("IDToken returned %q, not a JWT", got)
			}
		})
	}
}

func TestIDTokenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := New(envFunc(map[string]string{tokenVar: mint(t, pluginClaims())})).IDToken(ctx, testAudience); err == nil {
		t.Fatal("IDToken with a canceled context succeeded")
	}
}

func TestBuildContext(t *testing.T) {
	withGit := pluginClaims()
	withGit["git_url"] = testGitURL
	withGit["git_commit"] = testCommit
	withGit["branch"] = "main"
	contradicted := pluginClaims()
	contradicted["git_commit"] = strings.Repeat("f", 40)
	unexpanded := pluginClaims()
	unexpanded["git_url"] = "${GIT_URL}"
	folder := pluginClaims()
	folder["iss"] = testJenkins + "oidc/job/team"
	customSub := pluginClaims()
	customSub["sub"] = "jenkins:team/app"
	external := pluginClaims()
	external["iss"] = "https://static.example.com/jenkins"

	allAsserted := map[string]string{
		"JENKINS_URL": testJenkins, "JOB_URL": testJobURL, "BUILD_URL": testBuildURL, "JOB_NAME": "team/app",
		"BUILD_NUMBER": "42", "NODE_NAME": "linux-1", "GIT_URL": testGitURL, "GIT_COMMIT": testCommit,
		"GIT_BRANCH": "main", "BRANCH_NAME": "main",
	}
	tests := []struct {
		name         string
		claims       map[string]any // nil: no token bound
		wantExt      map[string]any
		wantInternal map[string]any
		wantAsserted map[string]string
	}{
		{
			name:         "no token: everything asserted",
			wantExt:      map[string]any{},
			wantInternal: map[string]any{},
			wantAsserted: allAsserted,
		},
		{
			name:   "plugin default claims: job vouched, git asserted",
			claims: pluginClaims(),
			wantExt: map[string]any{
				"job": testJobURL, "job_name": "team/app",
			},
			wantInternal: map[string]any{"jenkins_url": testJenkins, "build_url": testBuildURL, "build_number": "42"},
			wantAsserted: map[string]string{
				"NODE_NAME": "linux-1", "GIT_URL": testGitURL, "GIT_COMMIT": testCommit, "GIT_BRANCH": "main", "BRANCH_NAME": "main",
			},
		},
		{
			name:   "recommended git claim templates: source vouched",
			claims: withGit,
			wantExt: map[string]any{
				"job": testJobURL, "job_name": "team/app",
				"source": map[string]any{"repository": testGitURL, "commit": testCommit, "branch": "main"},
			},
			wantInternal: map[string]any{"jenkins_url": testJenkins, "build_url": testBuildURL, "build_number": "42"},
			wantAsserted: map[string]string{"NODE_NAME": "linux-1"},
		},
		{
			name:         "env contradicting the token is left out",
			claims:       contradicted,
			wantExt:      map[string]any{"job": testJobURL, "job_name": "team/app"},
			wantInternal: map[string]any{"jenkins_url": testJenkins, "build_url": testBuildURL, "build_number": "42"},
			wantAsserted: map[string]string{"NODE_NAME": "linux-1", "GIT_URL": testGitURL, "GIT_BRANCH": "main", "BRANCH_NAME": "main"},
		},
		{
			name:         "unexpanded claim template vouches for nothing",
			claims:       unexpanded,
			wantExt:      map[string]any{"job": testJobURL, "job_name": "team/app"},
			wantInternal: map[string]any{"jenkins_url": testJenkins, "build_url": testBuildURL, "build_number": "42"},
			wantAsserted: map[string]string{"NODE_NAME": "linux-1", "GIT_URL": testGitURL, "GIT_COMMIT": testCommit, "GIT_BRANCH": "main", "BRANCH_NAME": "main"},
		},
		{
			name:         "folder issuer vouches for the Jenkins URL",
			claims:       folder,
			wantExt:      map[string]any{"job": testJobURL, "job_name": "team/app"},
			wantInternal: map[string]any{"jenkins_url": testJenkins, "build_url": testBuildURL, "build_number": "42"},
			wantAsserted: map[string]string{"NODE_NAME": "linux-1", "GIT_URL": testGitURL, "GIT_COMMIT": testCommit, "GIT_BRANCH": "main", "BRANCH_NAME": "main"},
		},
		{
			name:         "custom sub template: job facts asserted",
			claims:       customSub,
			wantExt:      map[string]any{},
			wantInternal: map[string]any{"jenkins_url": testJenkins, "build_number": "42"},
			wantAsserted: map[string]string{
				"JOB_URL": testJobURL, "BUILD_URL": testBuildURL, "JOB_NAME": "team/app", "NODE_NAME": "linux-1",
				"GIT_URL": testGitURL, "GIT_COMMIT": testCommit, "GIT_BRANCH": "main", "BRANCH_NAME": "main",
			},
		},
		{
			name:         "external issuer: Jenkins URL asserted",
			claims:       external,
			wantExt:      map[string]any{"job": testJobURL, "job_name": "team/app"},
			wantInternal: map[string]any{"build_url": testBuildURL, "build_number": "42"},
			wantAsserted: map[string]string{
				"JENKINS_URL": testJenkins, "NODE_NAME": "linux-1",
				"GIT_URL": testGitURL, "GIT_COMMIT": testCommit, "GIT_BRANCH": "main", "BRANCH_NAME": "main",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var claims map[string]any
			if tt.claims != nil {
				claims = claimsAsCoreGives(t, tt.claims)
			}
			bc, err := New(envFunc(jenkinsEnv())).BuildContext(context.Background(), claims)
			if err != nil {
				t.Fatalf("BuildContext: %v", err)
			}
			if bc.Platform != "jenkins" || bc.BuildType != buildType || bc.ServerURL != "https://ci.example.com" {
				t.Errorf("Platform/BuildType/ServerURL = %q %q %q", bc.Platform, bc.BuildType, bc.ServerURL)
			}
			assertJSONEqual(t, "ExternalParameters", bc.ExternalParameters, tt.wantExt)
			assertJSONEqual(t, "InternalParameters", bc.InternalParameters, tt.wantInternal)
			assertJSONEqual(t, "Asserted", nonNil(bc.Asserted), tt.wantAsserted)
		})
	}
}

// claimsAsCoreGives returns claims the way core.Sign hands them to
// BuildContext: decoded from the compact token (numbers as json.Number).
func claimsAsCoreGives(t *testing.T, claims map[string]any) map[string]any {
	t.Helper()
	c, err := core.UnverifiedClaims(mint(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBuildContextDescribesTheClaimsItIsGiven: core passes the claims of the
// token it signs with (--token-file, --token-env or IDToken); the adapter
// compares the environment with those, not with the credential variable.
func TestBuildContextDescribesTheClaimsItIsGiven(t *testing.T) {
	env := jenkinsEnv()
	env[tokenVar] = mint(t, pluginClaims()) // no git_commit claim
	claims := pluginClaims()
	claims["git_commit"] = testCommit
	bc, err := New(envFunc(env)).BuildContext(context.Background(), claimsAsCoreGives(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	if _, asserted := bc.Asserted["GIT_COMMIT"]; asserted {
		t.Fatalf("GIT_COMMIT is vouched by the given claims but was asserted: %v", bc.Asserted)
	}
	src, _ := bc.ExternalParameters["source"].(map[string]any)
	if src["commit"] != testCommit {
		t.Fatalf("source = %v, want commit %s", bc.ExternalParameters["source"], testCommit)
	}
}

func TestBuildContextMissingEnv(t *testing.T) {
	for _, k := range []string{"JENKINS_URL", "JOB_URL", "BUILD_NUMBER"} {
		t.Run(k, func(t *testing.T) {
			env := jenkinsEnv()
			delete(env, k)
			_, err := New(envFunc(env)).BuildContext(context.Background(), nil)
			if err == nil || !strings.Contains(err.Error(), k+" is not set") {
				t.Fatalf("err = %v, want %s is not set", err, k)
			}
		})
	}
}

// TestIdentityOfPluginToken checks that core's mapping of the plugin's claims
// gives the Jenkins rows of DESIGN.md: builder = sub (the job URL),
// invocation = the build URL, source from the recommended claim templates.
func TestIdentityOfPluginToken(t *testing.T) {
	claims := pluginClaims()
	claims["git_url"], claims["git_commit"], claims["branch"] = testGitURL, testCommit, "main"
	tok := mint(t, claims)
	decoded, err := core.UnverifiedClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	id, err := core.IdentityFromClaims("jenkins", "https://ci.example.com", decoded)
	if err != nil {
		t.Fatalf("IdentityFromClaims: %v", err)
	}
	want := core.Identity{Platform: "jenkins", SourceRepo: testGitURL, SourceDigest: testCommit, SourceRef: "main", BuilderID: testJobURL, Invocation: testBuildURL}
	if err := id.Diff(want); err != nil {
		t.Fatalf("identity differs: %v (got %+v)", err, id)
	}
}

func TestPublish(t *testing.T) {
	res := &core.Result{
		Key:            core.KeyInfo{Name: "release", Algorithm: "ecdsa-p256", Purpose: "code", KeyID: "abcd"},
		Artifacts:      []core.ArtifactResult{{Name: "app.tar.gz", Path: "dist/app.tar.gz", SHA256: strings.Repeat("a", 64), SignaturePath: "dist/app.tar.gz.sig"}},
		ProvenancePath: "provenance.intoto.jsonl",
		PublicKeyPath:  "signer.pub",
		AuditSeq:       7,
	}
	t.Run("writes the outputs file", func(t *testing.T) {
		dir := t.TempDir()
		out := filepath.Join(dir, "signet-outputs.json")
		if err := os.WriteFile(out, []byte("stale"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := New(envFunc(map[string]string{outputsVar: out})).Publish(context.Background(), res); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("outputs file is not JSON: %v: %s", err, b)
		}
		want := map[string]any{
			"key":        map[string]any{"name": "release", "algorithm": "ecdsa-p256", "purpose": "code", "key_id": "abcd"},
			"public_key": "signer.pub",
			"provenance": "provenance.intoto.jsonl",
			"signatures": []any{"dist/app.tar.gz.sig"},
			"artifacts":  []any{map[string]any{"name": "app.tar.gz", "path": "dist/app.tar.gz", "sha256": strings.Repeat("a", 64), "signature": "dist/app.tar.gz.sig"}},
			"audit_seq":  float64(7),
		}
		assertJSONEqual(t, "outputs", got, want)
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("temporary files left behind: %v", entries)
		}
	})
	t.Run("no-op without SIGNET_OUTPUTS", func(t *testing.T) {
		if err := New(envFunc(map[string]string{})).Publish(context.Background(), res); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("creates the directory", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "ws@tmp", "out.json")
		if err := New(envFunc(map[string]string{outputsVar: out})).Publish(context.Background(), res); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(out); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unwritable path", func(t *testing.T) {
		notDir := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(notDir, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(notDir, "out.json")
		err := New(envFunc(map[string]string{outputsVar: out})).Publish(context.Background(), res)
		if err == nil || !strings.Contains(err.Error(), "SIGNET_OUTPUTS") {
			t.Fatalf("err = %v, want an error naming SIGNET_OUTPUTS", err)
		}
	})
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func assertJSONEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("%s:\n got %s\nwant %s", what, g, w)
	}
}

// TestJobURLFor: the job URL Jenkins derives from a full name, with folders
// and Util.rawEncode-style escaping (the plugin's FolderIssuerTest job
// "at the top/middle/bottom/p").
func TestJobURLFor(t *testing.T) {
	tests := []struct{ root, name, want string }{
		{"https://ci.example.com/", "app", "https://ci.example.com/job/app/"},
		{"https://ci.example.com", "team/app", "https://ci.example.com/job/team/job/app/"},
		{"https://ci.example.com/jenkins/", "at the top/middle/bottom/p", "https://ci.example.com/jenkins/job/at%20the%20top/job/middle/job/bottom/job/p/"},
		{"https://ci.example.com/", "org/repo/feature%2Fx", "https://ci.example.com/job/org/job/repo/job/feature%252Fx/"},
	}
	for _, tt := range tests {
		if got := jobURLFor(tt.root, tt.name); got != tt.want {
			t.Errorf("jobURLFor(%q, %q) = %q, want %q", tt.root, tt.name, got, tt.want)
		}
	}
}
