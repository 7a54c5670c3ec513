package signer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer"
)

func readLines(t *testing.T, p string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))[:bytes.Count(b, []byte("\n"))]
}

func TestAuditTamperingIsDetected(t *testing.T) {
	ts := fx.start(t, fx.baseConfig(t))
	for i := 0; i < 5; i++ {
		if _, apiErr := ts.call(t, "/v1/sign", mint(t, fx.gh, nil), signReq("ecdsa-p256", "file"+string(rune('a'+i))), nil); apiErr != nil {
			t.Fatal(apiErr)
		}
	}
	ts.call(t, "/v1/sign", mint(t, fx.gl, map[string]any{"project_id": "1"}), signReq("ecdsa-p256", "x"), nil) // a refusal
	lines := readLines(t, ts.cfg.Audit.Path)
	if len(lines) != 6 {
		t.Fatalf("%d lines", len(lines))
	}
	var last signer.AuditRecord
	if err := json.Unmarshal(lines[5], &last); err != nil || last.Decision != "deny" || last.Code != core.ErrCodePolicyDenied || last.Issuer != "gitlab" {
		t.Fatalf("refusal record: %+v %v", last, err)
	}
	join := func(ls ...[]byte) []byte { return bytes.Join(ls, nil) }
	// Each edit must be caught by the check named in wantReason; the two
	// content edits keep seq, prev and canonical form intact, so only the
	// recomputed hash can catch them.
	lastHash := []byte(`"hash":"` + last.Hash + `"`)
	tests := []struct {
		name       string
		content    []byte
		wantLine   int
		wantReason string
	}{
		{"edit a digest", join(lines[0], lines[1], bytes.Replace(lines[2], []byte(`"sha256":"`), []byte(`"sha256":"f`), 1), lines[3], lines[4], lines[5]), 3, "hash does not match"},
		{"edit the decision of the last record", join(lines[0], lines[1], lines[2], lines[3], lines[4], bytes.Replace(lines[5], []byte(`"deny"`), []byte(`"allow"`), 1)), 6, "hash does not match"},
		{"replace the hash of the last record", join(lines[0], lines[1], lines[2], lines[3], lines[4], bytes.Replace(lines[5], lastHash, []byte(`"hash":"`+strings.Repeat("0", 64)+`"`), 1)), 6, "hash does not match"},
		{"reformat a record", join(lines[0], bytes.Replace(lines[1], []byte(`,"time"`), []byte(`, "time"`), 1), lines[2], lines[3], lines[4], lines[5]), 2, "canonical form"},
		{"delete a record", join(lines[0], lines[1], lines[3], lines[4], lines[5]), 3, "seq is 4, want 3"},
		{"reorder two records", join(lines[0], lines[2], lines[1], lines[3], lines[4], lines[5]), 2, "seq is 3, want 2"},
		{"delete the first record", join(lines[1], lines[2], lines[3], lines[4], lines[5]), 1, "seq is 2, want 1"},
		{"torn last record", join(lines[0], lines[1], lines[2][:20]), 3, "incomplete last record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if bytes.Equal(tc.content, join(lines...)) {
				t.Fatal("the edit changed nothing")
			}
			p := filepath.Join(t.TempDir(), "audit.jsonl")
			if err := os.WriteFile(p, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := signer.VerifyAuditLog(p)
			var br *signer.AuditBreak
			if !errors.As(err, &br) || br.Line != tc.wantLine || !strings.Contains(br.Reason, tc.wantReason) {
				t.Fatalf("want a break at line %d (%s), got %v", tc.wantLine, tc.wantReason, err)
			}
		})
	}
	// The untouched log verifies, and the CLI says so (exit 0) or names the
	// break (exit 1).
	out, code := runSignetd(t, "audit", "verify", "--log", ts.cfg.Audit.Path)
	if code != 0 || !strings.Contains(out, "6 records") {
		t.Fatalf("audit verify: %d %s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, join(lines[0], lines[2]), 0o600)
	out, code = runSignetd(t, "audit", "verify", "--log", bad)
	if code != 1 || !strings.Contains(out, "line 2") {
		t.Fatalf("audit verify of a broken log: %d %s", code, out)
	}
}

func TestAuditRestartContinuesChain(t *testing.T) {
	cfg := fx.baseConfig(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for round := 1; round <= 3; round++ {
		s, err := signer.New(context.Background(), cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		ts := &testServer{srv: s, cfg: cfg}
		ts.Server = httptest.NewServer(s.Handler())
		var sr core.SignResponse
		if _, apiErr := ts.call(t, "/v1/sign", mint(t, fx.gh, nil), signReq("ecdsa-p256", "a"), &sr); apiErr != nil {
			t.Fatal(apiErr)
		}
		if sr.Audit.Seq != uint64(round) {
			t.Fatalf("round %d: seq %d", round, sr.Audit.Seq)
		}
		ts.Server.Close()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := signer.VerifyAuditLog(cfg.Audit.Path); err != nil || n != 3 {
		t.Fatalf("%d %v", n, err)
	}
	// A torn tail (a crash mid-write of an unacknowledged record) is cut
	// at start; a broken chain refuses to start.
	f, _ := os.OpenFile(cfg.Audit.Path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":4,"time":"2`)
	f.Close()
	s, err := signer.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("torn tail: %v", err)
	}
	s.Close()
	if n, err := signer.VerifyAuditLog(cfg.Audit.Path); err != nil || n != 3 {
		t.Fatalf("after truncation: %d %v", n, err)
	}
	lines := readLines(t, cfg.Audit.Path)
	os.WriteFile(cfg.Audit.Path, bytes.Join([][]byte{lines[0], lines[2]}, nil), 0o600)
	if _, err := signer.New(context.Background(), cfg, log); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("broken chain must refuse to start, got %v", err)
	}
}

// 32 goroutines sign at once, some allowed and some refused: every request
// gets an answer and the audit log holds exactly one record per request.
func TestConcurrentSigningAuditCount(t *testing.T) {
	ts := fx.start(t, fx.baseConfig(t))
	var ok, refused, other atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Go(func() {
			for i := 0; i < 8; i++ {
				claims := map[string]any(nil)
				if (g+i)%4 == 0 {
					claims = map[string]any{"repository_id": "666"}
				}
				tok, err := fx.gh.Mint(claims)
				if err != nil {
					other.Add(1)
					return
				}
				code, apiErr := ts.call(t, "/v1/sign", tok, signReq("ecdsa-p256", "a", "b"), nil)
				switch {
				case apiErr == nil:
					ok.Add(1)
				case code == http.StatusForbidden:
					refused.Add(1)
				default:
					other.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if other.Load() != 0 {
		t.Fatalf("%d unexpected errors", other.Load())
	}
	n, err := signer.VerifyAuditLog(ts.cfg.Audit.Path)
	if err != nil {
		t.Fatal(err)
	}
	if ok.Load() != 192 || refused.Load() != 64 || n != uint64(ok.Load()+refused.Load()) {
		t.Fatalf("ok %d refused %d audit %d", ok.Load(), refused.Load(), n)
	}
}

func TestGracefulShutdown(t *testing.T) {
	cfg := fx.baseConfig(t)
	s, err := signer.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	url := "http://" + ln.Addr().String()
	var resp *http.Response
	for i := 0; i < 100; i++ {
		if resp, err = http.Get(url + "/readyz"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not finish")
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}
