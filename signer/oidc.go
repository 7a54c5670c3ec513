package signer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// AuthError is a token refusal: Reason is safe to show the caller (it never
// contains the token).
type AuthError struct {
	Reason string
	Issuer string // issuer name when known
}

func (e *AuthError) Error() string { return e.Reason }

func authErr(issuer, format string, a ...any) *AuthError {
	return &AuthError{Issuer: issuer, Reason: fmt.Sprintf(format, a...)}
}

// Principal is a verified token.
type Principal struct {
	Issuer    string // configured issuer name
	IssuerURL string
	Platform  string
	ServerURL string
	Subject   string
	JTI       string
	Claims    map[string]any // numbers as json.Number
	Expiry    time.Time

	// Computed once when the token is verified (the Principal is cached and
	// shared read-only by every request carrying the same token): the times
	// checked on every use (notBefore is zero without nbf) and the
	// identifying claims for audit records.
	issuedAt, notBefore time.Time
	audit               map[string]string
}

// AuditClaims are the identifying claims copied into audit records.
func (p *Principal) AuditClaims() map[string]string { return p.audit }

// Verifier checks OIDC ID tokens against the configured issuers.
type Verifier struct {
	audience string
	limits   Limits
	byURL    map[string]*issuer
	now      func() time.Time

	mu    sync.Mutex
	jti   map[string]*jtiEntry
	cache map[[32]byte]*Principal // verified tokens by hash, until exp
}

type jtiEntry struct {
	uses int
	exp  time.Time
}

type issuer struct {
	cfg    IssuerConfig
	algs   []jose.SignatureAlgorithm
	client *http.Client
	minGap time.Duration

	mu        sync.Mutex
	keys      *jose.JSONWebKeySet
	fetchedAt time.Time
	lastTry   time.Time
	jwksURL   string
}

// NewVerifier builds a verifier. Issuer metadata is fetched lazily.
func NewVerifier(cfg *Config) (*Verifier, error) {
	v := &Verifier{audience: cfg.Audience, limits: cfg.Limits, byURL: map[string]*issuer{},
		now: time.Now, jti: map[string]*jtiEntry{}, cache: map[[32]byte]*Principal{}}
	for i, ic := range cfg.Issuers {
		roots, err := x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if ic.CA != "" {
			pemBytes, err := os.ReadFile(ic.CA)
			if err != nil {
				return nil, fmt.Errorf("issuers[%d].ca: %w", i, err)
			}
			if !roots.AppendCertsFromPEM(pemBytes) {
				return nil, fmt.Errorf("issuers[%d].ca: %s holds no PEM certificate", i, ic.CA)
			}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		is := &issuer{cfg: ic, client: &http.Client{Transport: tr, Timeout: 10 * time.Second},
			minGap: cfg.Limits.JWKSRefreshInterval}
		for _, a := range ic.Algorithms {
			is.algs = append(is.algs, jose.SignatureAlgorithm(a))
		}
		v.byURL[strings.TrimRight(ic.URL, "/")] = is
	}
	return v, nil
}

// Verify checks a raw token and counts one use of its jti.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Principal, error) {
	if raw == "" {
		return nil, authErr("", "missing bearer token: send Authorization: Bearer <OIDC ID token>")
	}
	if len(raw) > v.limits.MaxTokenBytes {
		return nil, authErr("", "token is %d bytes, over the %d byte limit", len(raw), v.limits.MaxTokenBytes)
	}
	now := v.now()
	h := sha256.Sum256([]byte(raw))
	v.mu.Lock()
	p, ok := v.cache[h]
	v.mu.Unlock()
	if !ok {
		var err error
		p, err = v.verify(ctx, raw, now)
		if err != nil {
			return nil, err
		}
	}
	// Checks that depend on the current time or on use counts run every
	// time (an expired cached token is refused here and dropped by gcLocked).
	if err := v.checkTimes(p, now); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !ok {
		v.gcLocked(now)
		v.cache[h] = p
	}
	if p.JTI != "" {
		key := p.IssuerURL + "\x00" + p.JTI
		e := v.jti[key]
		if e == nil {
			e = &jtiEntry{exp: p.Expiry.Add(v.limits.Leeway)}
			v.jti[key] = e
		}
		e.uses++
		if e.uses > v.limits.JTIUses {
			return nil, authErr(p.Issuer, "token (jti) already used %d times, over its budget of %d uses: request a fresh token", e.uses-1, v.limits.JTIUses)
		}
	}
	return p, nil
}

