package gitlab

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
)

const testAud = "https://signer.signet.test"

// mapEnv is a core.Env over a map.
func mapEnv(m map[string]string) core.Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// jwtFor builds a compact JWS with claims. The adapter never verifies tokens
// (the signer does), so the signature part is opaque here.
func jwtFor(t *testing.T, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "k1"}) + "." + enc(claims) + "." +
		base64.RawURLEncoding.EncodeToString([]byte("not-checked-here"))
}

const (
	srv        = "https://gitlab.example.com"
	sha        = "9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d"
	forkSHA    = "1111111111111111111111111111111111111111"
	configSHA  = "2222222222222222222222222222222222222222"
	parentPath = "acme/app"
	forkPath   = "mallory/app"
)

func pushClaims() map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": srv, "aud": testAud, "sub": "project_path:acme/app:ref_type:branch:ref:main",
		"iat": now.Unix(), "nbf": now.Unix() - 5, "exp": now.Add(time.Hour).Unix(), "jti": "j-1",
		"namespace_id": "10", "namespace_path": "acme", "project_id": "100", "project_path": parentPath,
		"pipeline_id": "500", "pipeline_source": "push", "job_id": "900",
		"ref": "main", "ref_type": "branch", "ref_path": "refs/heads/main", "ref_protected": "true",
		"runner_id": 7, "runner_environment": "gitlab-hosted", "sha": sha, "project_visibility": "private",
		"ci_config_ref_uri": "gitlab.example.com/acme/app//.gitlab-ci.yml@refs/heads/main", "ci_config_sha": configSHA,
	}
}

// forkMRClaims are the claims of a merge-request pipeline from the fork
// mallory/app running in acme/app (GitLab >= 18.4): project_* name the fork,
// job_project_* the project the job runs in.
func forkMRClaims() map[string]any {
	c := pushClaims()
	c["sub"] = "project_path:mallory/app:ref_type:branch:ref:feature"
	c["project_id"], c["project_path"] = "200", forkPath
	c["namespace_id"], c["namespace_path"] = "20", "mallory"
	c["job_project_id"], c["job_project_path"] = "100", parentPath
	c["job_namespace_id"], c["job_namespace_path"] = "10", "acme"
	c["pipeline_source"] = "merge_request_event"
	c["ref"], c["ref_path"], c["ref_protected"] = "feature", "refs/heads/feature", "false"
	c["sha"] = forkSHA
	c["ci_config_ref_uri"] = "gitlab.example.com/mallory/app//.gitlab-ci.yml@refs/heads/feature"
	return c
}

func baseEnv() map[string]string {
	return map[string]string{
		"GITLAB_CI": "true", "CI": "true",
		"CI_SERVER_URL": srv, "CI_API_V4_URL": srv + "/api/v4",
		"CI_PROJECT_ID": "100", "CI_PROJECT_PATH": parentPath, "CI_PROJECT_NAMESPACE": "acme", "CI_PROJECT_NAMESPACE_ID": "10",
		"CI_COMMIT_SHA": sha, "CI_COMMIT_REF_NAME": "main", "CI_COMMIT_BRANCH": "main", "CI_COMMIT_REF_PROTECTED": "true",
		"CI_PIPELINE_ID": "500", "CI_PIPELINE_SOURCE": "push", "CI_PIPELINE_URL": srv + "/acme/app/-/pipelines/500",
		"CI_JOB_ID": "900", "CI_JOB_NAME": "sign", "CI_JOB_STAGE": "release", "CI_JOB_URL": srv + "/acme/app/-/jobs/900",
		"CI_JOB_STARTED_AT": "2026-11-21T09:00:00Z", "CI_CONFIG_PATH": ".gitlab-ci.yml",
		"CI_RUNNER_ID": "7", "CI_RUNNER_DESCRIPTION": "shared runner", "CI_PROJECT_VISIBILITY": "private",
	}
}

