package signer

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/signet-ci/signet/core"
)

// Server is signetd: it owns the keys, the verifier and the audit log.
type Server struct {
	cfg      *Config
	log      *slog.Logger
	keys     map[string]*Key
	keyList  []*Key
	verifier *Verifier
	audit    *AuditLog
	metrics  *Metrics
	backend  Backend
	limiter  *identityLimiter
	unauth   *identityLimiter // authentication failures per remote address
	workers  int
	now      func() time.Time
}

// New opens the keys, the audit log and the verifier. Close releases them.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := NewMetrics()
	b := NewBackends(log, cfg.PKCS11.MaxSessions)
	keys, err := LoadKeys(ctx, log, cfg, b)
	if err != nil {
		b.Close()
		return nil, err
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		b.Close()
		return nil, err
	}
	a, err := OpenAuditLog(cfg.Audit.Path, log, m.fsyncHook)
	if err != nil {
		b.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, keys: map[string]*Key{}, keyList: keys, verifier: v, audit: a, metrics: m,
		backend: b, limiter: newIdentityLimiter(cfg.Limits.RatePerSecond, cfg.Limits.RateBurst),
		unauth: newIdentityLimiter(cfg.Limits.UnauthRatePerSecond, cfg.Limits.UnauthBurst), now: time.Now}
	s.workers = runtime.GOMAXPROCS(0) * 2
	for _, k := range keys {
		s.keys[k.Name] = k
	}
	for _, w := range s.certWarnings() {
		log.Warn(w)
	}
	return s, nil
}

// Close closes the audit log and the key backends.
func (s *Server) Close() error {
	return errors.Join(s.audit.Close(), s.backend.Close())
}

// Metrics returns the server's collectors.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Handler is the HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sign", s.handleSign)
	mux.HandleFunc("POST /v1/attest", s.handleAttest)
	mux.HandleFunc("GET /v1/keys", s.handleKeys)
	mux.HandleFunc("GET /v1/keys/{name}", s.handleKey)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	metrics := promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		s.certWarnings() // refresh signetd_certificate_days_left at scrape time
		metrics.ServeHTTP(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, core.ErrorBody{Error: core.APIError{Code: core.ErrCodeNotFound,
			Message: fmt.Sprintf("no endpoint %s %s: use POST /v1/sign, POST /v1/attest, GET /v1/keys", r.Method, r.URL.Path)}})
	})
	return mux
}

