package jenkins

import (
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

// audienceHelp says how to give the credential the signer's audience. The
// plugin's Audience field is optional, and a token minted without one could be
// replayed to any service it is shown to, so signet refuses it like a token
// for another audience.
func audienceHelp(audience string) string {
	return fmt.Sprintf("In Jenkins, open the OpenID Connect id token credential, set its Audience to %q and save (Update), "+
		"or bind the credential made for this signer; then rerun", audience)
}
