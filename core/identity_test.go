package core

import (
	"encoding/json"
	"maps"
	"reflect"
	"strings"
	"testing"
)

// Claim sets shaped like the platforms' documented tokens.
func githubClaims() map[string]any {
	return map[string]any{
		"iss":                   "https://token.actions.githubusercontent.com",
		"sub":                   "repo:octo-org/octo-repo:ref:refs/heads/main",
		"aud":                   "https://signer.example.com",
		"ref":                   "refs/heads/main",
		"ref_type":              "branch",
		"sha":                   "e0d1c2b3a4958677685940a3b2c1d0e0f1a2b3c4",
		"repository":            "octo-org/octo-repo",
		"repository_owner":      "octo-org",
		"repository_id":         "74",
		"repository_owner_id":   "65",
		"run_id":                "example-run-id",
		"run_number":            "10",
		"run_attempt":           "2",
		"actor":                 "octocat",
		"workflow":              "example-workflow",
		"event_name":            "workflow_dispatch",
		"job_workflow_ref":      "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
		"workflow_ref":          "octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main",
		"runner_environment":    "github-hosted",
		"repository_visibility": "private",
	}
}

func gitlabClaims() map[string]any {
	return map[string]any{
		"iss":                "https://gitlab.example.com",
		"sub":                "project_path:my-group/my-project:ref_type:branch:ref:main",
		"aud":                "https://signer.example.com",
		"namespace_id":       "72",
		"namespace_path":     "my-group",
		"project_id":         "20",
		"project_path":       "my-group/my-project",
		"pipeline_id":        "574",
		"pipeline_source":    "push",
		"job_id":             "302",
		"ref":                "main",
		"ref_type":           "branch",
		"runner_id":          float64(1), // a JSON number in GitLab tokens
		"runner_environment": "gitlab-hosted",
		"sha":                "714a629c0b401fdce83e847fc9589983fc6f46bc",
		"project_visibility": "public",
		"ci_config_ref_uri":  "gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main",
	}
}

func jenkinsClaims() map[string]any {
	return map[string]any{
		"iss":          "https://jenkins.example.com/oidc",
		"sub":          "https://jenkins.example.com/job/app/job/main/",
		"aud":          "https://signer.example.com",
		"build_number": json.Number("42"),
		"git_url":      "https://git.example.com/app.git",
		"git_commit":   "0123456789abcdef0123456789abcdef01234567",
		"branch":       "refs/heads/main",
	}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := maps.Clone(m)
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
		} else {
			out[k] = kv[i+1]
		}
	}
	return out
}

