package signer_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer"
	"github.com/signet-ci/signet/testbench"
)

func TestHostileTokens(t *testing.T) {
	cfg := fx.baseConfig(t)
	cfg.Limits.JTIUses = 2
	ts := fx.start(t, cfg)
	now := time.Now()
	tests := []struct {
		name  string
		token func() (string, error)
		want  string
	}{
		{"alg none", func() (string, error) { return fx.gh.MintAlgNone(nil) }, "algorithm not accepted"},
		{"HS256 signed with the issuer's public key", func() (string, error) { return fx.gh.MintHS256PublicKey(nil) }, "algorithm not accepted"},
		{"wrong issuer (GitLab key, GitHub iss)", func() (string, error) { return fx.gl.Mint(map[string]any{"iss": fx.gh.URL}) }, "is not in issuer github's JWKS"},
		{"unconfigured issuer", func() (string, error) { return fx.rogue.Mint(nil) }, "issuer is not configured"},
		{"wrong aud", func() (string, error) { return fx.gh.MintWrongAudience(nil) }, "is not this signer's audience"},
		{"aud list without ours", func() (string, error) {
			return fx.gh.Mint(map[string]any{"aud": []string{"https://a.example", "https://b.example"}})
		}, "do not include this signer's audience"},
		{"missing aud", func() (string, error) { return fx.gh.Mint(map[string]any{"aud": nil}) }, "no aud claim"},
		{"expired", func() (string, error) { return fx.gh.MintExpired(nil) }, "expired"},
		{"nbf in the future", func() (string, error) {
			return fx.gh.Mint(map[string]any{"nbf": now.Add(time.Hour).Unix()})
		}, "not valid before"},
		{"iat in the future", func() (string, error) {
			return fx.gh.Mint(map[string]any{"iat": now.Add(time.Hour).Unix(), "nbf": nil})
		}, "issued in the future"},
		{"iat too old", func() (string, error) {
			return fx.gh.Mint(map[string]any{"iat": now.Add(-3 * time.Hour).Unix(), "nbf": now.Add(-3 * time.Hour).Unix()})
		}, "older than the maximum token age"},
		{"unknown kid", func() (string, error) { return fx.gh.MintUnknownKid(nil) }, "is not in issuer github's JWKS"},
		{"bad signature (foreign key, known kid)", func() (string, error) { return fx.gh.MintForeignKey(nil) }, "does not verify"},
		{"tampered payload", func() (string, error) {
			return fx.gh.MintTampered(nil, map[string]any{"repository_id": "1"})
		}, "does not verify"},
		{"oversized token", func() (string, error) {
			return fx.gh.Mint(map[string]any{"padding": strings.Repeat("x", 20000)})
		}, "byte limit"},
		{"exp of the wrong type", func() (string, error) { return fx.gh.Mint(map[string]any{"exp": "tomorrow"}) }, "claim exp has the wrong type string"},
		{"missing exp", func() (string, error) { return fx.gh.Mint(map[string]any{"exp": nil}) }, "lacks the exp claim"},
		{"sub of the wrong type", func() (string, error) { return fx.gh.Mint(map[string]any{"sub": 42}) }, "sub claim"},
		{"aud of the wrong type", func() (string, error) { return fx.gh.Mint(map[string]any{"aud": 7}) }, "aud claim has the wrong type number"},
		{"jti of the wrong type", func() (string, error) { return fx.gh.Mint(map[string]any{"jti": true}) }, "jti claim has the wrong type boolean"},
		{"iss of the wrong type", func() (string, error) { return fx.gh.Mint(map[string]any{"iss": 1}) }, "iss claim is missing or not a string"},
		{"not a JWT", func() (string, error) { return "abc.def", nil }, "not a compact JWS"},
		{"no token", func() (string, error) { return "", nil }, "missing bearer token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := tc.token()
			if err != nil {
				t.Fatal(err)
			}
			code, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a"), nil)
			if code != http.StatusUnauthorized || apiErr == nil || apiErr.Code != core.ErrCodeUnauthenticated {
				t.Fatalf("want 401 unauthenticated, got %d %+v", code, apiErr)
			}
			if !strings.Contains(apiErr.Message, tc.want) {
				t.Fatalf("message %q lacks %q", apiErr.Message, tc.want)
			}
			if tok != "" && strings.Contains(apiErr.Message, tok) {
				t.Fatal("error echoes the token")
			}
		})
	}
	t.Run("replayed jti beyond its budget", func(t *testing.T) {
		tok := mint(t, fx.gh, nil)
		for i := 0; i < 2; i++ {
			if _, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a"), nil); apiErr != nil {
				t.Fatalf("use %d within budget: %+v", i+1, apiErr)
			}
		}
		code, apiErr := ts.call(t, "/v1/attest", tok, core.AttestRequest{Key: "ecdsa-p256", Statement: []byte(`{}`)}, nil)
		if code != http.StatusUnauthorized || !strings.Contains(apiErr.Message, "budget of 2") {
			t.Fatalf("third use: %d %+v", code, apiErr)
		}
		// A fresh token (new jti) of the same job still works.
		if _, apiErr := ts.call(t, "/v1/sign", mint(t, fx.gh, nil), signReq("ecdsa-p256", "a"), nil); apiErr != nil {
			t.Fatalf("fresh token: %+v", apiErr)
		}
	})
	t.Run("token without jti (Jenkins) is not budgeted", func(t *testing.T) {
		tok := mint(t, fx.jk, nil)
		for i := 0; i < 4; i++ {
			if _, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a"), nil); apiErr != nil {
				t.Fatalf("use %d: %+v", i+1, apiErr)
			}
		}
	})
	n, err := signer.VerifyAuditLog(ts.cfg.Audit.Path)
	want := uint64(len(tests) + 4 + 4)
	if err != nil || n != want {
		t.Fatalf("audit: %d records (%v), want every request audited (%d)", n, err, want)
	}
}

