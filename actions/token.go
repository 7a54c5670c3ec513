package actions

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// errNoIDTokenPermission is what a job without `permissions: id-token: write`
// looks like: the runner sets no ACTIONS_ID_TOKEN_REQUEST_* variables.
var errNoIDTokenPermission = errors.New("this job lacks `permissions: id-token: write`, so GitHub gives it no OIDC token " +
	"(ACTIONS_ID_TOKEN_REQUEST_URL / ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set): " +
	"add `permissions: {id-token: write, contents: read}` to the job or workflow that runs the signet action")

// IDToken asks the runner's token endpoint for an OIDC token whose aud is
// audience: GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=<audience> with
// `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answer
// {"value": "<jwt>"}. Transport errors and 5xx answers are retried with
// backoff. The token is masked in the job log before it is returned.
func (p *platform) IDToken(ctx context.Context, audience string) (string, error) {
	if strings.TrimSpace(audience) == "" {
		err := errors.New("no audience for the GitHub OIDC token: set the action's `audience` input (SIGNET_AUDIENCE) to the signer's configured audience")
		return "", p.fail(err)
	}
	reqURL, okURL := p.env("ACTIONS_ID_TOKEN_REQUEST_URL")
	reqTok, okTok := p.env("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
	if !okURL || reqURL == "" || !okTok || reqTok == "" {
		return "", p.fail(errNoIDTokenPermission)
	}
	tok, err := p.gha().GetIDToken(ctx, audience)
	if err != nil {
		err = fmt.Errorf("requesting the GitHub OIDC token for audience %q from ACTIONS_ID_TOKEN_REQUEST_URL: %w "+
			"(check the job's `permissions: id-token: write` and that the runner can reach its token endpoint)", audience, err)
		return "", p.fail(err)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		err := fmt.Errorf("the GitHub token endpoint answered without a token (empty \"value\") for audience %q: re-run the job; if it persists, GitHub's OIDC service is failing", audience)
		return "", p.fail(err)
	}
	if err := p.mask(tok); err != nil {
		return "", err
	}
	return tok, nil
}

// mask emits ::add-mask:: so the runner hides s in every later log line.
func (p *platform) mask(s string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("masking a secret in the job log: %v", r)
		}
	}()
	p.gha().AddMask(s)
	return nil
}