// known reports whether raw is a token this verifier has already verified and
// still caches (unexpired). It does not verify anything or count a use.
func (v *Verifier) known(raw string) bool {
	if raw == "" || len(raw) > v.limits.MaxTokenBytes {
		return false
	}
	h := sha256.Sum256([]byte(raw))
	v.mu.Lock()
	p, ok := v.cache[h]
	v.mu.Unlock()
	return ok && !v.now().After(p.Expiry.Add(v.limits.Leeway))
}

func (v *Verifier) gcLocked(now time.Time) {
	if len(v.cache) < 4096 && len(v.jti) < 65536 {
		return
	}
	for k, p := range v.cache {
		if now.After(p.Expiry.Add(v.limits.Leeway)) || len(v.cache) >= 4096 {
			delete(v.cache, k)
		}
	}
	for k, e := range v.jti {
		if now.After(e.exp) {
			delete(v.jti, k)
		}
	}
}

func (v *Verifier) checkTimes(p *Principal, now time.Time) error {
	lw := v.limits.Leeway
	if now.After(p.Expiry.Add(lw)) {
		return authErr(p.Issuer, "token expired at %s: request a fresh token", p.Expiry.UTC().Format(time.RFC3339))
	}
	if now.Add(lw).Before(p.notBefore) {
		return authErr(p.Issuer, "token not valid before %s (nbf)", p.notBefore.UTC().Format(time.RFC3339))
	}
	iat := p.issuedAt
	if now.Add(lw).Before(iat) {
		return authErr(p.Issuer, "token issued in the future (iat %s): check clocks", iat.UTC().Format(time.RFC3339))
	}
	if v.limits.MaxTokenAge > 0 && now.Sub(iat) > v.limits.MaxTokenAge+lw {
		return authErr(p.Issuer, "token issued at %s is older than the maximum token age %s", iat.UTC().Format(time.RFC3339), v.limits.MaxTokenAge)
	}
	return nil
}

func numericDate(v any) (time.Time, error) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, fmt.Errorf("not a number")
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(int64(f), 0), nil
}

// verify does the cryptographic and structural checks.
func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*Principal, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, authErr("", "token is not a compact JWS (want header.payload.signature)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, authErr("", "token payload is not base64url")
	}
	var unverified struct {
		Iss any `json:"iss"`
	}
	if err := json.Unmarshal(payload, &unverified); err != nil {
		return nil, authErr("", "token payload is not a JSON object")
	}
	issStr, ok := unverified.Iss.(string)
	if !ok {
		return nil, authErr("", "token iss claim is missing or not a string")
	}
	is := v.byURL[strings.TrimRight(issStr, "/")]
	if is == nil {
		return nil, authErr("", "token issuer is not configured on this signer")
	}
	if issStr != is.cfg.URL && issStr != strings.TrimRight(is.cfg.URL, "/") {
		return nil, authErr(is.cfg.Name, "token iss does not match the configured issuer URL exactly")
	}
	name := is.cfg.Name
	// The accepted algorithms are the issuer's configured list: "none",
	// HMAC and anything else in the header are refused here.
	jws, err := jose.ParseSigned(raw, is.algs)
	if err != nil {
		return nil, authErr(name, "token signature algorithm not accepted for issuer %s (allowed: %v)", name, is.cfg.Algorithms)
	}
	if len(jws.Signatures) != 1 {
		return nil, authErr(name, "token must carry exactly one signature")
	}
	hdr := jws.Signatures[0].Header
	key, err := is.key(ctx, hdr.KeyID, now)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != "" && key.Algorithm != hdr.Algorithm {
		return nil, authErr(name, "token alg %s differs from the JWKS key's alg %s", hdr.Algorithm, key.Algorithm)
	}
	verified, err := jws.Verify(key)
	if err != nil {
		return nil, authErr(name, "token signature does not verify against issuer %s's key %q", name, hdr.KeyID)
	}
	if !bytes.Equal(verified, payload) {
		return nil, authErr(name, "token payload mismatch")
	}
	dec := json.NewDecoder(bytes.NewReader(verified))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, authErr(name, "token claims are not a JSON object")
	}
	p := &Principal{Issuer: name, IssuerURL: is.cfg.URL, Platform: is.cfg.Platform, ServerURL: is.cfg.ServerURL, Claims: claims}
	if err := v.checkClaims(p); err != nil {
		return nil, err
	}
	p.audit = auditClaims(p.Claims)
	return p, nil
}

