package core

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// ClientOptions configures the signer client.
type ClientOptions struct {
	// BaseURL of the signer, e.g. https://signer.example.com:8443.
	BaseURL string
	// Token is the OIDC token sent as Bearer. It is never logged.
	Token string
	// CACertFile is an optional PEM bundle of extra roots for the signer's TLS.
	CACertFile string
	// HTTPClient is the underlying client (default: a fresh one with TLS roots
	// from the system plus CACertFile).
	HTTPClient *http.Client
	// RetryMax is how many times a call is retried (default 6).
	RetryMax int
	// RetryWaitMin / RetryWaitMax bound the exponential backoff (default 200ms / 10s).
	RetryWaitMin, RetryWaitMax time.Duration
	// Logger receives retry and request logs (never the token). Default: discard.
	Logger *slog.Logger
	// DefaultMaxDigests applies when the signer reports no max_digests (default 1000).
	DefaultMaxDigests int
}

// Client talks to the signer API (DESIGN.md "Signer API").
type Client struct {
	base       *url.URL
	token      string
	rc         *retryablehttp.Client
	log        *slog.Logger
	defaultMax int

	mu   sync.Mutex
	keys map[string]*KeyInfo
}

// HTTPError is a non-2xx answer of the signer.
type HTTPError struct {
	Status    int
	Method    string
	Path      string
	RequestID string
	API       APIError
}

func (e *HTTPError) Error() string {
	msg := e.API.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	code := e.API.Code
	if code == "" {
		code = "http_" + strconv.Itoa(e.Status)
	}
	return fmt.Sprintf("signer refused %s %s (HTTP %d, request %s): %s: %s", e.Method, e.Path, e.Status, e.RequestID, code, msg)
}

// Unwrap exposes the API error so errors.As(err, **APIError) works.
func (e *HTTPError) Unwrap() error { return &e.API }

// NewClient returns a signer client using go-retryablehttp: retries on
// connection errors, 429 and 5xx with exponential backoff and full jitter,
// honouring Retry-After; the caller's context bounds the whole call.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.BaseURL == "" {
		return nil, errors.New("signer URL is empty: pass --signer or SIGNET_SIGNER")
	}
	u, err := url.Parse(strings.TrimRight(opts.BaseURL, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("signer URL %q is not an http(s) URL", opts.BaseURL)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hc := opts.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 16
		if opts.CACertFile != "" {
			pemBytes, err := os.ReadFile(opts.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("read CA certificate file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pemBytes) {
				return nil, fmt.Errorf("CA certificate file %s holds no PEM certificate", opts.CACertFile)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		hc = &http.Client{Transport: tr}
	}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = hc
	rc.Logger = slogLeveled{log}
	rc.RetryMax = opts.RetryMax
	if rc.RetryMax == 0 {
		rc.RetryMax = 6
	}
	if rc.RetryMax < 0 {
		rc.RetryMax = 0
	}
	rc.RetryWaitMin = opts.RetryWaitMin
	if rc.RetryWaitMin == 0 {
		rc.RetryWaitMin = 200 * time.Millisecond
	}
	rc.RetryWaitMax = opts.RetryWaitMax
	if rc.RetryWaitMax == 0 {
		rc.RetryWaitMax = 10 * time.Second
	}
	rc.Backoff = jitterBackoff
	rc.CheckRetry = retryablehttp.DefaultRetryPolicy
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	dm := opts.DefaultMaxDigests
	if dm <= 0 {
		dm = 1000
	}
	return &Client{base: u, token: opts.Token, rc: rc, log: log, defaultMax: dm, keys: map[string]*KeyInfo{}}, nil
}

// jitterBackoff waits Retry-After when the signer sends it (429/503), and
// otherwise min*2^attempt with full jitter, capped at max.
func jitterBackoff(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			if d > max {
				d = max
			}
			return d
		}
	}
	ceil := float64(min) * math.Pow(2, float64(attempt))
	if ceil > float64(max) || math.IsInf(ceil, 0) {
		ceil = float64(max)
	}
	// full jitter, but never below min
	d := time.Duration(float64(min) + mrand.Float64()*(ceil-float64(min)))
	return d
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

// slogLeveled adapts slog to retryablehttp's LeveledLogger. retryablehttp
// logs method and URL only, never headers, so the token cannot leak here.
type slogLeveled struct{ l *slog.Logger }

func (s slogLeveled) Error(msg string, kv ...any) { s.l.Error(msg, kv...) }
func (s slogLeveled) Info(msg string, kv ...any)  { s.l.Debug(msg, kv...) }
func (s slogLeveled) Debug(msg string, kv ...any) { s.l.Debug(msg, kv...) }
func (s slogLeveled) Warn(msg string, kv ...any)  { s.l.Warn(msg, kv...) }

// NewRequestID returns a random 128-bit hex id.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

const maxResponseBytes = 64 << 20

// do performs one API call (with retries) and decodes the JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var payload []byte
	if body != nil {
		// No HTML escaping: json.Marshal would rewrite '<', '>' and '&' even
		// inside a RawMessage, and the signer signs the statement bytes it
		// receives, which must equal the bytes we built.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(body); err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		payload = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	var rdr any
	if payload != nil {
		rdr = payload
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u.String(), rdr)
	if err != nil {
		return fmt.Errorf("build %s %s: %w", method, path, err)
	}
	reqID := NewRequestID()
	req.Header.Set(RequestIDHeader, reqID)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "signet/"+Version)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	start := time.Now()
	resp, err := c.rc.Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("%s %s (request %s): deadline reached after %s: %w", method, path, reqID, time.Since(start).Round(time.Millisecond), ctxErr)
		}
		return fmt.Errorf("%s %s (request %s): signer unreachable: %w", method, path, reqID, redactErr(err, c.token))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%s %s (request %s): read answer: %w", method, path, reqID, err)
	}
	if len(data) > maxResponseBytes {
		return fmt.Errorf("%s %s (request %s): answer over %d bytes", method, path, reqID, maxResponseBytes)
	}
	c.log.Debug("signer call", "method", method, "path", path, "status", resp.StatusCode, "request_id", reqID, "duration", time.Since(start))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		he := &HTTPError{Status: resp.StatusCode, Method: method, Path: path, RequestID: reqID}
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			he.API = eb.Error
		} else {
			he.API = APIError{Message: strings.TrimSpace(string(truncate(data, 200)))}
		}
		return he
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s (request %s): answer is not the expected JSON: %w", method, path, reqID, err)
		}
	}
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// redactErr makes sure an error text never carries the token.
func redactErr(err error, token string) error {
	if token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), token, "[REDACTED]"))
}

