package testbench

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signet-ci/signet/core"
)

// DefaultAudience is the audience the bench's signer configuration expects
// and the default aud of minted tokens.
const DefaultAudience = "https://signer.signet.test"

// IssuerOptions tune an issuer. The zero value is a platform's default setup.
type IssuerOptions struct {
	// Audience is the default aud of minted tokens (DefaultAudience when empty).
	Audience string
	// Alg is the token signing algorithm: RS256 (default) or ES256 (Jenkins
	// plugin option; the bench allows it on every issuer).
	Alg string
	// Lifetime overrides the platform's token lifetime.
	Lifetime time.Duration
	// JenkinsFolder (Jenkins only) serves a folder-scoped issuer
	// ${JENKINS_URL}oidc/job/FOLDER instead of the global ${JENKINS_URL}oidc.
	JenkinsFolder string
	// JenkinsClaimTemplates (Jenkins only) adds the claim templates git_url,
	// git_commit and branch to every token, as a Jenkins admin configures them
	// in the OpenID Connect Provider plugin.
	JenkinsClaimTemplates bool
	// GitLabEnvironment (GitLab only) sets the environment claims of a job
	// that deploys to this environment (environment, environment_protected,
	// deployment_tier, environment_action).
	GitLabEnvironment string
}

// signingKey is one key of an issuer's JWKS.
type signingKey struct {
	kid  string
	alg  string
	priv crypto.Signer
}

// Issuer is an OIDC issuer served over TLS on a free loopback port, with a
// discovery document at URL + "/.well-known/openid-configuration" and a JWKS.
// Platform issuers (GitHubIssuer, GitLabIssuer, JenkinsIssuer) embed it.
type Issuer struct {
	// Platform is github, gitlab or jenkins.
	Platform string
	// URL is the issuer (the iss claim), e.g. https://127.0.0.1:40123.
	URL string
	// BaseURL is the scheme://host:port of the server (the platform's web URL).
	BaseURL string
	// JWKSURL is the jwks_uri of the discovery document.
	JWKSURL string
	// CAPath is the PEM root that the issuer's TLS certificate chains to.
	CAPath string
	// Audience is the default aud of minted tokens.
	Audience string
	// Alg is the signing algorithm of minted tokens (RS256 or ES256).
	Alg string

	lifetime  time.Duration
	nbfBefore time.Duration // nbf = iat - nbfBefore; negative: no nbf claim
	defaults  func(now time.Time) map[string]any

	mu           sync.Mutex
	keys         []*signingKey // keys[len-1] signs; all are published
	jwksRequests atomic.Int64
	discoveryReq atomic.Int64
	down         atomic.Bool

	mux *http.ServeMux
	srv *http.Server
	ln  net.Listener
}

// issuerSpec is what a platform fixes about its issuer.
type issuerSpec struct {
	platform, issPath, jwksPath string
	// lifetime is the platform's token lifetime (opts.Lifetime overrides it).
	lifetime time.Duration
	// nbfBefore: nbf = iat - nbfBefore; negative: no nbf claim.
	nbfBefore time.Duration
}

