// Package gitlab is Signet's GitLab CI adapter: it detects a GitLab CI job,
// reads the OIDC ID token GitLab put in an `id_tokens:` variable, describes the
// build from the CI_* variables and, when asked, publishes the signatures,
// provenance and public key to the project's generic package registry and the
// tag's release.
//
// Everything that is not GitLab-specific (hashing, statements, the signer
// client, identity mapping) lives in core.
package gitlab

import (
	"log/slog"
	"regexp"
	"strconv"
	"strings"

	"github.com/signet-ci/signet/core"
)

// BuildType is the SLSA buildType URI of provenance produced in GitLab CI.
// docs/gitlab.md documents its externalParameters and internalParameters.
const BuildType = core.BuildTypeGitLab

// Environment variables the adapter reads besides GitLab's CI_* variables.
const (
	// DefaultTokenVar is the `id_tokens:` variable the adapter reads by default.
	DefaultTokenVar = "SIGNET_ID_TOKEN"
	// EnvTokenVar names another `id_tokens:` variable to read.
	EnvTokenVar = "SIGNET_GITLAB_TOKEN_VAR"
	// EnvPublish turns publishing on ("true") or off ("false", the default).
	EnvPublish = "SIGNET_GITLAB_PUBLISH"
	// EnvPackageName is the generic package name (default DefaultPackageName).
	EnvPackageName = "SIGNET_GITLAB_PACKAGE_NAME"
	// EnvPackageVersion is the generic package version (default: CI_COMMIT_TAG,
	// else CI_COMMIT_SHA).
	EnvPackageVersion = "SIGNET_GITLAB_PACKAGE_VERSION"
	// EnvReleaseLinks set to "false" skips release asset links on tag pipelines.
	EnvReleaseLinks = "SIGNET_GITLAB_RELEASE_LINKS"
)

// DefaultPackageName is the generic package that receives the outputs.
const DefaultPackageName = "signet"

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Platform implements core.Platform for GitLab CI.
type Platform struct {
	env core.Env
	log *slog.Logger
}

var _ core.Platform = (*Platform)(nil)

// New returns the GitLab CI adapter reading its environment through env.
func New(env core.Env) core.Platform {
	return &Platform{env: env, log: slog.Default().With("platform", "gitlab")}
}

// Name is "gitlab".
func (p *Platform) Name() string { return "gitlab" }

// Detect reports whether env is a GitLab CI job (GITLAB_CI=true).
func (p *Platform) Detect(env core.Env) bool {
	v, _ := env("GITLAB_CI")
	return v == "true"
}

// get returns the trimmed value of an environment variable ("" when unset).
func (p *Platform) get(key string) string {
	v, _ := p.env(key)
	return strings.TrimSpace(v)
}

// tokenVar is the name of the `id_tokens:` variable holding the token.
func (p *Platform) tokenVar() (string, error) {
	name := p.get(EnvTokenVar)
	if name == "" {
		return DefaultTokenVar, nil
	}
	if !envNameRE.MatchString(name) {
		return "", errorf("%s=%q is not a variable name: set it to the name of the id_tokens: entry (for example %s)", EnvTokenVar, name, DefaultTokenVar)
	}
	return name, nil
}

// boolEnv parses a boolean variable; unset means def.
func (p *Platform) boolEnv(key string, def bool) (bool, error) {
	v := p.get(key)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(strings.ToLower(v))
	if err != nil {
		return false, errorf("%s=%q is not a boolean: use true or false", key, v)
	}
	return b, nil
}
