package gitlab

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
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
// the error shows the `id_tokens:` block to add. The token's aud is decoded
// (not verified: the signer verifies) so a wrong audience fails here with both
// values named instead of as a 401 from the signer.
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
	claims, err := decodeClaims(tok)
	if err != nil {
		return "", errorf("the variable %s does not hold an ID token: %v; declare it under id_tokens: (not variables:)", name, err)
	}
	auds := audiences(claims["aud"])
	if !contains(auds, audience) {
		return "", errorf("audience mismatch: the ID token in %s has aud %s but the signer expects %q.\n"+
			"Set the job's id_tokens: entry to the signer's audience:\n\n%s",
			name, quoteList(auds), audience, indent(IDTokenSnippet(name, audience), "  "))
	}
	if exp, ok := numericDate(claims["exp"]); ok && time.Now().After(exp) {
		return "", errorf("the ID token in %s expired at %s: GitLab ID tokens live as long as the job's timeout; sign earlier in the job or raise the job timeout",
			name, exp.UTC().Format(time.RFC3339))
	}
	p.mu.Lock()
	p.token = tok
	p.mu.Unlock()
	return tok, nil
}

// decodeClaims returns the payload of a compact JWS without verifying it.
func decodeClaims(tok string) (map[string]any, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("a JWT has 3 dot-separated parts, found %d", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, fmt.Errorf("JWT payload is not base64url: %w", err)
	}
	var claims map[string]any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return nil, fmt.Errorf("JWT payload is not a JSON object: %w", err)
	}
	return claims, nil
}

// audiences returns aud as a list (it is a string or an array of strings).
func audiences(v any) []string {
	switch a := v.(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, e := range a {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
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

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func quoteList(list []string) string {
	if len(list) == 0 {
		return "(none)"
	}
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// claimString returns a claim as a string: GitLab sends most ids as strings
// but some (runner_id) as numbers.
func claimString(claims map[string]any, key string) string {
	switch v := claims[key].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		if v {
			return "true"
		}
		return "false"
	}
	return ""
}
