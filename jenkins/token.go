package jenkins

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxTokenFileBytes bounds what we read from the "as file" credential; the
// plugin's tokens are a few kilobytes at most.
const maxTokenFileBytes = 64 << 10

// bindingHelp is shown when no token is bound: the exact pipeline snippet.
const bindingHelp = `bind the OpenID Connect id token credential around the signing step, e.g.
    withCredentials([string(credentialsId: 'signet-oidc', variable: 'SIGNET_ID_TOKEN')]) {
        sh 'signet sign --platform jenkins --signer "$SIGNET_SIGNER" --audience "$SIGNET_AUDIENCE" --key release dist/*'
    }
(or use the signetSign step of the Signet shared library, which does this for you). ` +
	`With the "OpenID Connect id token as file" credential bind file(credentialsId: 'signet-oidc', variable: 'SIGNET_ID_TOKEN_FILE') instead, or pass --token-file`

// rawToken returns the bound token and a description of where it came from.
func (p *platform) rawToken() (tok, src string, err error) {
	if v, ok := p.env(tokenVar); ok {
		src = "$" + tokenVar
		tok = strings.TrimSpace(v)
		if tok == "" {
			return "", src, fmt.Errorf("jenkins: %s is set but empty: check that the credential bound to it is an \"OpenID Connect id token\" credential; %s", src, bindingHelp)
		}
		return tok, src, nil
	}
	if path := p.get(tokenFileVar); path != "" {
		src = fmt.Sprintf("the file %s ($%s)", path, tokenFileVar)
		f, err := os.Open(path)
		if err != nil {
			return "", src, fmt.Errorf("jenkins: read the id token from %s: %w", src, err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
		if err != nil {
			return "", src, fmt.Errorf("jenkins: read the id token from %s: %w", src, err)
		}
		if len(b) > maxTokenFileBytes {
			return "", src, fmt.Errorf("jenkins: %s is larger than %d bytes: it is not an id token", src, maxTokenFileBytes)
		}
		tok = strings.TrimSpace(string(b))
		if tok == "" {
			return "", src, fmt.Errorf("jenkins: %s is empty: check that the credential bound to %s is an \"OpenID Connect id token as file\" credential", src, tokenFileVar)
		}
		return tok, src, nil
	}
	return "", "", fmt.Errorf("jenkins: no OIDC id token: neither %s nor %s is set; %s", tokenVar, tokenFileVar, bindingHelp)
}

// decodeClaims decodes the JWT payload WITHOUT verifying the signature: the
// signer verifies it. It is used only to catch misconfiguration early and to
// see which claim templates the token carries.
func decodeClaims(tok string) (map[string]any, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT (want header.payload.signature, got %d part(s)): check that the credential is an \"OpenID Connect id token\" credential", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, fmt.Errorf("the JWT payload is not base64url: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		if err == nil {
			err = errors.New("null payload")
		}
		return nil, fmt.Errorf("the JWT payload is not a JSON object: %w", err)
	}
	return claims, nil
}

// audiences returns the aud claim as a list (a JWT aud is a string or an
// array of strings).
func audiences(claims map[string]any) ([]string, error) {
	switch v := claims["aud"].(type) {
	case nil:
		return nil, nil
	case string:
		if v == "" {
			return nil, nil
		}
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, a := range v {
			s, ok := a.(string)
			if !ok {
				return nil, fmt.Errorf("the aud claim holds a %T, want strings", a)
			}
			if s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("the aud claim is a %T, want a string", v)
	}
}

// checkAudience refuses a token without aud (the plugin's credential has an
// optional Audience field, and a token without one could be replayed to any
// service) and a token whose aud is not the signer's audience.
func checkAudience(claims map[string]any, audience, src string) error {
	auds, err := audiences(claims)
	if err != nil {
		return fmt.Errorf("jenkins: the id token in %s: %w", src, err)
	}
	if len(auds) == 0 {
		want := audience
		if want == "" {
			want = "the signer's audience"
		}
		return fmt.Errorf("jenkins: the id token in %s has no \"aud\" claim, so any service it is shown to could replay it; "+
			"signet refuses it. In Jenkins, open the OpenID Connect id token credential, set its Audience to %q and save (Update), then rerun", src, want)
	}
	if audience == "" {
		return nil
	}
	for _, a := range auds {
		if a == audience {
			return nil
		}
	}
	return fmt.Errorf("jenkins: the id token in %s is for audience %q but the signer's audience is %q: "+
		"set the credential's Audience to %q, or bind the credential made for this signer", src, strings.Join(auds, `", "`), audience, audience)
}