func TestJWKSRotationAndRateLimitedRefresh(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	is, err := testbench.StartGitHubIssuer(ctx, fx.ca, testbench.IssuerOptions{Alg: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := fx.baseConfig(t)
	cfg.Issuers[0].URL = is.URL
	cfg.Issuers[0].Algorithms = []string{"ES256"}
	ts := fx.start(t, cfg)
	if _, apiErr := ts.call(t, "/v1/sign", mint(t, is, nil), signReq("ecdsa-p256", "a"), nil); apiErr != nil {
		t.Fatalf("first: %+v", apiErr)
	}
	if is.JWKSRequests() != 1 || is.DiscoveryRequests() != 1 {
		t.Fatalf("jwks %d discovery %d", is.JWKSRequests(), is.DiscoveryRequests())
	}
	// Cached: more tokens with the same kid fetch nothing.
	for i := 0; i < 3; i++ {
		if _, apiErr := ts.call(t, "/v1/sign", mint(t, is, nil), signReq("ecdsa-p256", "a"), nil); apiErr != nil {
			t.Fatal(apiErr)
		}
	}
	if is.JWKSRequests() != 1 {
		t.Fatalf("jwks fetched %d times; want the cache used", is.JWKSRequests())
	}
	// The issuer rotates: the unknown kid triggers one refresh.
	if _, err := is.RotateKey(); err != nil {
		t.Fatal(err)
	}
	if _, apiErr := ts.call(t, "/v1/sign", mint(t, is, nil), signReq("ecdsa-p256", "a"), nil); apiErr != nil {
		t.Fatalf("after rotation: %+v", apiErr)
	}
	if is.JWKSRequests() != 2 {
		t.Fatalf("jwks fetched %d times, want 2", is.JWKSRequests())
	}
	// A flood of unknown kids does not turn into a flood of JWKS fetches.
	for i := 0; i < 5; i++ {
		tok, _ := is.MintUnknownKid(nil)
		if code, _ := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a"), nil); code != http.StatusUnauthorized {
			t.Fatalf("unknown kid accepted: %d", code)
		}
	}
	if is.JWKSRequests() != 2 {
		t.Fatalf("jwks fetched %d times during the unknown-kid flood; want rate-limited to 2", is.JWKSRequests())
	}
	// RS256 is not on this issuer's list: a token of a different algorithm
	// from the "same" issuer is refused.
	rs, _ := testbench.StartGitHubIssuer(ctx, fx.ca, testbench.IssuerOptions{})
	tok, _ := rs.Mint(map[string]any{"iss": is.URL})
	if code, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a"), nil); code != http.StatusUnauthorized || !strings.Contains(apiErr.Message, "algorithm not accepted") {
		t.Fatalf("RS256 for an ES256 issuer: %d %+v", code, apiErr)
	}
}

func TestIssuerWithoutCARootIsRefused(t *testing.T) {
	cfg := fx.baseConfig(t)
	cfg.Issuers[0].CA = "" // the bench CA is not a system root
	ts := fx.start(t, cfg)
	code, apiErr := ts.call(t, "/v1/sign", mint(t, fx.gh, nil), signReq("ecdsa-p256", "a"), nil)
	if code != http.StatusUnauthorized || !strings.Contains(apiErr.Message, "cannot fetch the keys of issuer github") {
		t.Fatalf("got %d %+v", code, apiErr)
	}
}

// A verified token is cached, but the cache does not outlive it: the time
// checks run on every use, so the same token is refused once it expires.
func TestCachedTokenExpires(t *testing.T) {
	cfg := fx.baseConfig(t)
	cfg.Limits.Leeway = time.Nanosecond
	ts := fx.start(t, cfg)
	exp := time.Now().Add(2500 * time.Millisecond)
	tok := mint(t, fx.gh, map[string]any{"exp": exp.Unix()})
	if _, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a"), nil); apiErr != nil {
		t.Fatalf("before expiry: %+v", apiErr)
	}
	time.Sleep(time.Until(time.Unix(exp.Unix(), 0)) + 100*time.Millisecond)
	code, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a"), nil)
	if code != http.StatusUnauthorized || apiErr == nil || !strings.Contains(apiErr.Message, "expired") {
		t.Fatalf("after expiry: want 401 expired, got %d %+v", code, apiErr)
	}
}
