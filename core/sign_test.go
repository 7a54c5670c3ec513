package core

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stubPlatform is a minimal adapter for the option checks of Sign (the real
// adapters and the real signer are exercised end to end in cmd/signet).
type stubPlatform struct {
	published bool
	claims    map[string]any // what Sign handed to BuildContext
}

func (s *stubPlatform) Name() string    { return PlatformJenkins }
func (s *stubPlatform) Detect(Env) bool { return true }
func (s *stubPlatform) IDToken(context.Context, string) (string, error) {
	return "", errors.New("no token source in this test")
}
func (s *stubPlatform) BuildContext(_ context.Context, claims map[string]any) (*BuildContext, error) {
	s.claims = claims
	return &BuildContext{Platform: PlatformJenkins}, nil
}
func (s *stubPlatform) Publish(context.Context, *Result) error { s.published = true; return nil }

// TestSignDescribesTheBuildFromTheTokenItSignsWith: with --token-env the
// adapter must get that token's claims (decoded once by core), not look for
// a token of its own.
func TestSignDescribesTheBuildFromTheTokenItSignsWith(t *testing.T) {
	dir := t.TempDir()
	art := filepath.Join(dir, "app.bin")
	writeFile(t, art, []byte("x"))
	tok := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"aud":"aud","sub":"from-token-env"}`)) + ".c2ln"
	p := &stubPlatform{}
	_, err := Sign(context.Background(), SignOptions{SignerURL: "http://127.0.0.1:1", Audience: "aud", Key: "k",
		Artifacts: []string{art}, BaseDir: dir, OutputDir: filepath.Join(dir, "out"), Platform: p,
		TokenEnv: "TOK", Env: func(k string) (string, bool) { return tok, k == "TOK" }, Timeout: 2 * time.Second,
		ClientOptions: ClientOptions{RetryMax: 1, RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond}})
	if err == nil || !strings.Contains(err.Error(), "signer unreachable") {
		t.Fatalf("Sign: %v, want the unreachable signer's error", err)
	}
	if p.claims["sub"] != "from-token-env" {
		t.Fatalf("BuildContext got claims %v, want those of the --token-env token", p.claims)
	}
}

func TestSignRefusesBadOptionsAndLeavesNoOutputs(t *testing.T) {
	dir := t.TempDir()
	art := filepath.Join(dir, "app.bin")
	writeFile(t, art, []byte("x"))
	emptyTok := filepath.Join(dir, "empty.tok")
	writeFile(t, emptyTok, []byte("\n"))
	base := func() SignOptions {
		return SignOptions{SignerURL: "http://127.0.0.1:1", Audience: "aud", Key: "k", Artifacts: []string{art},
			BaseDir: dir, OutputDir: filepath.Join(dir, "out"), Provenance: true, Platform: &stubPlatform{},
			Env: func(string) (string, bool) { return "", false }, Timeout: 2 * time.Second,
			ClientOptions: ClientOptions{RetryMax: 1, RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond}}
	}
	tests := []struct {
		name    string
		mut     func(*SignOptions)
		usage   bool
		wantErr string
	}{
		{"missing signer", func(o *SignOptions) { o.SignerURL = "" }, true, "--signer (SIGNET_SIGNER)"},
		{"no platform", func(o *SignOptions) { o.Platform = nil }, true, "no CI platform detected"},
		{"both token overrides", func(o *SignOptions) { o.TokenEnv, o.TokenFile = "A", "b" }, true, "exclusive"},
		{"glob matches nothing", func(o *SignOptions) { o.Artifacts = []string{filepath.Join(dir, "*.zip")} }, true, "matches no files"},
		{"token env unset", func(o *SignOptions) { o.TokenEnv = "MY_TOKEN" }, false, "--token-env MY_TOKEN: the variable is unset or empty"},
		{"token file empty", func(o *SignOptions) { o.TokenFile = emptyTok }, false, "is empty"},
		{"platform token fails", func(o *SignOptions) {}, false, "get the jenkins OIDC token"},
		{"token for another audience", func(o *SignOptions) {
			tok := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"aud":"other"}`)) + ".c2ln"
			o.Env = func(k string) (string, bool) { return tok, k == "TOK" }
			o.TokenEnv = "TOK"
		}, false, `--token-env TOK: its aud is "other" but the signer's audience (--audience) is "aud"`},
		{"signer unreachable", func(o *SignOptions) {
			// an unsigned JWT whose aud matches: the client gets as far as the signer
			tok := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"aud":"aud"}`)) + ".c2ln"
			o.Env = func(k string) (string, bool) { return tok, k == "TOK" }
			o.TokenEnv = "TOK"
		}, false, "signer unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.mut(&o)
			_, err := Sign(context.Background(), o)
			var ue *UsageError
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || errors.As(err, &ue) != tt.usage {
				t.Fatalf("err = %v (usage %v), want %q (usage %v)", err, errors.As(err, &ue), tt.wantErr, tt.usage)
			}
			if p, ok := o.Platform.(*stubPlatform); ok && p.published {
				t.Fatal("a failed run was published")
			}
			entries, _ := os.ReadDir(filepath.Join(dir, "out"))
			if len(entries) != 0 {
				t.Fatalf("failed run left outputs: %v", entries)
			}
			if _, err := os.Stat(art + ".sig"); !os.IsNotExist(err) {
				t.Fatal("failed run wrote a .sig")
			}
		})
	}
}

func TestUnverifiedClaims(t *testing.T) {
	c, err := UnverifiedClaims("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4IiwiYnVpbGRfbnVtYmVyIjo0Mn0.c2ln")
	if err != nil || c["sub"] != "x" || c["build_number"].(interface{ String() string }).String() != "42" {
		t.Fatalf("claims %v, err %v", c, err)
	}
	for _, bad := range []string{"", "a.b", "a.!!!.c", "a.bnVsbA.c"} {
		if _, err := UnverifiedClaims(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCheckAudience(t *testing.T) {
	const want = "https://signer.example.com"
	tests := []struct {
		name    string
		aud     any
		wantErr string
	}{
		{name: "string match", aud: want},
		{name: "array match", aud: []any{"other", want}},
		{name: "missing", aud: nil, wantErr: "has no aud claim"},
		{name: "other audience names both", aud: "https://other.example.com", wantErr: `aud is "https://other.example.com" but the signer's audience (--audience) is "https://signer.example.com"`},
		{name: "array without match", aud: []any{"a", "b"}, wantErr: `aud is "a,b"`},
		{name: "array of numbers", aud: []any{float64(1)}, wantErr: "not a string"},
		{name: "number", aud: float64(7), wantErr: "not a string or an array"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims := map[string]any{}
			if tc.aud != nil {
				claims["aud"] = tc.aud
			}
			err := CheckAudience(claims, want)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckAudience: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("CheckAudience error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
