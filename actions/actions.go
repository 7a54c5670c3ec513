// Package actions is the GitHub Actions adapter of Signet. It implements
// core.Platform on top of github.com/sethvargo/go-githubactions: the OIDC token
// comes from the runner's ACTIONS_ID_TOKEN_REQUEST_* endpoint, the build
// context from GITHUB_* and the event payload, and the results go to the step
// outputs (GITHUB_OUTPUT) and the job summary (GITHUB_STEP_SUMMARY).
//
// The adapter never hashes, signs or builds statements: core does.
package actions

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	githubactions "github.com/sethvargo/go-githubactions"

	"github.com/signet-ci/signet/core"
)

// platformName is the value of core.Platform.Name for GitHub Actions.
const platformName = "github"

// buildType is GitHub's SLSA buildType for a workflow run, the one
// actions/attest-build-provenance uses.
const buildType = core.BuildTypeGitHub

// platform implements core.Platform for GitHub Actions.
type platform struct {
	env    core.Env
	stdout io.Writer // workflow commands (::add-mask::, ::error::) go here
	log    *slog.Logger
	// tokenClient fetches the ID token; it retries transport errors and 5xx.
	tokenClient *http.Client
	// annotated holds errors already shown as ::error, so ReportError does
	// not repeat them.
	annotated []error
}

// New returns the GitHub Actions platform reading its environment through env
// (os.LookupEnv in production). Workflow commands are written to stdout, as
// the runner expects.
func New(env core.Env) core.Platform {
	return newPlatform(env, os.Stdout, 4, time.Second)
}

func newPlatform(env core.Env, stdout io.Writer, retries int, minWait time.Duration) *platform {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rc := retryablehttp.NewClient()
	rc.RetryMax = retries
	rc.RetryWaitMin = minWait
	rc.RetryWaitMax = 8 * minWait
	rc.Logger = log
	rc.HTTPClient.Timeout = 30 * time.Second
	return &platform{env: env, stdout: stdout, log: log, tokenClient: rc.StandardClient()}
}

func (p *platform) Name() string { return platformName }

// Detect reports whether we run inside a GitHub Actions job: the runner always
// sets GITHUB_ACTIONS=true.
func (p *platform) Detect(env core.Env) bool {
	v, _ := env("GITHUB_ACTIONS")
	return v == "true"
}

// getenv adapts core.Env to go-githubactions' GetenvFunc.
func (p *platform) getenv(key string) string {
	v, _ := p.env(key)
	return v
}

// gha returns a go-githubactions handle bound to our env and stdout.
func (p *platform) gha() *githubactions.Action {
	return githubactions.New(
		githubactions.WithGetenv(p.getenv),
		githubactions.WithWriter(p.stdout),
		githubactions.WithHTTPClient(p.tokenClient),
	)
}

// fail annotates err and remembers it, then returns it.
func (p *platform) fail(err error) error {
	p.annotate(err.Error())
	p.annotated = append(p.annotated, err)
	return err
}

// annotate writes a `::error title=signet::` annotation. msg is passed as an
// argument, never as a format string.
func (p *platform) annotate(msg string) {
	defer func() { _ = recover() }() // a broken stdout must not hide the real error
	p.gha().WithFieldsMap(map[string]string{"title": "signet"}).Errorf("%s", msg)
}

// ReportError turns a failed `signet sign` run into an `::error` annotation
// that says what failed and what to do. For a signer refusal it carries the
// signer's own code and reason. cmd/signet calls it (through an optional
// interface) before exiting non-zero.
func (p *platform) ReportError(ctx context.Context, err error) {
	if err == nil {
		return
	}
	for _, done := range p.annotated {
		if errors.Is(err, done) {
			return
		}
	}
	var (
		apiErr   *core.APIError
		usage    *core.UsageError
		certErr  *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		transErr *url.Error
	)
	signer := p.getenv("SIGNET_SIGNER")
	switch {
	case errors.As(err, &apiErr):
		p.annotate(fmt.Sprintf("the signer refused the request (%s): %s%s\n%s",
			apiErr.Code, apiErr.Message, requestIDSuffix(apiErr.RequestID), hintFor(apiErr.Code)))
	case errors.As(err, &certErr), errors.As(err, &unknown):
		p.annotate(fmt.Sprintf("signing failed: %v\nThe signer's TLS certificate is not trusted: set the action's `ca-cert` input to the PEM root(s) of the signer's CA.", err))
	case errors.As(err, &transErr):
		p.annotate(fmt.Sprintf("signing failed: %v\nThe signer %s could not be reached (retried with backoff): check the action's `signer-url` input, that the signer is running, and that this runner can reach it.", err, signer))
	case errors.As(err, &usage):
		p.annotate(fmt.Sprintf("signing failed: %v\nCheck the action's inputs (`artifacts`: one existing path or matching glob per line; `signer-url`, `audience`, `key`).", err))
	default:
		p.annotate("signing failed: " + err.Error())
	}
}

func requestIDSuffix(id string) string {
	if id == "" {
		return ""
	}
	return " (request id " + id + ")"
}

// hintFor says what to do about a signer refusal, by its stable code.
func hintFor(code string) string {
	switch code {
	case core.ErrCodePolicyDenied:
		return "No allow rule of this key matches this workflow's identity: ask the signer's operator to allow this repository and ref for the key, or use a key that allows it."
	case core.ErrCodeUnauthenticated:
		return "The signer did not accept the job's OIDC token: check that the action's `audience` input equals the signer's configured audience and that the signer trusts this GitHub issuer."
	case core.ErrCodePurposeMismatch:
		return "The key's purpose does not allow this operation: pick a key of the right purpose (code or firmware)."
	case core.ErrCodeIdentityMismatch:
		return "The provenance's identity fields differ from the token's claims: do not edit the statement between build and signing."
	case core.ErrCodeCertInvalid:
		return "The key's code-signing certificate is expired or not yet valid: ask the signer's operator to renew it."
	case core.ErrCodeUnknownKey:
		return "The signer has no key of that name: check the action's `key` input against `GET /v1/keys`."
	case core.ErrCodeTooLarge:
		return "The request is over the signer's limits: sign fewer artifacts per run."
	case core.ErrCodeRateLimited, core.ErrCodeHSMUnavailable, core.ErrCodeInternal:
		return "The signer is overloaded or unavailable: re-run the job later, or ask the signer's operator."
	}
	return ""
}