// Keys lists the signer's keys (GET /v1/keys).
func (c *Client) Keys(ctx context.Context) ([]KeyInfo, error) {
	var kr KeysResponse
	if err := c.do(ctx, http.MethodGet, "/v1/keys", nil, &kr); err != nil {
		return nil, err
	}
	return kr.Keys, nil
}

// Key describes one key (GET /v1/keys/{name}); the answer is cached.
func (c *Client) Key(ctx context.Context, name string) (*KeyInfo, error) {
	c.mu.Lock()
	if k, ok := c.keys[name]; ok {
		c.mu.Unlock()
		return k, nil
	}
	c.mu.Unlock()
	var k KeyInfo
	if err := c.do(ctx, http.MethodGet, "/v1/keys/"+url.PathEscape(name), nil, &k); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.keys[name] = &k
	c.mu.Unlock()
	return &k, nil
}

// maxInFlightBatches bounds concurrent /v1/sign calls of one Sign.
const maxInFlightBatches = 4

// Sign signs digests with key, splitting them into batches of the key's
// max_digests sent concurrently (at most 4 in flight). Signatures come back
// in the order of digests; the first failing batch cancels the others.
func (c *Client) Sign(ctx context.Context, key string, digests []DigestRequest) (*SignResponse, error) {
	if len(digests) == 0 {
		return nil, errors.New("sign: no digests")
	}
	ki, err := c.Key(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("look up key %q: %w", key, err)
	}
	max := ki.MaxDigests
	if max <= 0 {
		max = c.defaultMax
	}
	type batch struct{ start, end int }
	var batches []batch
	for start := 0; start < len(digests); start += max {
		batches = append(batches, batch{start, min(start+max, len(digests))})
	}
	results := make([]*SignResponse, len(batches))
	errs := make([]error, len(batches))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, maxInFlightBatches)
	var wg sync.WaitGroup
	for i, b := range batches {
		sem <- struct{}{}
		if ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := c.signBatch(ctx, key, digests[b.start:b.end])
			if err != nil {
				errs[i] = fmt.Errorf("sign digests %d-%d of %d: %w", b.start+1, b.end, len(digests), err)
				cancel()
				return
			}
			results[i] = r
			c.log.Info("signed batch", "digests", fmt.Sprintf("%d-%d", b.start+1, b.end), "of", len(digests))
		}()
	}
	wg.Wait()
	if i := firstFailure(errs); i >= 0 {
		return nil, errs[i]
	}
	var all SignResponse
	for _, r := range results {
		if r == nil {
			return nil, fmt.Errorf("sign: interrupted: %w", context.Cause(ctx))
		}
		all.Key = r.Key
		all.Signatures = append(all.Signatures, r.Signatures...)
		if r.Audit.Seq >= all.Audit.Seq {
			all.Audit = r.Audit
		}
	}
	return &all, nil
}

func (c *Client) signBatch(ctx context.Context, key string, batch []DigestRequest) (*SignResponse, error) {
	var r SignResponse
	if err := c.do(ctx, http.MethodPost, "/v1/sign", SignRequest{Key: key, Digests: batch}, &r); err != nil {
		return nil, err
	}
	if len(r.Signatures) != len(batch) {
		return nil, fmt.Errorf("signer returned %d signatures for %d digests", len(r.Signatures), len(batch))
	}
	for i, s := range r.Signatures {
		if s.Name != batch[i].Name || !strings.EqualFold(s.SHA256, batch[i].SHA256) {
			return nil, fmt.Errorf("signer answered for %q/%s where %q/%s was asked", s.Name, s.SHA256, batch[i].Name, batch[i].SHA256)
		}
	}
	return &r, nil
}

// Attest asks the signer to sign one statement as a DSSE envelope.
func (c *Client) Attest(ctx context.Context, key string, statement []byte) (*AttestResponse, error) {
	var r AttestResponse
	if err := c.do(ctx, http.MethodPost, "/v1/attest", AttestRequest{Key: key, Statement: RawJSON(statement)}, &r); err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	return &r, nil
}