// startIssuer listens on 127.0.0.1:0 with a CA-issued certificate and serves
// discovery + JWKS under spec.issPath ("" or "/oidc" ...). The caller sets
// defaults (the platform's claims).
func startIssuer(ctx context.Context, ca *CA, spec issuerSpec, opts IssuerOptions) (*Issuer, error) {
	platform, issPath, jwksPath, alg := spec.platform, spec.issPath, spec.jwksPath, opts.Alg
	if ca == nil {
		return nil, errors.New("testbench issuer: a CA is required (testbench.NewCA)")
	}
	if alg == "" {
		alg = "RS256"
	}
	if alg != "RS256" && alg != "ES256" {
		return nil, fmt.Errorf("testbench issuer: unsupported alg %q (use RS256 or ES256)", alg)
	}
	cert, err := ca.ServerCert()
	if err != nil {
		return nil, err
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testbench %s issuer: listen on loopback: %w", platform, err)
	}
	ln := tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	base := "https://" + raw.Addr().String()
	is := &Issuer{
		Platform:  platform,
		URL:       base + issPath,
		BaseURL:   base,
		JWKSURL:   base + jwksPath,
		CAPath:    ca.CAPath,
		Audience:  cmp.Or(opts.Audience, DefaultAudience),
		Alg:       alg,
		lifetime:  spec.lifetime,
		nbfBefore: spec.nbfBefore,
		mux:       http.NewServeMux(),
		ln:        ln,
	}
	if opts.Lifetime > 0 {
		is.lifetime = opts.Lifetime
	}
	k, err := newSigningKey(alg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	is.keys = []*signingKey{k}
	is.mux.HandleFunc("GET "+issPath+"/.well-known/openid-configuration", is.serveDiscovery)
	is.mux.HandleFunc("GET "+jwksPath, is.serveJWKS)
	is.srv = &http.Server{Handler: is.gate(is.mux), ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go is.srv.Serve(ln) //nolint:errcheck // ends with Close
	if ctx != nil {
		go func() {
			<-ctx.Done()
			is.Close()
		}()
	}
	return is, nil
}

func newSigningKey(alg string) (*signingKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case "RS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("testbench issuer: unsupported alg %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("testbench issuer: generate %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("testbench issuer: marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return &signingKey{kid: hex.EncodeToString(sum[:8]), alg: alg, priv: priv}, nil
}

// gate answers 503 to everything while the issuer is marked down.
func (is *Issuer) gate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if is.down.Load() {
			http.Error(w, "issuer down (testbench)", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// SetDown makes every endpoint of the issuer answer 503 (true) or serve again.
func (is *Issuer) SetDown(down bool) { is.down.Store(down) }

// Close stops the server.
func (is *Issuer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return is.srv.Shutdown(ctx)
}

// JWKSRequests counts the JWKS fetches so far (to test caching / refresh).
func (is *Issuer) JWKSRequests() int64 { return is.jwksRequests.Load() }

// DiscoveryRequests counts the discovery document fetches so far.
func (is *Issuer) DiscoveryRequests() int64 { return is.discoveryReq.Load() }

// KeyID returns the kid of the current signing key.
func (is *Issuer) KeyID() string {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.keys[len(is.keys)-1].kid
}

// RotateKey adds a new signing key; the JWKS publishes old and new keys and
// new tokens carry the new kid (a verifier with a cached JWKS must refresh).
func (is *Issuer) RotateKey() (kid string, err error) {
	k, err := newSigningKey(is.Alg)
	if err != nil {
		return "", err
	}
	is.mu.Lock()
	is.keys = append(is.keys, k)
	is.mu.Unlock()
	return k.kid, nil
}

func (is *Issuer) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	is.discoveryReq.Add(1)
	claims := []string{}
	for k := range is.defaults(time.Now()) {
		claims = append(claims, k)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                is.URL,
		"jwks_uri":                              is.JWKSURL,
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public", "pairwise"},
		"id_token_signing_alg_values_supported": []string{is.Alg},
		"scopes_supported":                      []string{"openid"},
		"claims_supported":                      claims,
	})
}

func (is *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	is.jwksRequests.Add(1)
	is.mu.Lock()
	keys := make([]map[string]any, 0, len(is.keys))
	for _, k := range is.keys {
		keys = append(keys, jwk(k))
	}
	is.mu.Unlock()
	w.Header().Set("Cache-Control", "max-age=300")
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func jwk(k *signingKey) map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	switch pub := k.priv.Public().(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "alg": k.alg, "use": "sig", "kid": k.kid,
			"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}
	case *ecdsa.PublicKey:
		ecdh, _ := pub.ECDH()
		raw := ecdh.Bytes() // 0x04 || X || Y
		size := (len(raw) - 1) / 2
		return map[string]any{"kty": "EC", "alg": k.alg, "use": "sig", "kid": k.kid, "crv": "P-256",
			"x": b64(raw[1 : 1+size]), "y": b64(raw[1+size:])}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // client gone
}

// Claims returns the platform's default claims for a token issued now, with
// overrides merged over them. An override whose value is nil deletes the claim.
func (is *Issuer) Claims(overrides map[string]any) map[string]any {
	return is.claimsAt(time.Now(), overrides)
}

func (is *Issuer) claimsAt(now time.Time, overrides map[string]any) map[string]any {
	c := is.defaults(now)
	c["iss"] = is.URL
	c["aud"] = is.Audience
	c["iat"] = now.Unix()
	c["exp"] = now.Add(is.lifetime).Unix()
	if is.nbfBefore >= 0 {
		c["nbf"] = now.Add(-is.nbfBefore).Unix()
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// Mint signs a token carrying the platform's default claims with claims
// merged over them (a nil value deletes a default claim).
func (is *Issuer) Mint(claims map[string]any) (string, error) {
	is.mu.Lock()
	k := is.keys[len(is.keys)-1]
	is.mu.Unlock()
	return signJWT(map[string]any{"alg": k.alg, "kid": k.kid, "typ": "JWT"}, is.Claims(claims), k.priv)
}

// MintAt signs a token as if issued at the given time (iat/nbf/exp follow the
// platform's lifetime from there).
func (is *Issuer) MintAt(at time.Time, claims map[string]any) (string, error) {
	is.mu.Lock()
	k := is.keys[len(is.keys)-1]
	is.mu.Unlock()
	return signJWT(map[string]any{"alg": k.alg, "kid": k.kid, "typ": "JWT"}, is.claimsAt(at, claims), k.priv)
}

// MintExpired signs a valid-looking token that expired an hour ago (issued
// lifetime + 1h ago).
func (is *Issuer) MintExpired(claims map[string]any) (string, error) {
	return is.MintAt(time.Now().Add(-is.lifetime-time.Hour), claims)
}

// MintNotYetValid signs a token issued an hour in the future (iat/nbf ahead).
func (is *Issuer) MintNotYetValid(claims map[string]any) (string, error) {
	return is.MintAt(time.Now().Add(time.Hour), claims)
}

// MintWrongAudience signs a token whose aud is not the signer's.
func (is *Issuer) MintWrongAudience(claims map[string]any) (string, error) {
	c := maps.Clone(claims)
	if c == nil {
		c = map[string]any{}
	}
	c["aud"] = "https://not-the-signer.example.com"
	return is.Mint(c)
}

// MintForeignKey signs a token with a key that is NOT in the JWKS but
// announces the current kid (a forgery).
func (is *Issuer) MintForeignKey(claims map[string]any) (string, error) {
	other, err := newSigningKey(is.Alg)
	if err != nil {
		return "", err
	}
	return signJWT(map[string]any{"alg": is.Alg, "kid": is.KeyID(), "typ": "JWT"}, is.Claims(claims), other.priv)
}

// MintUnknownKid signs with a key absent from the JWKS under a kid the JWKS
// does not list (the verifier refreshes the JWKS, then must refuse).
func (is *Issuer) MintUnknownKid(claims map[string]any) (string, error) {
	other, err := newSigningKey(is.Alg)
	if err != nil {
		return "", err
	}
	return signJWT(map[string]any{"alg": is.Alg, "kid": "unknown-" + other.kid, "typ": "JWT"}, is.Claims(claims), other.priv)
}

// MintAlgNone returns an unsigned token (alg "none", empty signature).
func (is *Issuer) MintAlgNone(claims map[string]any) (string, error) {
	h, p, err := encodeParts(map[string]any{"alg": "none", "typ": "JWT"}, is.Claims(claims))
	if err != nil {
		return "", err
	}
	return h + "." + p + ".", nil
}

// MintHS256PublicKey returns a token MACed with HS256 using the issuer's
// public key PEM as the HMAC secret (the classic algorithm-confusion attack).
func (is *Issuer) MintHS256PublicKey(claims map[string]any) (string, error) {
	is.mu.Lock()
	k := is.keys[len(is.keys)-1]
	is.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(k.priv.Public())
	if err != nil {
		return "", fmt.Errorf("testbench: marshal public key: %w", err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	h, p, err := encodeParts(map[string]any{"alg": "HS256", "kid": k.kid, "typ": "JWT"}, is.Claims(claims))
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(h + "." + p))
	return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}

// MintTampered mints a valid token, then swaps its payload for one with the
// overrides applied, keeping the original signature.
func (is *Issuer) MintTampered(claims, tamper map[string]any) (string, error) {
	tok, err := is.Mint(claims)
	if err != nil {
		return "", err
	}
	parts := strings.Split(tok, ".")
	c := is.Claims(claims)
	for k, v := range tamper {
		c[k] = v
	}
	_, p, err := encodeParts(nil, c)
	if err != nil {
		return "", err
	}
	return parts[0] + "." + p + "." + parts[2], nil
}

func encodeParts(header, claims map[string]any) (string, string, error) {
	var h string
	if header != nil {
		hb, err := json.Marshal(header)
		if err != nil {
			return "", "", fmt.Errorf("testbench: encode JWT header: %w", err)
		}
		h = base64.RawURLEncoding.EncodeToString(hb)
	}
	pb, err := json.Marshal(claims)
	if err != nil {
		return "", "", fmt.Errorf("testbench: encode JWT claims: %w", err)
	}
	return h, base64.RawURLEncoding.EncodeToString(pb), nil
}

// signJWT produces a compact JWS (RS256 or ES256 per header alg).
func signJWT(header, claims map[string]any, priv crypto.Signer) (string, error) {
	h, p, err := encodeParts(header, claims)
	if err != nil {
		return "", err
	}
	input := h + "." + p
	sum := sha256.Sum256([]byte(input))
	var sig []byte
	switch key := priv.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, key, sum[:])
		if err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	default:
		return "", fmt.Errorf("testbench: unsupported signing key %T", priv)
	}
	if err != nil {
		return "", fmt.Errorf("testbench: sign JWT: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ParseUnverified decodes a JWT's claims without checking the signature
// (for assertions in tests only): core.UnverifiedClaims.
func ParseUnverified(token string) (map[string]any, error) {
	return core.UnverifiedClaims(token)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) //nolint:errcheck // crypto/rand never fails
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b) //nolint:errcheck
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
