package signer_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer"
)

// Requests that fail authentication are limited per remote address: once the
// budget is used up they are answered 429 before verification, each refusal
// still audited. A token already verified keeps working; another identity's
// limit is untouched.
func TestUnauthenticatedRefusalsAreRateLimitedPerAddress(t *testing.T) {
	cfg := fx.baseConfig(t)
	cfg.Limits.UnauthRatePerSecond = 0.001
	cfg.Limits.UnauthBurst = 3
	ts := fx.start(t, cfg)
	good := mint(t, fx.gh, nil)
	// Verified once before the failures: cached.
	if _, apiErr := ts.call(t, "/v1/sign", good, signReq("ecdsa-p256", "a"), nil); apiErr != nil {
		t.Fatalf("good token: %+v", apiErr)
	}
	requests := 1
	for i, bad := range []string{"", "not-a-jwt", good[:len(good)-4] + "AAAA"} {
		requests++
		if code, apiErr := ts.call(t, "/v1/sign", bad, signReq("ecdsa-p256", "a"), nil); code != http.StatusUnauthorized || apiErr.Code != core.ErrCodeUnauthenticated {
			t.Fatalf("failure %d within the budget: %d %+v", i, code, apiErr)
		}
	}
	// Budget used up: the next bad token is 429 with Retry-After, audited.
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/sign", bytes.NewReader(mustJSON(t, signReq("ecdsa-p256", "a"))))
	req.Header.Set("Authorization", "Bearer not-a-jwt")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var eb core.ErrorBody
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	resp.Body.Close()
	requests++
	if resp.StatusCode != http.StatusTooManyRequests || eb.Error.Code != core.ErrCodeRateLimited || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over budget: %d %+v Retry-After=%q", resp.StatusCode, eb.Error, resp.Header.Get("Retry-After"))
	}
	// A fresh (unverified) token from the same address waits too ...
	fresh := mint(t, fx.gh, map[string]any{"sub": "repo:signet-ci/demo:ref:refs/heads/fresh"})
	requests++
	if code, apiErr := ts.call(t, "/v1/sign", fresh, signReq("ecdsa-p256", "a"), nil); code != http.StatusTooManyRequests || apiErr.Code != core.ErrCodeRateLimited {
		t.Fatalf("unverified token over budget: %d %+v", code, apiErr)
	}
	// ... while the already verified token still signs.
	requests++
	if _, apiErr := ts.call(t, "/v1/sign", good, signReq("ecdsa-p256", "b"), nil); apiErr != nil {
		t.Fatalf("verified token over the address budget: %+v", apiErr)
	}
	// Exactly one audit record per answer; the 429s are deny records.
	n, err := signer.VerifyAuditLog(ts.cfg.Audit.Path)
	if err != nil || n != uint64(requests) {
		t.Fatalf("audit: %d records (want %d), %v", n, requests, err)
	}
	lines := readLines(t, ts.cfg.Audit.Path)
	var limited int
	for _, l := range lines {
		var rec signer.AuditRecord
		if err := json.Unmarshal(l, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Code == core.ErrCodeRateLimited {
			limited++
			if rec.Decision != "deny" || !strings.HasPrefix(rec.Remote, "127.0.0.1:") {
				t.Fatalf("429 record: %+v", rec)
			}
		}
	}
	if limited != 2 {
		t.Fatalf("%d rate_limited records, want 2", limited)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
