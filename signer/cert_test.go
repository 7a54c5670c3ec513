package signer_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
)

func TestCodeKeyCertificate(t *testing.T) {
	pub := readPub(t, "ecdsa-p256")
	now := time.Now()
	tests := []struct {
		name       string
		nb, na     time.Time
		wantSign   string // "" ok, else error code
		wantWarn   string
		wantDaysLE float64 // signetd_certificate_days_left is at most this and at most 1.1 days under
	}{
		{"valid for a year", now.Add(-time.Hour), now.Add(365 * 24 * time.Hour), "", "", 366},
		{"expires in 10 days: warns", now.Add(-time.Hour), now.Add(10 * 24 * time.Hour), "", "expires in 10 days", 10.01},
		{"expired", now.Add(-30 * 24 * time.Hour), now.Add(-24 * time.Hour), core.ErrCodeCertInvalid, "expired", 0},
		{"not yet valid", now.Add(24 * time.Hour), now.Add(48 * time.Hour), core.ErrCodeCertInvalid, "", 2.01},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fx.baseConfig(t)
			cfg.Keys[0].Certificate = issueCert(t, pub, tc.nb, tc.na, t.TempDir())
			ts := fx.start(t, cfg)
			var sr core.SignResponse
			code, apiErr := ts.call(t, "/v1/sign", mint(t, fx.gh, nil), signReq("ecdsa-p256", "a"), &sr)
			if tc.wantSign == "" {
				if apiErr != nil {
					t.Fatalf("sign: %d %+v", code, apiErr)
				}
				if !strings.Contains(sr.Key.CertificateChain, "BEGIN CERTIFICATE") || sr.Key.NotAfter == "" {
					t.Fatalf("key info lacks the chain: %+v", sr.Key)
				}
			} else if apiErr == nil || apiErr.Code != tc.wantSign || code != http.StatusForbidden {
				t.Fatalf("want %s, got %d %+v", tc.wantSign, code, apiErr)
			}
			resp, err := http.Get(ts.URL + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("readyz %d %s", resp.StatusCode, body)
			}
			var rz struct {
				Warnings []string `json:"warnings"`
			}
			json.Unmarshal(body, &rz)
			joined := strings.Join(rz.Warnings, "\n")
			if tc.wantWarn != "" && !strings.Contains(joined, tc.wantWarn) {
				t.Fatalf("readyz warnings %q lack %q", joined, tc.wantWarn)
			}
			if tc.wantWarn == "" && strings.Contains(joined, "ecdsa-p256") && tc.wantSign == "" {
				t.Fatalf("unexpected warning %q", joined)
			}
			resp, err = http.Get(ts.URL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			m, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			const gauge = `signetd_certificate_days_left{key="ecdsa-p256"} `
			i := strings.Index(string(m), gauge)
			if i < 0 {
				t.Fatal("metrics lack certificate days left")
			}
			val, _, _ := strings.Cut(string(m[i+len(gauge):]), "\n")
			days, err := strconv.ParseFloat(val, 64)
			if err != nil || days > tc.wantDaysLE || days < tc.wantDaysLE-1.1 {
				t.Fatalf("certificate days left %q (%v), want within a day below %g", val, err, tc.wantDaysLE)
			}
		})
	}
	t.Run("certificate of another key refused at start", func(t *testing.T) {
		cfg := fx.baseConfig(t)
		cfg.Keys[0].Certificate = issueCert(t, readPub(t, "ecdsa-p384"), now, now.Add(time.Hour), t.TempDir())
		if _, err := newServerErr(cfg); err == nil || !strings.Contains(err.Error(), "does not certify") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestMetricsAndKeysEndpoints(t *testing.T) {
	ts := fx.start(t, fx.baseConfig(t))
	ts.call(t, "/v1/sign", mint(t, fx.gh, nil), signReq("ecdsa-p256", "a"), nil)
	ts.call(t, "/v1/sign", mint(t, fx.gh, map[string]any{"repository_id": "1"}), signReq("ecdsa-p256", "a"), nil)
	get := func(p string) (int, string) {
		resp, err := http.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, m := get("/metrics")
	for _, want := range []string{
		`signetd_requests_total{endpoint="sign",outcome="ok"} 1`,
		`signetd_requests_total{endpoint="sign",outcome="policy_denied"} 1`,
		`signetd_sign_seconds_count{algorithm="ecdsa-p256",key="ecdsa-p256"} 1`,
		`signetd_audit_fsync_seconds_count`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	code, body := get("/v1/keys")
	var kr core.KeysResponse
	if err := json.Unmarshal([]byte(body), &kr); err != nil || code != 200 || len(kr.Keys) != 5 {
		t.Fatalf("keys: %d %s", code, body)
	}
	for _, k := range kr.Keys {
		if k.KeyID == "" || !strings.Contains(k.PublicKey, "PUBLIC KEY") || k.MaxDigests != 1000 {
			t.Fatalf("key info %+v", k)
		}
	}
	code, body = get("/v1/keys/ed25519")
	if code != 200 || !strings.Contains(body, `"purpose":"firmware"`) {
		t.Fatalf("key: %d %s", code, body)
	}
	if code, _ = get("/v1/keys/nope"); code != 404 {
		t.Fatalf("unknown key: %d", code)
	}
	if code, _ = get("/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
}
