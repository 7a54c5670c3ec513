// Package jenkins is the Jenkins adapter of Signet. It implements
// core.Platform for pipelines that get their OIDC id token from the
// OpenID Connect Provider plugin (https://plugins.jenkins.io/oidc-provider/):
// the token is bound to an environment variable (or a file) by the
// Credentials Binding plugin's withCredentials step, and the build is
// described by the environment Jenkins gives every build.
//
// The adapter only reads the environment; hashing, statements, signing and
// outputs are core's job. See docs/jenkins.md.
package jenkins

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/signet-ci/signet/core"
)

const (
	platformName = "jenkins"
	// buildType is the SLSA buildType of provenance made by this adapter;
	// its parameters are documented in docs/jenkins.md.
	buildType = core.BuildTypeJenkins

	// tokenVar is the variable withCredentials binds the "OpenID Connect id
	// token" (secret text) credential to.
	tokenVar = "SIGNET_ID_TOKEN"
	// tokenFileVar is the variable bound to the path of the "OpenID Connect
	// id token as file" credential.
	tokenFileVar = "SIGNET_ID_TOKEN_FILE"
	// outputsVar names a file Publish writes the results to as JSON (the
	// signetSign pipeline step sets it and reads the file back).
	outputsVar = "SIGNET_OUTPUTS"
)

// platform is the Jenkins core.Platform.
type platform struct {
	env core.Env
	log *slog.Logger
}

// New returns the Jenkins adapter reading the build's environment through env.
func New(env core.Env) core.Platform {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	return &platform{env: env, log: slog.Default().With("platform", platformName)}
}

func (p *platform) Name() string { return platformName }

// Detect reports a Jenkins build: Jenkins sets JENKINS_URL (when its root
// URL is configured) together with BUILD_URL, and JENKINS_HOME on builds.
func (p *platform) Detect(env core.Env) bool {
	if env == nil {
		env = p.env
	}
	get := func(k string) string { v, _ := env(k); return strings.TrimSpace(v) }
	return get("JENKINS_URL") != "" && (get("BUILD_URL") != "" || get("JENKINS_HOME") != "")
}

func (p *platform) get(key string) string {
	v, _ := p.env(key)
	return strings.TrimSpace(v)
}

// IDToken returns the token bound by withCredentials. It refuses, before any
// network call, a token without "aud" and a token whose aud is not audience
// (core.CheckAudience), saying how to fix the credential.
func (p *platform) IDToken(ctx context.Context, audience string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	tok, src, err := p.rawToken()
	if err != nil {
		return "", err
	}
	claims, err := core.UnverifiedClaims(tok)
	if err != nil {
		return "", fmt.Errorf("jenkins: the id token in %s: %w: check that the credential is an \"OpenID Connect id token\" credential", src, err)
	}
	if err := core.CheckAudience(claims, audience); err != nil {
		return "", fmt.Errorf("jenkins: signet refuses the id token in %s: %w. %s", src, err, audienceHelp(audience))
	}
	return tok, nil
}

// BuildContext describes the build from Jenkins' environment. Facts the
// token's claims vouch for go to the SLSA parameters; the rest goes to
// Asserted, which core marks as asserted by the build.
func (p *platform) BuildContext(ctx context.Context, claims map[string]any) (*core.BuildContext, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	jenkinsURL := p.get("JENKINS_URL")
	if jenkinsURL == "" {
		return nil, fmt.Errorf("jenkins: JENKINS_URL is not set: configure the Jenkins URL in Manage Jenkins » System » Jenkins Location (the OpenID Connect Provider plugin needs it for its issuer too)")
	}
	for _, k := range []string{"JOB_URL", "BUILD_NUMBER"} {
		if p.get(k) == "" {
			return nil, fmt.Errorf("jenkins: %s is not set: run signet inside a Jenkins build step (sh), where Jenkins sets JOB_URL and BUILD_NUMBER", k)
		}
	}
	return describe(p.get, claims, p.log), nil
}

// Publish writes a small JSON summary of the results to the file named by
// SIGNET_OUTPUTS, when set (the signetSign step reads it back); otherwise
// it does nothing: the outputs are already on disk for archiveArtifacts.
func (p *platform) Publish(ctx context.Context, res *core.Result) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path := p.get(outputsVar)
	if path == "" || res == nil {
		return nil
	}
	if err := writeOutputs(path, res); err != nil {
		return fmt.Errorf("jenkins: write the outputs file %s (from %s): %w", path, outputsVar, err)
	}
	return nil
}
