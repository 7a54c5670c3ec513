package gitlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/signet-ci/signet/core"
)

func errorf(format string, args ...any) error {
	return fmt.Errorf("gitlab: "+format, args...)
}

// ErrNoToken is wrapped by the error IDToken returns when the `id_tokens:`
// variable is missing or empty.
var ErrNoToken = errors.New("GitLab ID token variable not set")

// IDTokenSnippet is the YAML a job needs so GitLab puts an ID token for
// audience into variable name.
func IDTokenSnippet(name, audience string) string {
	return fmt.Sprintf("id_tokens:\n  %s:\n    aud: %s\n", name, audience)
}

// IDToken returns the ID token GitLab minted for the job into the
// `id_tokens:` variable (SIGNET_ID_TOKEN unless SIGNET_GITLAB_TOKEN_VAR names
// another). GitLab cannot mint tokens on request: when the variable is missing
// the error shows the `id_tokens:` block to add. The token's aud is checked
// with core.CheckAudience (decoded, not verified: the signer verifies) so a
// wrong audience fails here with both values named and the id_tokens: entry to
// fix, instead of as a 401 from the signer.
func (p *Platform) IDToken(ctx context.Context, audience string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if strings.TrimSpace(audience) == "" {
		return "", errorf("no audience given: pass --audience (or SIGNET_AUDIENCE) with the signer's configured audience")
	}
	name, err := p.tokenVar()
	if err != nil {
		return "", err
	}
	tok := p.get(name)
	if tok == "" {
		return "", fmt.Errorf("gitlab: the ID token variable %s is empty or not set (%w).\n"+
			"GitLab creates ID tokens only for variables declared in the job. Add this to the job that runs signet:\n\n%s\n"+
			"(or set %s to the name of an existing id_tokens: entry whose aud is %s)",
			name, ErrNoToken, indent(IDTokenSnippet(name, audience), "  "), EnvTokenVar, audience)
	}
	claims, err := core.UnverifiedClaims(tok)
	if err != nil {
		return "", errorf("the variable %s does not hold an ID token: %w; declare it under id_tokens: (not variables:)", name, err)
	}
	if err := core.CheckAudience(claims, audience); err != nil {
		return "", errorf("the ID token in %s is not for this signer: %w.\n"+
			"Set the job's id_tokens: entry to the signer's audience:\n\n%s",
			name, err, indent(IDTokenSnippet(name, audience), "  "))
	}
	if exp, ok := numericDate(claims["exp"]); ok && time.Now().After(exp) {
		return "", errorf("the ID token in %s expired at %s: GitLab ID tokens live as long as the job's timeout; sign earlier in the job or raise the job timeout",
			name, exp.UTC().Format(time.RFC3339))
	}
	return tok, nil
}

func numericDate(v any) (time.Time, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// claimString returns a claim as text (core.ClaimString), or "" when it is
// absent or not a scalar.
func claimString(claims map[string]any, key string) string {
	s, _ := core.ClaimString(claims[key])
	return s
}
