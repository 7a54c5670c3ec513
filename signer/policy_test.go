package signer_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer"
	"github.com/signet-ci/signet/testbench"
)

// policyConfig: "release" (code) allows tags of the bench repository;
// "firmware" (ed25519) allows the same repository but only via a rule
// restricted to code keys, and a GitLab rule with a number-valued claim.
func policyConfig(t *testing.T) *signer.Config {
	t.Helper()
	dir := t.TempDir()
	y := fmt.Sprintf(`
audience: %s
issuers:
  - {name: github, url: %s, ca: %s}
  - {name: gitlab, url: %s, ca: %s}
keys:
  - name: release
    purpose: code
    uri: %q
    allow:
      - issuer: github
        claims: {repository_id: %q, ref: "refs/tags/v*", run_attempt: "1"}
  - name: firmware
    purpose: firmware
    uri: %q
    allow:
      - issuer: github
        purpose: code
        claims: {repository_id: %q}
      - issuer: gitlab
        claims: {project_id: %q, ref_protected: "true"}
audit: {path: %s/audit.jsonl}
`, testbench.DefaultAudience, fx.gh.URL, fx.ca.CAPath, fx.gl.URL, fx.ca.CAPath,
		fx.hsm.URI("ecdsa-p256"), testbench.GitHubRepositoryID,
		fx.hsm.URI("ed25519"), testbench.GitHubRepositoryID, testbench.GitLabProjectID, dir)
	cfg, err := signer.ParseConfig([]byte(y), dir)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestPolicyMatrix(t *testing.T) {
	ts := fx.start(t, policyConfig(t))
	tag := map[string]any{"ref": "refs/tags/v1.2.3"}
	tests := []struct {
		name     string
		token    func() (string, error)
		key      string
		wantCode string // "" = allowed
		wantMsg  []string
	}{
		{"right repo and tag", func() (string, error) { return fx.gh.Mint(tag) }, "release", "", nil},
		{"run_attempt as JSON number matches string rule", func() (string, error) {
			return fx.gh.Mint(map[string]any{"ref": "refs/tags/v2", "run_attempt": 1})
		}, "release", "", nil},
		{"other repository", func() (string, error) {
			return fx.gh.Mint(map[string]any{"ref": "refs/tags/v1", "repository_id": "999", "repository": "evil/fork"})
		}, "release", core.ErrCodePolicyDenied, []string{"allow[0]", `claim "repository_id" is "999"`}},
		{"other ref (branch)", func() (string, error) { return fx.gh.Mint(nil) }, "release", core.ErrCodePolicyDenied,
			[]string{`claim "ref" is "refs/heads/main"`, `"refs/tags/v*"`}},
		{"several claims differ: the first by name is named", func() (string, error) {
			return fx.gh.Mint(map[string]any{"repository_id": "999", "run_attempt": "2"})
		}, "release", core.ErrCodePolicyDenied, []string{`claim "ref" is "refs/heads/main"`}},
		{"glob does not cross slash", func() (string, error) {
			return fx.gh.Mint(map[string]any{"ref": "refs/tags/v1/evil"})
		}, "release", core.ErrCodePolicyDenied, []string{`claim "ref"`}},
		{"other issuer", func() (string, error) { return fx.gl.Mint(nil) }, "release", core.ErrCodePolicyDenied,
			[]string{`issuer is "gitlab", rule wants "github"`}},
		{"wrong key purpose", func() (string, error) { return fx.gh.Mint(tag) }, "firmware", core.ErrCodePurposeMismatch,
			[]string{"rule is for code keys", "firmware"}},
		{"gitlab boolean-ish claim", func() (string, error) { return fx.gl.Mint(map[string]any{"ref_protected": "true"}) }, "firmware", "", nil},
		{"gitlab claim as JSON boolean", func() (string, error) { return fx.gl.Mint(map[string]any{"ref_protected": true}) }, "firmware", "", nil},
		{"gitlab unprotected ref", func() (string, error) { return fx.gl.Mint(map[string]any{"ref_protected": "false"}) }, "firmware",
			core.ErrCodePolicyDenied, []string{`claim "ref_protected" is "false"`}},
		{"claim missing", func() (string, error) { return fx.gh.Mint(map[string]any{"ref": "refs/tags/v1", "run_attempt": nil}) }, "release",
			core.ErrCodePolicyDenied, []string{`claim "run_attempt" is missing`}},
		{"claim of wrong type", func() (string, error) {
			return fx.gh.Mint(map[string]any{"ref": "refs/tags/v1", "repository_id": []string{testbench.GitHubRepositoryID}})
		}, "release", core.ErrCodePolicyDenied, []string{`claim "repository_id" is a array`}},
		{"unknown key", func() (string, error) { return fx.gh.Mint(tag) }, "nope", core.ErrCodeUnknownKey, []string{`"nope"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := tc.token()
			if err != nil {
				t.Fatal(err)
			}
			code, apiErr := ts.call(t, "/v1/sign", tok, signReq(tc.key, "a.bin"), nil)
			if tc.wantCode == "" {
				if apiErr != nil {
					t.Fatalf("want allowed, got %d %+v", code, apiErr)
				}
				return
			}
			if apiErr == nil || apiErr.Code != tc.wantCode {
				t.Fatalf("want %s, got %d %+v", tc.wantCode, code, apiErr)
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(apiErr.Message, m) {
					t.Errorf("message %q lacks %q", apiErr.Message, m)
				}
			}
			if strings.Contains(apiErr.Message, tok) || strings.Contains(apiErr.Message, strings.Split(tok, ".")[2]) {
				t.Fatal("refusal echoes the token")
			}
		})
	}
	n, err := signer.VerifyAuditLog(ts.cfg.Audit.Path)
	if err != nil || n != uint64(len(tests)) {
		t.Fatalf("audit has %d records (%v), want one per request (%d)", n, err, len(tests))
	}
}

func TestConfigValidationNamesTheField(t *testing.T) {
	base := func(extra string) string {
		return `
audience: https://s
issuers:
  - {name: github, url: https://token.actions.githubusercontent.com}
keys:
  - name: k
    purpose: code
    uri: "pkcs11:token=t;object=k?module-path=/x.so"
    allow:
      - {issuer: github, claims: {repository_id: "1"}}
audit: {path: /tmp/a.jsonl}
` + extra
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"ok", base(""), ""},
		{"unknown field", base("colour: blue\n"), "colour"},
		{"missing audience", strings.Replace(base(""), "audience: https://s", "", 1), "audience"},
		{"bad purpose", strings.Replace(base(""), "purpose: code", "purpose: docs", 1), "keys[0].purpose"},
		{"rule names unknown issuer", strings.Replace(base(""), "{issuer: github,", "{issuer: gitlab,", 1), "keys[0].allow[0].issuer"},
		{"rule without claims", strings.Replace(base(""), "claims: {repository_id: \"1\"}", "claims: {}", 1), "keys[0].allow[0].claims"},
		{"bad glob", strings.Replace(base(""), `repository_id: "1"`, `ref: "refs/[x"`, 1), "keys[0].allow[0].claims.ref"},
		{"http issuer", strings.Replace(base(""), "https://token", "http://token", 1), "issuers[0].url"},
		{"hs256 not allowed", strings.Replace(base(""), "githubusercontent.com}", "githubusercontent.com, algorithms: [HS256]}", 1), "issuers[0].algorithms"},
		{"bad uri", strings.Replace(base(""), `"pkcs11:token=t;object=k?module-path=/x.so"`, "vault:k", 1), "keys[0].uri"},
		{"non-loopback without tls", base("listen: 0.0.0.0:8443\n"), "tls"},
		{"bad platform", strings.Replace(base(""), "{name: github, url:", "{name: gh, url:", 1), "issuers[0].platform"},
		{"negative jti uses", base("limits: {jti_uses: -1}\n"), "limits.jti_uses"},
		{"missing audit", strings.Replace(base(""), "audit: {path: /tmp/a.jsonl}", "", 1), "audit.path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := signer.ParseConfig([]byte(tc.yaml), t.TempDir())
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Limits.MaxDigests != 1000 || cfg.Issuers[0].Algorithms[0] != "RS256" || cfg.Issuers[0].Platform != "github" || cfg.Limits.MaxTokenAge != time.Hour {
					t.Fatalf("defaults not applied: %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error naming %q, got %v", tc.want, err)
			}
		})
	}
}

func TestRequestLimits(t *testing.T) {
	cfg := fx.baseConfig(t)
	cfg.Limits.MaxDigests = 3
	cfg.Limits.MaxBodyBytes = 4096
	cfg.Limits.RatePerSecond = 0.001
	cfg.Limits.RateBurst = 8
	ts := fx.start(t, cfg)
	tok := mint(t, fx.gh, nil)
	// max_digests is advertised and enforced.
	var sr core.SignResponse
	if _, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a", "b", "c"), &sr); apiErr != nil || sr.Key.MaxDigests != 3 {
		t.Fatalf("3 digests: %+v %+v", apiErr, sr.Key)
	}
	if code, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a", "b", "c", "d"), nil); code != http.StatusRequestEntityTooLarge || apiErr.Code != core.ErrCodeTooLarge {
		t.Fatalf("4 digests: %d %+v", code, apiErr)
	}
	big := `{"key":"ecdsa-p256","digests":[{"name":"` + strings.Repeat("x", 5000) + `","sha256":"` + digestOf(nil) + `"}]}`
	if code, apiErr := ts.callRaw(t, "/v1/sign", tok, []byte(big), nil); code != http.StatusRequestEntityTooLarge || apiErr.Code != core.ErrCodeTooLarge {
		t.Fatalf("big body: %d %+v", code, apiErr)
	}
	for _, bad := range []string{
		`{"key":"ecdsa-p256","digests":[{"name":"a","sha256":"XYZ"}]}`,
		`{"key":"ecdsa-p256","digests":[{"name":"a","sha256":"` + strings.ToUpper(digestOf(nil)) + `"}]}`,
		`{"key":"ecdsa-p256","digests":[]}`,
		`{"key":"ecdsa-p256","digests":[{"name":"a","sha256":"` + digestOf(nil) + `"}],"extra":1}`,
		`not json`,
	} {
		if code, apiErr := ts.callRaw(t, "/v1/sign", tok, []byte(bad), nil); code != http.StatusBadRequest || apiErr.Code != core.ErrCodeBadRequest {
			t.Fatalf("%s: %d %+v", bad, code, apiErr)
		}
	}
	// The burst of 8 is used up by now: the next request of this identity is 429.
	code, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a"), nil)
	if code != http.StatusTooManyRequests || apiErr.Code != core.ErrCodeRateLimited {
		t.Fatalf("rate limit: %d %+v", code, apiErr)
	}
	// Another identity has its own bucket.
	other := mint(t, fx.gh, map[string]any{"sub": "repo:signet-ci/demo:ref:refs/heads/other"})
	if _, apiErr := ts.call(t, "/v1/sign", other, signReq("ecdsa-p256", "a"), nil); apiErr != nil {
		t.Fatalf("other identity: %+v", apiErr)
	}
}
