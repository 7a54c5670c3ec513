package core

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests exercise the client's HTTP behaviour (retries, Retry-After,
// deadline, batching) against httptest servers that follow the signer API's
// wire format; the signing itself is tested end to end in the testbench.

const testToken = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2VjcmV0LXNpZ25hdHVyZQ"

type recorder struct {
	mu       sync.Mutex
	requests []*http.Request
	bodies   [][]byte
}

func (r *recorder) add(req *http.Request) []byte {
	var buf bytes.Buffer
	buf.ReadFrom(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, req)
	r.bodies = append(r.bodies, buf.Bytes())
	return buf.Bytes()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func newTestClient(t *testing.T, url string, logs *bytes.Buffer) *Client {
	t.Helper()
	opts := ClientOptions{BaseURL: url, Token: testToken, RetryMax: 4, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond}
	if logs != nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientRetries503ThenSucceeds(t *testing.T) {
	var rec recorder
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		calls++
		if calls <= 2 {
			writeJSON(w, http.StatusServiceUnavailable, ErrorBody{Error: APIError{Code: ErrCodeHSMUnavailable, Message: "HSM busy"}})
			return
		}
		writeJSON(w, http.StatusOK, KeyInfo{Name: "release", Algorithm: "ecdsa-p256", MaxDigests: 10})
	}))
	defer srv.Close()
	var logs bytes.Buffer
	c := newTestClient(t, srv.URL, &logs)
	k, err := c.Key(context.Background(), "release")
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "release" || calls != 3 {
		t.Fatalf("key %+v after %d calls, want release after 3", k, calls)
	}
	// One request id per call, kept across its retries; bearer token sent.
	ids := map[string]bool{}
	for _, r := range rec.requests {
		ids[r.Header.Get(RequestIDHeader)] = true
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			t.Fatalf("Authorization = %q", r.Header.Get("Authorization"))
		}
		if r.URL.Path != "/v1/keys/release" {
			t.Fatalf("path %s", r.URL.Path)
		}
	}
	if len(ids) != 1 || ids[""] {
		t.Fatalf("request ids %v, want one non-empty id for the call", ids)
	}
	if strings.Contains(logs.String(), testToken) || strings.Contains(logs.String(), "c2VjcmV0") {
		t.Fatalf("token leaked into logs:\n%s", logs.String())
	}
	// A second call gets a new id (and the key is cached: no request).
	if _, err := c.Key(context.Background(), "release"); err != nil || calls != 3 {
		t.Fatalf("cached key: err %v, calls %d", err, calls)
	}
}

func TestClientHonoursRetryAfter(t *testing.T) {
	var times []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		times = append(times, time.Now())
		if len(times) == 1 {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, ErrorBody{Error: APIError{Code: ErrCodeRateLimited, Message: "slow down"}})
			return
		}
		writeJSON(w, http.StatusOK, KeysResponse{Keys: []KeyInfo{{Name: "a"}}})
	}))
	defer srv.Close()
	c, err := NewClient(ClientOptions{BaseURL: srv.URL, RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(context.Background())
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v, err %v", keys, err)
	}
	if len(times) != 2 {
		t.Fatalf("%d requests, want 2", len(times))
	}
	// The wait follows Retry-After (1s), not the 1ms minimum backoff.
	if gap := times[1].Sub(times[0]); gap < 900*time.Millisecond {
		t.Fatalf("retried after %s, want about Retry-After: 1s", gap)
	}
}

func TestBackoffPolicy(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if d, ok := parseRetryAfter("3", now); !ok || d != 3*time.Second {
		t.Errorf("seconds: %v %v", d, ok)
	}
	if d, ok := parseRetryAfter(now.Add(5*time.Second).Format(http.TimeFormat), now); !ok || d != 5*time.Second {
		t.Errorf("http date: %v %v", d, ok)
	}
	for _, bad := range []string{"", "-1", "soon"} {
		if _, ok := parseRetryAfter(bad, now); ok {
			t.Errorf("%q accepted", bad)
		}
	}
	min, max := 100*time.Millisecond, 2*time.Second
	for attempt := 0; attempt < 10; attempt++ {
		d := jitterBackoff(min, max, attempt, nil)
		ceil := min << attempt
		if ceil > max || ceil <= 0 {
			ceil = max
		}
		if d < min || d > ceil {
			t.Errorf("attempt %d: backoff %s outside [%s, %s]", attempt, d, min, ceil)
		}
	}
	resp := &http.Response{StatusCode: 503, Header: http.Header{"Retry-After": []string{"60"}}}
	if d := jitterBackoff(min, max, 0, resp); d != max {
		t.Errorf("Retry-After beyond max: %s, want capped at %s", d, max)
	}
}