func (v *Verifier) checkClaims(p *Principal) error {
	c := p.Claims
	name := p.Issuer
	// aud: required; a string or an array of strings that contains ours.
	switch aud := c["aud"].(type) {
	case nil:
		return authErr(name, "token has no aud claim; request a token for audience %q", v.audience)
	case string:
		if aud != v.audience {
			return authErr(name, "token audience %q is not this signer's audience %q", aud, v.audience)
		}
	case []any:
		found := false
		for _, a := range aud {
			s, ok := a.(string)
			if !ok {
				return authErr(name, "token aud array holds a non-string")
			}
			if s == v.audience {
				found = true
			}
		}
		if !found {
			return authErr(name, "token audiences do not include this signer's audience %q", v.audience)
		}
	default:
		return authErr(name, "token aud claim has the wrong type %s", jsonType(aud))
	}
	for _, n := range []string{"exp", "iat"} {
		if _, ok := c[n]; !ok {
			return authErr(name, "token lacks the %s claim", n)
		}
	}
	for _, n := range []string{"exp", "iat", "nbf"} {
		if val, ok := c[n]; ok {
			if _, err := numericDate(val); err != nil {
				return authErr(name, "token claim %s has the wrong type %s: want a NumericDate", n, jsonType(val))
			}
		}
	}
	p.Expiry, _ = numericDate(c["exp"])
	p.issuedAt, _ = numericDate(c["iat"])
	if nbf, ok := c["nbf"]; ok {
		p.notBefore, _ = numericDate(nbf)
	}
	sub, ok := c["sub"].(string)
	if !ok || sub == "" {
		return authErr(name, "token sub claim is missing or not a string")
	}
	p.Subject = sub
	if j, present := c["jti"]; present {
		s, ok := j.(string)
		if !ok {
			return authErr(name, "token jti claim has the wrong type %s", jsonType(j))
		}
		p.JTI = s
	}
	return nil
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case json.Number, float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// key returns the JWKS key for kid, fetching or refreshing (rate-limited)
// when unknown.
func (is *issuer) key(ctx context.Context, kid string, now time.Time) (*jose.JSONWebKey, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if k := is.lookup(kid); k != nil && now.Sub(is.fetchedAt) < time.Hour {
		return k, nil
	}
	// Fetch when we have nothing or the set is over an hour old; refresh for
	// an unknown kid at most once per minGap (a flood of forged kids must
	// not turn into a flood of JWKS requests).
	stale := is.keys == nil || now.Sub(is.fetchedAt) >= time.Hour
	unknown := is.lookup(kid) == nil
	if stale || (unknown && now.Sub(is.lastTry) >= is.minGap) {
		if !stale {
			is.lastTry = now
		}
		if err := is.fetch(ctx); err != nil {
			if is.keys == nil {
				return nil, &AuthError{Issuer: is.cfg.Name, Reason: fmt.Sprintf("cannot fetch the keys of issuer %s: %v", is.cfg.Name, err)}
			}
		} else {
			is.fetchedAt = now
		}
	}
	if k := is.lookup(kid); k != nil {
		return k, nil
	}
	return nil, authErr(is.cfg.Name, "token key id %q is not in issuer %s's JWKS", kid, is.cfg.Name)
}

func (is *issuer) lookup(kid string) *jose.JSONWebKey {
	if is.keys == nil {
		return nil
	}
	if kid == "" {
		if len(is.keys.Keys) == 1 {
			return &is.keys.Keys[0]
		}
		return nil
	}
	ks := is.keys.Key(kid)
	if len(ks) == 0 {
		return nil
	}
	return &ks[0]
}

const maxMetadataBytes = 1 << 20

func (is *issuer) getJSON(ctx context.Context, u string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := is.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataBytes+1))
	if err != nil {
		return err
	}
	if len(b) > maxMetadataBytes {
		return fmt.Errorf("GET %s: response over %d bytes", u, maxMetadataBytes)
	}
	return json.Unmarshal(b, into)
}

func (is *issuer) fetch(ctx context.Context) error {
	if is.jwksURL == "" {
		var disc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		u := strings.TrimRight(is.cfg.URL, "/") + "/.well-known/openid-configuration"
		if err := is.getJSON(ctx, u, &disc); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
		if strings.TrimRight(disc.Issuer, "/") != strings.TrimRight(is.cfg.URL, "/") {
			return fmt.Errorf("discovery document names issuer %q, configured %q", disc.Issuer, is.cfg.URL)
		}
		if !strings.HasPrefix(disc.JWKSURI, "https://") {
			return errors.New("discovery jwks_uri is not https")
		}
		is.jwksURL = disc.JWKSURI
	}
	var set jose.JSONWebKeySet
	if err := is.getJSON(ctx, is.jwksURL, &set); err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	// Keep only public signature keys.
	var keys []jose.JSONWebKey
	for _, k := range set.Keys {
		if k.IsPublic() && (k.Use == "" || k.Use == "sig") {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return errors.New("jwks holds no public signing keys")
	}
	is.keys = &jose.JSONWebKeySet{Keys: keys}
	return nil
}