func TestIdentityFromClaims(t *testing.T) {
	tests := []struct {
		name     string
		platform string
		server   string
		claims   map[string]any
		want     Identity
		wantErr  string
	}{
		{
			name: "github.com", platform: "github", server: "https://github.com", claims: githubClaims(),
			want: Identity{
				Platform:          "github",
				SourceRepo:        "https://github.com/octo-org/octo-repo",
				SourceDigest:      "e0d1c2b3a4958677685940a3b2c1d0e0f1a2b3c4",
				SourceRef:         "refs/heads/main",
				BuilderID:         "https://github.com/octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
				Invocation:        "https://github.com/octo-org/octo-repo/actions/runs/example-run-id/attempts/2",
				RunnerEnvironment: "github-hosted",
				BuildTrigger:      "workflow_dispatch",
				ImmutableIDs:      map[string]string{"repository_id": "74", "repository_owner_id": "65"},
			},
		},
		{
			name: "github default server", platform: "github", server: "", claims: githubClaims(),
			want: Identity{
				Platform: "github", SourceRepo: "https://github.com/octo-org/octo-repo",
				SourceDigest: "e0d1c2b3a4958677685940a3b2c1d0e0f1a2b3c4", SourceRef: "refs/heads/main",
				BuilderID:         "https://github.com/octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
				Invocation:        "https://github.com/octo-org/octo-repo/actions/runs/example-run-id/attempts/2",
				RunnerEnvironment: "github-hosted", BuildTrigger: "workflow_dispatch",
				ImmutableIDs: map[string]string{"repository_id": "74", "repository_owner_id": "65"},
			},
		},
		{
			name: "github enterprise server", platform: "github", server: "https://ghe.corp.example/",
			claims: with(githubClaims(), "runner_environment", "self-hosted", "ref", "refs/tags/v1.0.0"),
			want: Identity{
				Platform: "github", SourceRepo: "https://ghe.corp.example/octo-org/octo-repo",
				SourceDigest: "e0d1c2b3a4958677685940a3b2c1d0e0f1a2b3c4", SourceRef: "refs/tags/v1.0.0",
				BuilderID:         "https://ghe.corp.example/octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
				Invocation:        "https://ghe.corp.example/octo-org/octo-repo/actions/runs/example-run-id/attempts/2",
				RunnerEnvironment: "self-hosted", BuildTrigger: "workflow_dispatch",
				ImmutableIDs: map[string]string{"repository_id": "74", "repository_owner_id": "65"},
			},
		},
		{name: "github missing job_workflow_ref", platform: "github", claims: with(githubClaims(), "job_workflow_ref", nil), wantErr: `lacks required claim "job_workflow_ref"`},
		{name: "github repository_id wrong type", platform: "github", claims: with(githubClaims(), "repository_id", []any{"x"}), wantErr: `claim "repository_id"`},
		{name: "github empty sha", platform: "github", claims: with(githubClaims(), "sha", ""), wantErr: `claim "sha" is empty`},
		{
			name: "gitlab branch, server from iss", platform: "gitlab", claims: gitlabClaims(),
			want: Identity{
				Platform:          "gitlab",
				SourceRepo:        "https://gitlab.example.com/my-group/my-project",
				SourceDigest:      "714a629c0b401fdce83e847fc9589983fc6f46bc",
				SourceRef:         "refs/heads/main",
				BuilderID:         "https://gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main",
				Invocation:        "https://gitlab.example.com/my-group/my-project/-/jobs/302",
				RunnerEnvironment: "gitlab-hosted",
				BuildTrigger:      "push",
				ImmutableIDs:      map[string]string{"project_id": "20", "namespace_id": "72"},
			},
		},
		{
			name: "gitlab tag, explicit server", platform: "gitlab", server: "https://gitlab.com",
			claims: with(gitlabClaims(), "ref", "v1.2.3", "ref_type", "tag", "runner_environment", "self-hosted", "project_id", float64(20)),
			want: Identity{
				Platform:          "gitlab",
				SourceRepo:        "https://gitlab.com/my-group/my-project",
				SourceDigest:      "714a629c0b401fdce83e847fc9589983fc6f46bc",
				SourceRef:         "refs/tags/v1.2.3",
				BuilderID:         "https://gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main",
				Invocation:        "https://gitlab.com/my-group/my-project/-/jobs/302",
				RunnerEnvironment: "self-hosted",
				BuildTrigger:      "push",
				ImmutableIDs:      map[string]string{"project_id": "20", "namespace_id": "72"},
			},
		},
		{
			name: "gitlab fork merge request: source is the fork, job URL is the parent project", platform: "gitlab",
			claims: with(gitlabClaims(), "project_path", "contributor/my-project", "job_project_path", "my-group/my-project"),
			want: Identity{
				Platform:          "gitlab",
				SourceRepo:        "https://gitlab.example.com/contributor/my-project",
				SourceDigest:      "714a629c0b401fdce83e847fc9589983fc6f46bc",
				SourceRef:         "refs/heads/main",
				BuilderID:         "https://gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main",
				Invocation:        "https://gitlab.example.com/my-group/my-project/-/jobs/302",
				RunnerEnvironment: "gitlab-hosted",
				BuildTrigger:      "push",
				ImmutableIDs:      map[string]string{"project_id": "20", "namespace_id": "72"},
			},
		},
		{name: "gitlab bad ref_type", platform: "gitlab", claims: with(gitlabClaims(), "ref_type", "merge_request"), wantErr: `ref_type is "merge_request"`},
		{name: "gitlab missing ci_config_ref_uri", platform: "gitlab", claims: with(gitlabClaims(), "ci_config_ref_uri", nil), wantErr: `"ci_config_ref_uri"`},
		{name: "gitlab fractional number", platform: "gitlab", claims: with(gitlabClaims(), "job_id", 3.5), wantErr: "not an integer"},
		{
			name: "jenkins with git claims", platform: "jenkins", claims: jenkinsClaims(),
			want: Identity{
				Platform:     "jenkins",
				SourceRepo:   "https://git.example.com/app.git",
				SourceDigest: "0123456789abcdef0123456789abcdef01234567",
				SourceRef:    "refs/heads/main",
				BuilderID:    "https://jenkins.example.com/job/app/job/main/",
				Invocation:   "https://jenkins.example.com/job/app/job/main/42/",
			},
		},
		{
			name: "jenkins minimal, sub without slash, numeric build", platform: "jenkins",
			claims: map[string]any{"sub": "https://jenkins.example.com/job/app", "build_number": float64(7)},
			want: Identity{
				Platform:   "jenkins",
				BuilderID:  "https://jenkins.example.com/job/app",
				Invocation: "https://jenkins.example.com/job/app/7/",
			},
		},
		{name: "jenkins missing sub", platform: "jenkins", claims: with(jenkinsClaims(), "sub", nil), wantErr: `lacks required claim "sub"`},
		{name: "unknown platform", platform: "circleci", claims: githubClaims(), wantErr: `unknown platform "circleci"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IdentityFromClaims(tt.platform, tt.server, tt.claims)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("identity mismatch\n got: %+v\nwant: %+v", got, tt.want)
			}
		})
	}
}

func TestIdentityDiff(t *testing.T) {
	base, err := IdentityFromClaims("github", "", githubClaims())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mutate  func(*Identity)
		wantErr string
	}{
		{"equal", func(*Identity) {}, ""},
		{"source repo", func(i *Identity) { i.SourceRepo = "https://github.com/evil/repo" },
			`source_repo: token says "https://github.com/octo-org/octo-repo", statement says "https://github.com/evil/repo"`},
		{"source digest", func(i *Identity) { i.SourceDigest = "bad" }, "source_digest: "},
		{"source ref", func(i *Identity) { i.SourceRef = "refs/tags/v9" }, "source_ref: "},
		{"builder", func(i *Identity) { i.BuilderID = "x" }, "builder_id: "},
		{"invocation", func(i *Identity) { i.Invocation = "x" }, "invocation: "},
		{"runner env", func(i *Identity) { i.RunnerEnvironment = "self-hosted" }, `runner_environment: token says "github-hosted", statement says "self-hosted"`},
		{"trigger", func(i *Identity) { i.BuildTrigger = "push" }, "build_trigger: "},
		{"platform", func(i *Identity) { i.Platform = "gitlab" }, "platform: "},
		{"immutable id changed", func(i *Identity) {
			i.ImmutableIDs = map[string]string{"repository_id": "1", "repository_owner_id": "65"}
		},
			`repository_id: token says "74", statement says "1"`},
		{"immutable id missing", func(i *Identity) { i.ImmutableIDs = map[string]string{"repository_id": "74"} },
			`repository_owner_id: token says "65", statement has none`},
		{"immutable id added", func(i *Identity) {
			i.ImmutableIDs = map[string]string{"repository_id": "74", "repository_owner_id": "65", "x": ""}
		}, `x: token has none, statement says ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			other := base
			other.ImmutableIDs = maps.Clone(base.ImmutableIDs)
			tt.mutate(&other)
			err := base.Diff(other)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Diff = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Diff = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