func TestNewAndDetect(t *testing.T) {
	p := New(mapEnv(nil))
	if p.Name() != "gitlab" {
		t.Fatalf("Name() = %q", p.Name())
	}
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{"GITLAB_CI": "true"}, true},
		{map[string]string{"GITLAB_CI": "false"}, false},
		{map[string]string{"CI": "true", "GITHUB_ACTIONS": "true"}, false},
		{nil, false},
	} {
		if got := p.Detect(mapEnv(tc.env)); got != tc.want {
			t.Errorf("Detect(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

func TestIDToken(t *testing.T) {
	good := jwtFor(t, pushClaims())
	multi := pushClaims()
	multi["aud"] = []any{"https://other.example", testAud}
	wrong := pushClaims()
	wrong["aud"] = "https://gitlab.example.com"
	noAud := pushClaims()
	delete(noAud, "aud")
	expired := pushClaims()
	expired["exp"] = time.Now().Add(-time.Minute).Unix()

	tests := []struct {
		name     string
		env      map[string]string
		audience string
		want     string   // token expected on success
		errHas   []string // substrings of the error
		noToken  bool     // error wraps ErrNoToken
	}{
		{name: "default variable", env: map[string]string{"SIGNET_ID_TOKEN": good}, audience: testAud, want: good},
		{name: "configured variable", env: map[string]string{"SIGNET_GITLAB_TOKEN_VAR": "SIGSTORE_ID_TOKEN", "SIGSTORE_ID_TOKEN": good, "SIGNET_ID_TOKEN": "x"}, audience: testAud, want: good},
		{name: "aud array", env: map[string]string{"SIGNET_ID_TOKEN": jwtFor(t, multi)}, audience: testAud, want: jwtFor(t, multi)},
		{
			name: "missing variable shows id_tokens snippet", env: map[string]string{}, audience: testAud, noToken: true,
			errHas: []string{"SIGNET_ID_TOKEN is empty or not set", "  id_tokens:\n    SIGNET_ID_TOKEN:\n      aud: " + testAud + "\n"},
		},
		{
			name: "missing configured variable", env: map[string]string{"SIGNET_GITLAB_TOKEN_VAR": "MY_TOKEN"}, audience: testAud, noToken: true,
			errHas: []string{"MY_TOKEN is empty or not set", "  id_tokens:\n    MY_TOKEN:\n      aud: " + testAud + "\n"},
		},
		{name: "empty variable", env: map[string]string{"SIGNET_ID_TOKEN": "  "}, audience: testAud, noToken: true, errHas: []string{"id_tokens:"}},
		{
			name: "audience mismatch names both", env: map[string]string{"SIGNET_ID_TOKEN": jwtFor(t, wrong)}, audience: testAud,
			errHas: []string{`aud is "https://gitlab.example.com"`, `signer's audience (--audience) is "` + testAud + `"`, "  id_tokens:\n    SIGNET_ID_TOKEN:\n      aud: " + testAud + "\n"},
		},
		{
			name: "no aud claim shows id_tokens snippet", env: map[string]string{"SIGNET_ID_TOKEN": jwtFor(t, noAud)}, audience: testAud,
			errHas: []string{"SIGNET_ID_TOKEN is not for this signer", "no aud claim", "  id_tokens:\n    SIGNET_ID_TOKEN:\n      aud: " + testAud + "\n"},
		},
		{name: "not a JWT", env: map[string]string{"SIGNET_ID_TOKEN": "$SIGNET_ID_TOKEN"}, audience: testAud, errHas: []string{"SIGNET_ID_TOKEN does not hold an ID token", "three dot-separated parts", "id_tokens:"}},
		{name: "expired", env: map[string]string{"SIGNET_ID_TOKEN": jwtFor(t, expired)}, audience: testAud, errHas: []string{"expired at"}},
		{name: "bad variable name", env: map[string]string{"SIGNET_GITLAB_TOKEN_VAR": "$X"}, audience: testAud, errHas: []string{"is not a variable name"}},
		{name: "no audience", env: map[string]string{"SIGNET_ID_TOKEN": good}, audience: "", errHas: []string{"no audience given"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := New(mapEnv(tc.env)).IDToken(context.Background(), tc.audience)
			if len(tc.errHas) == 0 {
				if err != nil {
					t.Fatalf("IDToken: %v", err)
				}
				if got != tc.want {
					t.Fatalf("IDToken returned %q, want %q", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("IDToken succeeded (%q), want error", got)
			}
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q\nlacks %q", err, s)
				}
			}
			if errors.Is(err, ErrNoToken) != tc.noToken {
				t.Errorf("errors.Is(err, ErrNoToken) = %v, want %v", !tc.noToken, tc.noToken)
			}
		})
	}
}

func TestBuildContext(t *testing.T) {
	forkEnv := baseEnv()
	for k, v := range map[string]string{
		"CI_PIPELINE_SOURCE": "merge_request_event", "CI_COMMIT_BRANCH": "", "CI_COMMIT_REF_NAME": "feature",
		"CI_COMMIT_SHA": forkSHA, "CI_COMMIT_REF_PROTECTED": "false",
		"CI_MERGE_REQUEST_IID": "17", "CI_MERGE_REQUEST_PROJECT_PATH": parentPath,
		"CI_MERGE_REQUEST_SOURCE_PROJECT_PATH": forkPath, "CI_MERGE_REQUEST_SOURCE_PROJECT_ID": "200",
		"CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature", "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
	} {
		forkEnv[k] = v
	}
	tagEnv := baseEnv()
	tagEnv["CI_COMMIT_TAG"], tagEnv["CI_COMMIT_BRANCH"], tagEnv["CI_COMMIT_REF_NAME"] = "v1.2.0", "", "v1.2.0"

	tests := []struct {
		name     string
		env      map[string]string
		claims   map[string]any    // of the token core signs with; nil: none readable
		ext      map[string]string // dotted path -> value in ExternalParameters
		internal map[string]string // key -> value in InternalParameters["job"]
		absent   []string          // keys that must not be in InternalParameters["job"]
		asserted map[string]string
	}{
		{
			name: "push pipeline from token claims", env: baseEnv(), claims: pushClaims(),
			ext: map[string]string{
				"source.repository": srv + "/" + parentPath, "source.ref": "refs/heads/main",
				"config.uri": "https://gitlab.example.com/acme/app//.gitlab-ci.yml@refs/heads/main", "config.path": ".gitlab-ci.yml",
				"pipeline_source": "push",
			},
			internal: map[string]string{"project_id": "100", "namespace_id": "10", "job_id": "900", "pipeline_id": "500",
				"runner_id": "7", "runner_environment": "gitlab-hosted", "ci_config_sha": configSHA, "sha": sha, "ref_protected": "true"},
			absent:   []string{"job_project_path", "user_email"},
			asserted: map[string]string{"parameters_source": "id_token", "job_name": "sign", "job_url": srv + "/acme/app/-/jobs/900"},
		},
		{
			name: "fork merge request from token claims", env: forkEnv, claims: forkMRClaims(),
			ext: map[string]string{
				"source.repository": srv + "/" + forkPath, "source.ref": "refs/heads/feature",
				"config.uri":      "https://gitlab.example.com/mallory/app//.gitlab-ci.yml@refs/heads/feature",
				"pipeline_source": "merge_request_event",
			},
			internal: map[string]string{"project_id": "200", "project_path": forkPath, "namespace_id": "20",
				"job_project_id": "100", "job_project_path": parentPath, "job_namespace_id": "10", "job_namespace_path": "acme",
				"sha": forkSHA, "ref_protected": "false"},
			asserted: map[string]string{"parameters_source": "id_token", "merge_request_iid": "17",
				"merge_request_source_project_path": forkPath, "merge_request_target_branch_name": "main"},
		},
		{
			name: "fork merge request without a readable token", env: forkEnv,
			ext: map[string]string{
				"source.repository": srv + "/" + forkPath, "source.ref": "refs/heads/feature",
				"config.uri":      "https://gitlab.example.com/acme/app//.gitlab-ci.yml@refs/heads/feature",
				"pipeline_source": "merge_request_event",
			},
			internal: map[string]string{"project_id": "200", "project_path": forkPath,
				"job_project_id": "100", "job_project_path": parentPath, "sha": forkSHA},
			absent:   []string{"namespace_id", "runner_environment"},
			asserted: map[string]string{"parameters_source": "environment"},
		},
		{
			name: "tag pipeline without a readable token", env: tagEnv,
			ext: map[string]string{
				"source.repository": srv + "/" + parentPath, "source.ref": "refs/tags/v1.2.0",
				"config.uri": "https://gitlab.example.com/acme/app//.gitlab-ci.yml@refs/tags/v1.2.0",
			},
			internal: map[string]string{"project_id": "100", "namespace_id": "10", "job_project_id": "100"},
			asserted: map[string]string{"parameters_source": "environment", "commit_tag": "v1.2.0"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var claims map[string]any
			if tc.claims != nil {
				claims = claimsAsCoreGives(t, tc.claims)
			}
			bc, err := New(mapEnv(tc.env)).BuildContext(context.Background(), claims)
			if err != nil {
				t.Fatalf("BuildContext: %v", err)
			}
			if bc.Platform != "gitlab" || bc.BuildType != BuildType || bc.ServerURL != srv {
				t.Errorf("platform/buildType/server = %q %q %q", bc.Platform, bc.BuildType, bc.ServerURL)
			}
			if want := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC); !bc.StartedOn.Equal(want) {
				t.Errorf("StartedOn = %v, want %v", bc.StartedOn, want)
			}
			for path, want := range tc.ext {
				if got := lookup(bc.ExternalParameters, path); got != want {
					t.Errorf("externalParameters.%s = %q, want %q", path, got, want)
				}
			}
			g, _ := bc.InternalParameters["job"].(map[string]any)
			for k, want := range tc.internal {
				if got, _ := g[k].(string); got != want {
					t.Errorf("internalParameters.job.%s = %q, want %q", k, got, want)
				}
			}
			for _, k := range tc.absent {
				if v, ok := g[k]; ok {
					t.Errorf("internalParameters.job.%s = %v, want absent", k, v)
				}
			}
			for k, want := range tc.asserted {
				if got := bc.Asserted[k]; got != want {
					t.Errorf("asserted[%s] = %q, want %q", k, got, want)
				}
			}
			// The result must survive a JSON round trip (it goes into the statement).
			if _, err := json.Marshal(bc.ExternalParameters); err != nil {
				t.Errorf("externalParameters not JSON: %v", err)
			}
		})
	}
}

// claimsAsCoreGives returns claims the way core.Sign hands them to
// BuildContext: decoded from the compact token (numbers as json.Number).
func claimsAsCoreGives(t *testing.T, claims map[string]any) map[string]any {
	t.Helper()
	c, err := core.UnverifiedClaims(jwtFor(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBuildContextDescribesTheClaimsItIsGiven(t *testing.T) {
	// core passes the claims of the token it signs with (whatever its source:
	// --token-env, --token-file or IDToken); the adapter must describe those,
	// not whatever token sits in its own id_tokens: variable.
	env := baseEnv()
	env["SIGNET_ID_TOKEN"] = jwtFor(t, pushClaims())
	bc, err := New(mapEnv(env)).BuildContext(context.Background(), claimsAsCoreGives(t, forkMRClaims()))
	if err != nil {
		t.Fatal(err)
	}
	if got := lookup(bc.ExternalParameters, "source.repository"); got != srv+"/"+forkPath {
		t.Fatalf("source.repository = %q, want the fork from the given claims", got)
	}
}

func TestBuildContextErrors(t *testing.T) {
	for _, tc := range []struct {
		name, server, want string
	}{
		{"no server", "", "CI_SERVER_URL is not set"},
		{"relative server", "gitlab.example.com", "not an absolute URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := baseEnv()
			env["CI_SERVER_URL"] = tc.server
			_, err := New(mapEnv(env)).BuildContext(context.Background(), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestForkClaimsIdentity records what core.IdentityFromClaims makes of a fork
// merge-request token: the source is the fork (project_path), as Fulcio does,
// so a signer policy pinned to the parent's project_id refuses it.
func TestForkClaimsIdentity(t *testing.T) {
	id, err := core.IdentityFromClaims("gitlab", srv, forkMRClaims())
	if err != nil {
		t.Fatalf("IdentityFromClaims: %v", err)
	}
	if id.SourceRepo != srv+"/"+forkPath || id.ImmutableIDs["project_id"] != "200" || id.SourceDigest != forkSHA {
		t.Fatalf("fork MR identity = %+v, want the fork's project and commit", id)
	}
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

// TestStatementCarriesGitLabParameters builds the statement core signs from
// this adapter's build context: the adapter's parameters must survive next to
// core's token-derived internalParameters.gitlab.
func TestStatementCarriesGitLabParameters(t *testing.T) {
	claims := pushClaims()
	env := baseEnv()
	bc, err := New(mapEnv(env)).BuildContext(context.Background(), claimsAsCoreGives(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	id, err := core.IdentityFromClaims("gitlab", "", claims)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := core.BuildStatement([]core.Subject{{Name: "app.tar.gz", Digest: map[string]string{"sha256": strings.Repeat("ab", 32)}}}, id, bc)
	if err != nil {
		t.Fatalf("BuildStatement: %v", err)
	}
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"predicate.buildDefinition.buildType":                                 BuildType,
		"predicate.buildDefinition.externalParameters.source.repository":      srv + "/" + parentPath,
		"predicate.buildDefinition.externalParameters.buildAsserted.job_name": "sign",
		"predicate.buildDefinition.internalParameters.job.job_id":             "900",
		"predicate.buildDefinition.internalParameters.job.ci_config_sha":      configSHA,
		"predicate.buildDefinition.internalParameters.gitlab.project_id":      "100",
		"predicate.runDetails.builder.id":                                     "https://gitlab.example.com/acme/app//.gitlab-ci.yml@refs/heads/main",
		"predicate.runDetails.metadata.invocationId":                          srv + "/acme/app/-/jobs/900",
	} {
		if got := lookup(st, path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
}