func TestClientDeadline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusBadGateway, ErrorBody{Error: APIError{Code: ErrCodeInternal, Message: "down"}})
	}))
	defer srv.Close()
	c, err := NewClient(ClientOptions{BaseURL: srv.URL, RetryMax: 100, RetryWaitMin: 50 * time.Millisecond, RetryWaitMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.Keys(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("err = %v, want the deadline", err)
	}
}

func TestClientConnectionRefusedThenGivesUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c, err := NewClient(ClientOptions{BaseURL: "http://" + addr, Token: testToken, RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Keys(context.Background())
	if err == nil || !strings.Contains(err.Error(), "signer unreachable") || strings.Contains(err.Error(), testToken) {
		t.Fatalf("err = %v", err)
	}
}

func TestClientDoesNotRetryPolicyDenied(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		writeJSON(w, http.StatusForbidden, ErrorBody{Error: APIError{Code: ErrCodePolicyDenied, Message: "no rule allows repository_id 1"}})
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, nil)
	_, err := c.Attest(context.Background(), "release", []byte(`{}`))
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != ErrCodePolicyDenied || calls != 1 {
		t.Fatalf("err = %v after %d calls", err, calls)
	}
	if !strings.Contains(err.Error(), "HTTP 403") || !strings.Contains(err.Error(), "no rule allows") {
		t.Fatalf("message: %v", err)
	}
}

func TestClientSplitsBatches(t *testing.T) {
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := rec.add(r)
		switch r.URL.Path {
		case "/v1/keys/release":
			writeJSON(w, http.StatusOK, KeyInfo{Name: "release", MaxDigests: 3})
		case "/v1/sign":
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			var req SignRequest
			if err := dec.Decode(&req); err != nil || req.Key != "release" {
				writeJSON(w, http.StatusBadRequest, ErrorBody{Error: APIError{Code: ErrCodeBadRequest, Message: "bad body"}})
				return
			}
			if len(req.Digests) > 3 {
				writeJSON(w, http.StatusRequestEntityTooLarge, ErrorBody{Error: APIError{Code: ErrCodeTooLarge, Message: "too many"}})
				return
			}
			var resp SignResponse
			for _, d := range req.Digests {
				resp.Signatures = append(resp.Signatures, Signature{Name: d.Name, SHA256: d.SHA256, Signature: "c2ln"})
			}
			writeJSON(w, http.StatusOK, resp)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, nil)
	var ds []DigestRequest
	for i := 0; i < 8; i++ {
		ds = append(ds, DigestRequest{Name: string(rune('a' + i)), SHA256: strings.Repeat("0", 63) + string(rune('0'+i))})
	}
	resp, err := c.Sign(context.Background(), "release", ds)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Signatures) != 8 {
		t.Fatalf("%d signatures", len(resp.Signatures))
	}
	for i, s := range resp.Signatures {
		if s.Name != ds[i].Name {
			t.Fatalf("signature %d is for %s, want %s", i, s.Name, ds[i].Name)
		}
	}
	signCalls := 0
	for _, r := range rec.requests {
		if r.URL.Path == "/v1/sign" {
			signCalls++
		}
	}
	if signCalls != 3 { // 3 + 3 + 2
		t.Fatalf("%d sign calls, want 3", signCalls)
	}
}

func TestClientRejectsMismatchedAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/keys/k" {
			writeJSON(w, http.StatusOK, KeyInfo{Name: "k", MaxDigests: 10})
			return
		}
		writeJSON(w, http.StatusOK, SignResponse{Signatures: []Signature{{Name: "other", SHA256: "00", Signature: "c2ln"}}})
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, nil)
	_, err := c.Sign(context.Background(), "k", []DigestRequest{{Name: "a", SHA256: "00"}})
	if err == nil || !strings.Contains(err.Error(), `answered for "other"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestNewClientValidates(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "not a url", "https://"} {
		if _, err := NewClient(ClientOptions{BaseURL: u}); err == nil {
			t.Errorf("NewClient(%q) accepted", u)
		}
	}
	if _, err := NewClient(ClientOptions{BaseURL: "https://x", CACertFile: "/nonexistent.pem"}); err == nil {
		t.Error("missing CA file accepted")
	}
}

// The statement reaches the signer byte for byte (the signer signs exactly
// what it receives), even with characters json.Marshal would HTML-escape.
func TestClientSendsStatementBytesUnchanged(t *testing.T) {
	stmt := []byte(`{"_type":"https://in-toto.io/Statement/v1","predicate":{"x":"<a> & <b>"}}`)
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		buf.ReadFrom(r.Body)
		var req AttestRequest
		if err := json.Unmarshal(buf.Bytes(), &req); err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorBody{Error: APIError{Code: ErrCodeBadRequest, Message: err.Error()}})
			return
		}
		got = req.Statement
		writeJSON(w, http.StatusOK, AttestResponse{})
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, nil)
	if _, err := c.Attest(context.Background(), "k", stmt); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, stmt) {
		t.Fatalf("signer received\n%s\nwant\n%s", got, stmt)
	}
}
