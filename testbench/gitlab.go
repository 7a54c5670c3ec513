package testbench

import (
	"context"
	"net"
	"strings"
	"time"
)

// Default build identity of the bench's GitLab CI job.
const (
	GitLabNamespace   = "signet-ci"
	GitLabProjectPath = "signet-ci/demo"
	GitLabProjectID   = "4711"
	GitLabNamespaceID = "1337"
	GitLabSHA         = "9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d"
	GitLabJobID       = "8812345"
	GitLabPipelineID  = "991122"
)

// GitLabIssuer mints tokens like a GitLab instance's id_tokens (the issuer
// is the instance URL; JWKS at /oauth/discovery/keys).
type GitLabIssuer struct {
	*Issuer
	environment string
}

// StartGitLabIssuer serves a GitLab-like issuer over TLS on a free loopback
// port. Tokens: RS256, nbf 5 s before iat, exp one hour (the default job
// timeout) after it. It stops when ctx is done or on Close.
func StartGitLabIssuer(ctx context.Context, ca *CA, opts IssuerOptions) (*GitLabIssuer, error) {
	is, err := startIssuer(ctx, ca, issuerSpec{platform: "gitlab", jwksPath: "/oauth/discovery/keys",
		lifetime: time.Hour, nbfBefore: 5 * time.Second}, opts)
	if err != nil {
		return nil, err
	}
	g := &GitLabIssuer{Issuer: is, environment: opts.GitLabEnvironment}
	is.defaults = func(time.Time) map[string]any { return g.DefaultClaims() }
	return g, nil
}

// Host is the instance host (host:port) as GitLab writes it in ci_config_ref_uri.
func (g *GitLabIssuer) Host() string { return strings.TrimPrefix(g.BaseURL, "https://") }

// DefaultClaims returns the claims GitLab sets in an id_token of a pipeline
// job on branch main of signet-ci/demo (without iss/aud/iat/nbf/exp). IDs are
// JSON strings and runner_id a number, as GitLab sends them.
func (g *GitLabIssuer) DefaultClaims() map[string]any {
	c := map[string]any{
		"jti":                newUUID(),
		"sub":                "project_path:" + GitLabProjectPath + ":ref_type:branch:ref:main",
		"namespace_id":       GitLabNamespaceID,
		"namespace_path":     GitLabNamespace,
		"project_id":         GitLabProjectID,
		"project_path":       GitLabProjectPath,
		"user_id":            "42",
		"user_login":         "alice",
		"user_email":         "alice@example.com",
		"user_access_level":  "maintainer",
		"pipeline_id":        GitLabPipelineID,
		"pipeline_source":    "push",
		"job_id":             GitLabJobID,
		"ref":                "main",
		"ref_type":           "branch",
		"ref_path":           "refs/heads/main",
		"ref_protected":      "true",
		"runner_id":          7,
		"runner_environment": "gitlab-hosted",
		"sha":                GitLabSHA,
		"project_visibility": "private",
		"ci_config_ref_uri":  g.Host() + "/" + GitLabProjectPath + "//.gitlab-ci.yml@refs/heads/main",
		"ci_config_sha":      GitLabSHA,
	}
	if g.environment != "" {
		c["environment"] = g.environment
		c["environment_protected"] = "true"
		c["deployment_tier"] = "production"
		c["environment_action"] = "start"
	}
	return c
}

// Env returns the CI_* environment of the job, with SIGNET_ID_TOKEN holding
// token (the id_tokens: variable the pipeline declares) and SSL_CERT_FILE
// pointing at the bench CA.
func (g *GitLabIssuer) Env(workspace, token string) map[string]string {
	host, port, _ := net.SplitHostPort(g.Host()) // the issuer listens on 127.0.0.1:PORT
	env := map[string]string{
		"CI":                      "true",
		"GITLAB_CI":               "true",
		"CI_SERVER":               "yes",
		"CI_SERVER_URL":           g.BaseURL,
		"CI_SERVER_HOST":          host,
		"CI_SERVER_PORT":          port,
		"CI_SERVER_PROTOCOL":      "https",
		"CI_API_V4_URL":           g.BaseURL + "/api/v4",
		"CI_PROJECT_ID":           GitLabProjectID,
		"CI_PROJECT_PATH":         GitLabProjectPath,
		"CI_PROJECT_NAMESPACE":    GitLabNamespace,
		"CI_PROJECT_NAMESPACE_ID": GitLabNamespaceID,
		"CI_PROJECT_NAME":         "demo",
		"CI_PROJECT_URL":          g.BaseURL + "/" + GitLabProjectPath,
		"CI_PROJECT_VISIBILITY":   "private",
		"CI_PROJECT_DIR":          workspace,
		"CI_COMMIT_SHA":           GitLabSHA,
		"CI_COMMIT_REF_NAME":      "main",
		"CI_COMMIT_BRANCH":        "main",
		"CI_COMMIT_REF_PROTECTED": "true",
		"CI_DEFAULT_BRANCH":       "main",
		"CI_PIPELINE_ID":          GitLabPipelineID,
		"CI_PIPELINE_IID":         "12",
		"CI_PIPELINE_SOURCE":      "push",
		"CI_PIPELINE_URL":         g.BaseURL + "/" + GitLabProjectPath + "/-/pipelines/" + GitLabPipelineID,
		"CI_JOB_ID":               GitLabJobID,
		"CI_JOB_NAME":             "sign",
		"CI_JOB_STAGE":            "release",
		"CI_JOB_URL":              g.BaseURL + "/" + GitLabProjectPath + "/-/jobs/" + GitLabJobID,
		"CI_JOB_STARTED_AT":       time.Now().UTC().Format(time.RFC3339),
		"CI_CONFIG_PATH":          ".gitlab-ci.yml",
		"CI_RUNNER_ID":            "7",
		"CI_RUNNER_DESCRIPTION":   "testbench runner",
		"GITLAB_USER_ID":          "42",
		"GITLAB_USER_LOGIN":       "alice",
		"GITLAB_USER_EMAIL":       "alice@example.com",
		"SIGNET_ID_TOKEN":         token,
		"SSL_CERT_FILE":           g.CAPath,
	}
	if g.environment != "" {
		env["CI_ENVIRONMENT_NAME"] = g.environment
		env["CI_ENVIRONMENT_TIER"] = "production"
	}
	return env
}