// Serve listens on cfg.Listen (TLS unless loopback without tls) until ctx is
// done, then drains in-flight requests.
func Serve(ctx context.Context, cfg *Config, log *slog.Logger) error {
	s, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx is done.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    s.cfg.Limits.MaxTokenBytes + 16<<10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.TLS != nil {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLS.Cert, s.cfg.TLS.Key)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		s.log.Info("signetd listening", "addr", ln.Addr().String(), "tls", true, "keys", len(s.keyList), "audit", s.cfg.Audit.Path)
	} else {
		s.log.Warn("serving plain HTTP on loopback: tokens travel unencrypted; configure tls: for anything but local testing", "addr", ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down: finishing in-flight requests", "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	return nil
}

// ---- errors and helpers ----

type apiErr struct {
	status int
	code   string
	msg    string
}

func (e *apiErr) Error() string { return e.code + ": " + e.msg }

func newErr(status int, code, format string, a ...any) *apiErr {
	return &apiErr{status: status, code: code, msg: fmt.Sprintf(format, a...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var requestIDRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

func requestID(r *http.Request) string {
	if id := r.Header.Get(core.RequestIDHeader); requestIDRe.MatchString(id) {
		return id
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// request is the shared state of one sign/attest call; the endpoint (the
// metrics label) is rec.Operation.
type request struct {
	rid string
	rec *AuditRecord
	p   *Principal
	key *Key
}

// refuse audits a refusal and answers with the error.
func (s *Server) refuse(w http.ResponseWriter, rq *request, e *apiErr) {
	rq.rec.Decision = "deny"
	rq.rec.Code = e.code
	rq.rec.Reason = e.msg
	if _, err := s.audit.Append(rq.rec); err != nil {
		s.log.Error("audit of a refusal failed", "request_id", rq.rid, "err", err)
		e = newErr(http.StatusInternalServerError, core.ErrCodeInternal, "audit log unavailable: %v", err)
	}
	s.metrics.Requests.WithLabelValues(rq.rec.Operation, e.code).Inc()
	if e.status == http.StatusTooManyRequests || e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	s.log.Info("refused", "endpoint", rq.rec.Operation, "request_id", rq.rid, "code", e.code, "reason", e.msg,
		"issuer", rq.rec.Issuer, "subject", rq.rec.Subject, "key", rq.rec.Key)
	writeJSON(w, e.status, core.ErrorBody{Error: core.APIError{Code: e.code, Message: e.msg, RequestID: rq.rid}})
}

// begin authenticates, rate-limits, reads the body into v and resolves the key.
func (s *Server) begin(w http.ResponseWriter, r *http.Request, op string, v any, keyOf func() string) (*request, *apiErr) {
	rq := &request{rid: requestID(r)}
	rq.rec = &AuditRecord{Operation: op, RequestID: rq.rid, Remote: r.RemoteAddr}
	w.Header().Set(core.RequestIDHeader, rq.rid)
	tok := bearer(r)
	addr := remoteHost(r.RemoteAddr)
	// An address that has used up its budget of authentication failures is
	// refused before verification, unless its token is one already verified
	// (so a busy runner sharing the address with a misbehaving one keeps
	// working while its token is cached).
	if s.unauth.exhausted(addr) && !s.verifier.known(tok) {
		return rq, newErr(http.StatusTooManyRequests, core.ErrCodeRateLimited, "too many requests that failed authentication from %s; retry later", addr)
	}
	p, err := s.verifier.Verify(r.Context(), tok)
	if err != nil {
		s.unauth.allow(addr) // charge one failure
		var ae *AuthError
		if errors.As(err, &ae) {
			rq.rec.Issuer = ae.Issuer
		}
		return rq, newErr(http.StatusUnauthorized, core.ErrCodeUnauthenticated, "%v", err)
	}
	rq.p = p
	rq.rec.Issuer, rq.rec.Subject, rq.rec.Claims = p.Issuer, p.Subject, p.AuditClaims()
	if !s.limiter.allow(p.Issuer + "\x00" + p.Subject) {
		return rq, newErr(http.StatusTooManyRequests, core.ErrCodeRateLimited, "rate limit of %g requests/s for this identity exceeded; retry later", s.cfg.Limits.RatePerSecond)
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.Limits.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return rq, newErr(http.StatusRequestEntityTooLarge, core.ErrCodeTooLarge, "request body over the %d byte limit: split the batch", s.cfg.Limits.MaxBodyBytes)
		}
		return rq, newErr(http.StatusBadRequest, core.ErrCodeBadRequest, "request body is not valid JSON for this endpoint: %v", err)
	}
	if dec.More() {
		return rq, newErr(http.StatusBadRequest, core.ErrCodeBadRequest, "request body holds more than one JSON value")
	}
	name := keyOf()
	rq.rec.Key = name
	if name == "" {
		return rq, newErr(http.StatusBadRequest, core.ErrCodeBadRequest, "request names no key")
	}
	k, ok := s.keys[name]
	if !ok {
		return rq, newErr(http.StatusNotFound, core.ErrCodeUnknownKey, "no key named %q on this signer (GET /v1/keys lists them)", name)
	}
	rq.key = k
	rq.rec.KeyID = k.KeyID
	return rq, nil
}

// authorize applies policy and certificate validity.
func (s *Server) authorize(rq *request) *apiErr {
	if err := Authorize(rq.key, rq.p); err != nil {
		var pe *PolicyError
		if errors.As(err, &pe) {
			return newErr(http.StatusForbidden, pe.Code, "%s", pe.Reason)
		}
		return newErr(http.StatusForbidden, core.ErrCodePolicyDenied, "%v", err)
	}
	if err := rq.key.CertValid(s.now()); err != nil {
		return newErr(http.StatusForbidden, core.ErrCodeCertInvalid, "%v: renew the certificate", err)
	}
	return nil
}

func validDigest(d core.DigestRequest) error {
	if d.Name == "" || len(d.Name) > 4096 {
		return errors.New("name must be 1..4096 bytes")
	}
	for _, c := range d.Name {
		if c < 0x20 || c == 0x7f {
			return errors.New("name contains a control character")
		}
	}
	if len(d.SHA256) != 64 {
		return errors.New("sha256 must be 64 lower-case hex characters")
	}
	for _, c := range d.SHA256 {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return errors.New("sha256 must be 64 lower-case hex characters")
		}
	}
	return nil
}

func (s *Server) signOne(k *Key, f func() ([]byte, error)) ([]byte, error) {
	start := time.Now()
	sig, err := f()
	if err != nil {
		s.metrics.HSMErrors.WithLabelValues(k.Name).Inc()
		return nil, err
	}
	s.metrics.SignLatency.WithLabelValues(k.Name, k.Algorithm).Observe(time.Since(start).Seconds())
	return sig, nil
}

func (s *Server) handleSign(w http.ResponseWriter, r *http.Request) {
	var req core.SignRequest
	rq, e := s.begin(w, r, "sign", &req, func() string { return req.Key })
	if e == nil {
		e = s.checkDigests(rq, req.Digests)
	}
	if e == nil {
		e = s.authorize(rq)
	}
	if e != nil {
		s.refuse(w, rq, e)
		return
	}
	sigs := make([]core.Signature, len(req.Digests))
	var firstErr error
	signAt := func(i int) error {
		d := req.Digests[i]
		raw, _ := hex.DecodeString(d.SHA256)
		sig, err := s.signOne(rq.key, func() ([]byte, error) { return rq.key.SignDigest(raw) })
		if err != nil {
			return err
		}
		sigs[i] = core.Signature{Name: d.Name, SHA256: d.SHA256, Signature: base64.StdEncoding.EncodeToString(sig)}
		return nil
	}
	if n := min(s.workers, len(req.Digests)); n == 1 {
		// One digest (the common CI call): sign on the handler goroutine.
		for i := range req.Digests {
			if err := signAt(i); err != nil && firstErr == nil {
				firstErr = err
			}
		}
	} else {
		var errOnce sync.Once
		work := make(chan int)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				for i := range work {
					if err := signAt(i); err != nil {
						errOnce.Do(func() { firstErr = err })
					}
				}
			})
		}
		for i := range req.Digests {
			work <- i
		}
		close(work)
		wg.Wait()
	}
	ref, ok := s.finish(w, rq, firstErr)
	if !ok {
		return
	}
	s.metrics.Requests.WithLabelValues("sign", "ok").Inc()
	writeJSON(w, http.StatusOK, core.SignResponse{Key: rq.key.Info, Signatures: sigs, Audit: ref})
}

// finish audits the outcome of signing: one record per request, so the log
// holds exactly one record per answer. The allow record is on disk (fsync,
// shared with concurrent requests by group commit) before any signature is
// returned. It reports false when it has already answered with an error.
func (s *Server) finish(w http.ResponseWriter, rq *request, signErr error) (core.AuditRef, bool) {
	if signErr != nil {
		s.log.Error("hsm signing failed", "key", rq.key.Name, "request_id", rq.rid, "err", signErr)
		s.refuse(w, rq, newErr(http.StatusServiceUnavailable, core.ErrCodeHSMUnavailable, "key backend failed to sign: retry later"))
		return core.AuditRef{}, false
	}
	rq.rec.Decision = "allow"
	ref, err := s.audit.Append(rq.rec)
	if err != nil {
		s.log.Error("audit append failed; no signature returned", "request_id", rq.rid, "err", err)
		s.metrics.Requests.WithLabelValues(rq.rec.Operation, core.ErrCodeInternal).Inc()
		writeJSON(w, http.StatusInternalServerError, core.ErrorBody{Error: core.APIError{Code: core.ErrCodeInternal, Message: "audit log unavailable; no signature returned", RequestID: rq.rid}})
		return core.AuditRef{}, false
	}
	return ref, true
}

func (s *Server) checkDigests(rq *request, ds []core.DigestRequest) *apiErr {
	if len(ds) > s.cfg.Limits.MaxDigests {
		rq.rec.Digests = ds[:0]
		return newErr(http.StatusRequestEntityTooLarge, core.ErrCodeTooLarge, "%d digests in one request, over the limit of %d: split the batch (GET /v1/keys reports max_digests)", len(ds), s.cfg.Limits.MaxDigests)
	}
	rq.rec.Digests = ds
	if len(ds) == 0 {
		return newErr(http.StatusBadRequest, core.ErrCodeBadRequest, "no digests to sign")
	}
	for i, d := range ds {
		if err := validDigest(d); err != nil {
			return newErr(http.StatusBadRequest, core.ErrCodeBadRequest, "digests[%d]: %v", i, err)
		}
	}
	return nil
}

func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) {
	var req core.AttestRequest
	rq, e := s.begin(w, r, "attest", &req, func() string { return req.Key })
	var stmt []byte
	if e == nil {
		stmt = req.Statement
		if len(stmt) == 0 || string(stmt) == "null" {
			e = newErr(http.StatusBadRequest, core.ErrCodeBadRequest, "request has no statement")
		}
	}
	var ps *core.ParsedStatement
	if e == nil {
		var err error
		ps, err = core.ParseStatement(stmt)
		if err != nil {
			e = newErr(http.StatusBadRequest, core.ErrCodeBadRequest, "%v", err)
		}
	}
	if e == nil {
		for _, sub := range ps.Subjects() {
			rq.rec.Digests = append(rq.rec.Digests, core.DigestRequest{Name: sub.Name, SHA256: sub.Digest["sha256"]})
		}
		if len(rq.rec.Digests) > s.cfg.Limits.MaxDigests*10 {
			// keep the audit line bounded
			rq.rec.Digests = rq.rec.Digests[:s.cfg.Limits.MaxDigests*10]
		}
		e = s.authorize(rq)
	}
	if e == nil {
		want, err := core.IdentityFromClaims(rq.p.Platform, rq.p.ServerURL, rq.p.Claims)
		if err != nil {
			e = newErr(http.StatusForbidden, core.ErrCodeIdentityMismatch, "token does not carry the identity claims of a %s job: %v", rq.p.Platform, err)
		} else if got, err := ps.Identity(); err != nil {
			e = newErr(http.StatusBadRequest, core.ErrCodeBadRequest, "statement identity: %v", err)
		} else if err := want.Diff(got); err != nil {
			e = newErr(http.StatusForbidden, core.ErrCodeIdentityMismatch, "statement identity differs from the token: %v", err)
		}
	}
	if e != nil {
		s.refuse(w, rq, e)
		return
	}
	pae := core.PAE(core.PayloadTypeInToto, stmt)
	sig, err := s.signOne(rq.key, func() ([]byte, error) { return rq.key.SignMessage(pae) })
	ref, ok := s.finish(w, rq, err)
	if !ok {
		return
	}
	s.metrics.Requests.WithLabelValues("attest", "ok").Inc()
	env := core.Envelope{
		PayloadType: core.PayloadTypeInToto,
		Payload:     base64.StdEncoding.EncodeToString(stmt),
		Signatures:  []core.EnvelopeSignature{{KeyID: rq.key.KeyID, Sig: base64.StdEncoding.EncodeToString(sig)}},
	}
	writeJSON(w, http.StatusOK, core.AttestResponse{Key: rq.key.Info, Envelope: env, Audit: ref})
}

