package testbench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

func TestIssuersVerifyWithGoOIDC(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gh, err := StartGitHubIssuer(ctx, ca, IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gl, err := StartGitLabIssuer(ctx, ca, IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jk, err := StartJenkinsIssuer(ctx, ca, IssuerOptions{JenkinsClaimTemplates: true})
	if err != nil {
		t.Fatal(err)
	}
	jkES, err := StartJenkinsIssuer(ctx, ca, IssuerOptions{Alg: "ES256", JenkinsFolder: "team"})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSClientConfig()}}
	octx := oidc.ClientContext(ctx, client)

	type minter interface {
		Mint(map[string]any) (string, error)
	}
	cases := []struct {
		name     string
		is       *Issuer
		alg      string
		want     []string // claims that must be present
		wantNone []string // claims that must be absent
	}{
		{"github", gh.Issuer, "RS256", []string{"jti", "sub", "repository_id", "repository_owner_id", "job_workflow_ref", "runner_environment", "nbf", "run_attempt"}, nil},
		{"gitlab", gl.Issuer, "RS256", []string{"jti", "namespace_id", "project_path", "ci_config_ref_uri", "ref_path", "runner_id", "nbf"}, []string{"environment"}},
		{"jenkins", jk.Issuer, "RS256", []string{"sub", "build_number", "git_url", "git_commit", "branch"}, []string{"jti", "nbf"}},
		{"jenkins-folder-es256", jkES.Issuer, "ES256", []string{"sub", "build_number"}, []string{"jti", "nbf", "git_url"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := oidc.NewProvider(octx, tc.is.URL)
			if err != nil {
				t.Fatalf("discovery: %v", err)
			}
			v := p.Verifier(&oidc.Config{ClientID: DefaultAudience, SupportedSigningAlgs: []string{tc.alg}})
			tok, err := tc.is.Mint(map[string]any{"extra": "x"})
			if err != nil {
				t.Fatal(err)
			}
			idt, err := v.Verify(octx, tok)
			if err != nil {
				t.Fatalf("verify good token: %v", err)
			}
			var c map[string]any
			if err := idt.Claims(&c); err != nil {
				t.Fatal(err)
			}
			for _, k := range tc.want {
				if _, ok := c[k]; !ok {
					t.Errorf("claim %q missing", k)
				}
			}
			for _, k := range tc.wantNone {
				if _, ok := c[k]; ok {
					t.Errorf("claim %q must be absent", k)
				}
			}
			if c["extra"] != "x" || c["iss"] != tc.is.URL {
				t.Errorf("override/iss wrong: %v %v", c["extra"], c["iss"])
			}
			hostile := map[string]func(map[string]any) (string, error){
				"expired":      tc.is.MintExpired,
				"wrong-aud":    tc.is.MintWrongAudience,
				"foreign-key":  tc.is.MintForeignKey,
				"unknown-kid":  tc.is.MintUnknownKid,
				"alg-none":     tc.is.MintAlgNone,
				"hs256-pubkey": tc.is.MintHS256PublicKey,
				"future":       tc.is.MintNotYetValid,
				"tampered": func(c map[string]any) (string, error) {
					return tc.is.MintTampered(c, map[string]any{"sub": "evil"})
				},
			}
			if tc.is.nbfBefore < 0 {
				// go-oidc checks nbf but not a future iat; without nbf (Jenkins)
				// only the signer's iat check refuses it.
				delete(hostile, "future")
			}
			for name, mint := range hostile {
				tok, err := mint(nil)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if _, err := v.Verify(octx, tok); err == nil {
					t.Errorf("%s token verified; want refusal", name)
				}
			}
		})
	}
	var _ minter = gh

	t.Run("github-request-endpoint", func(t *testing.T) {
		get := func(bearer, aud string) (*http.Response, []byte) {
			u := gh.RequestURL
			if aud != "" {
				u += "&audience=" + aud
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if bearer != "" {
				req.Header.Set("Authorization", "Bearer "+bearer)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, b
		}
		if r, _ := get("", ""); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("no bearer: status %d, want 401", r.StatusCode)
		}
		if r, _ := get("wrong", ""); r.StatusCode != http.StatusForbidden {
			t.Errorf("bad bearer: status %d, want 403", r.StatusCode)
		}
		gh.SetRequestClaims(map[string]any{"ref": "refs/tags/v1.0.0"})
		r, b := get(gh.RequestToken, DefaultAudience)
		if r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, b)
		}
		var body struct {
			Value string `json:"value"`
		}
		if err := json.Unmarshal(b, &body); err != nil || body.Value == "" {
			t.Fatalf("body %s: %v", b, err)
		}
		c, err := ParseUnverified(body.Value)
		if err != nil {
			t.Fatal(err)
		}
		if c["aud"] != DefaultAudience || c["ref"] != "refs/tags/v1.0.0" {
			t.Errorf("aud=%v ref=%v", c["aud"], c["ref"])
		}
		_, b = get(gh.RequestToken, "")
		json.Unmarshal(b, &body)
		c, _ = ParseUnverified(body.Value)
		if c["aud"] != "https://github.com/"+GitHubOwner {
			t.Errorf("default aud = %v", c["aud"])
		}
		if gh.Env(t.TempDir())["ACTIONS_ID_TOKEN_REQUEST_URL"] != gh.RequestURL {
			t.Error("Env lacks the request URL")
		}
	})

	t.Run("rotation", func(t *testing.T) {
		old := gh.KeyID()
		kid, err := gh.RotateKey()
		if err != nil || kid == old {
			t.Fatalf("rotate: %v %q", err, kid)
		}
		p, _ := oidc.NewProvider(octx, gh.URL)
		v := p.Verifier(&oidc.Config{ClientID: DefaultAudience})
		tok, _ := gh.Mint(nil)
		if _, err := v.Verify(octx, tok); err != nil {
			t.Fatalf("rotated key token: %v", err)
		}
	})

	t.Run("tls-untrusted", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}, Timeout: 5 * time.Second}
		_, err := c.Get(gh.URL + "/.well-known/openid-configuration")
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("untrusted client connected: %v", err)
		}
	})
}

func TestSoftHSMKeys(t *testing.T) {
	h, err := NewSoftHSM(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-3072", "ed25519"} {
		uri, err := h.CreateKey("k-"+alg, alg)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if !strings.Contains(uri, "object=k-"+alg) {
			t.Errorf("uri %q", uri)
		}
	}
	if _, err := h.CreateKey("k-ed25519", "ed25519"); err == nil {
		t.Error("duplicate label accepted")
	}
	// A second instance in the same process has its own token.
	h2, err := NewSoftHSM(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h2.CreateKey("k-ed25519", "ed25519"); err != nil {
		t.Errorf("second instance: %v", err)
	}
}