func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request) {
	out := core.KeysResponse{Keys: []core.KeyInfo{}}
	for _, k := range s.keyList {
		out.Keys = append(out.Keys, k.Info)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleKey(w http.ResponseWriter, r *http.Request) {
	k, ok := s.keys[r.PathValue("name")]
	if !ok {
		writeJSON(w, http.StatusNotFound, core.ErrorBody{Error: core.APIError{Code: core.ErrCodeUnknownKey, Message: fmt.Sprintf("no key named %q", r.PathValue("name"))}})
		return
	}
	writeJSON(w, http.StatusOK, k.Info)
}

// certWarnings updates the days-left metric and lists keys whose certificate
// expires within their warning window (or has expired).
func (s *Server) certWarnings() []string {
	var out []string
	now := s.now()
	for _, k := range s.keyList {
		na := k.NotAfter()
		if na.IsZero() {
			continue
		}
		days := na.Sub(now).Hours() / 24
		s.metrics.CertDaysLeft.WithLabelValues(k.Name).Set(days)
		switch {
		case days < 0:
			out = append(out, fmt.Sprintf("key %q: certificate expired on %s; signing is refused", k.Name, na.UTC().Format(time.RFC3339)))
		case days < float64(k.WarnDays):
			out = append(out, fmt.Sprintf("key %q: certificate expires in %.0f days (%s); renew it", k.Name, days, na.UTC().Format(time.RFC3339)))
		}
	}
	return out
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	type keyState struct {
		Name  string `json:"name"`
		Ready bool   `json:"ready"`
		Error string `json:"error,omitempty"`
	}
	resp := struct {
		Status   string     `json:"status"`
		Keys     []keyState `json:"keys"`
		Warnings []string   `json:"warnings,omitempty"`
	}{Status: "ready"}
	status := http.StatusOK
	for _, k := range s.keyList {
		st := keyState{Name: k.Name, Ready: true}
		if err := k.Signer.Ping(r.Context()); err != nil {
			st.Ready, st.Error = false, err.Error()
			status = http.StatusServiceUnavailable
			resp.Status = "hsm unavailable"
		}
		resp.Keys = append(resp.Keys, st)
	}
	resp.Warnings = s.certWarnings()
	writeJSON(w, status, resp)
}

// identityLimiter is a token bucket per identity.
type identityLimiter struct {
	mu    sync.Mutex
	rps   float64
	burst int
	m     map[string]*rate.Limiter
}

func newIdentityLimiter(rps float64, burst int) *identityLimiter {
	return &identityLimiter{rps: rps, burst: burst, m: map[string]*rate.Limiter{}}
}

func (l *identityLimiter) allow(id string) bool {
	if l.rps <= 0 {
		return true
	}
	l.mu.Lock()
	lim, ok := l.m[id]
	if !ok {
		if len(l.m) > 10000 {
			l.m = map[string]*rate.Limiter{} // forget idle identities
		}
		lim = rate.NewLimiter(rate.Limit(l.rps), l.burst)
		l.m[id] = lim
	}
	l.mu.Unlock()
	return lim.Allow()
}

// exhausted reports whether id's bucket is empty, without taking a token
// (and without creating a bucket for an unknown id).
func (l *identityLimiter) exhausted(id string) bool {
	if l.rps <= 0 {
		return false
	}
	l.mu.Lock()
	lim, ok := l.m[id]
	l.mu.Unlock()
	return ok && lim.Tokens() < 1
}

// remoteHost is the host of a RemoteAddr (the port changes per connection).
func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
