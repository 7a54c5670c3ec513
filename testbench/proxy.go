package testbench

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a TLS reverse proxy in front of the real signetd. It counts the
// signer's answers to /v1/sign and /v1/attest (to check the audit log against
// them) and injects faults: answer 503 a number of times, or delay answers.
type Proxy struct {
	// URL is where clients connect (https://127.0.0.1:PORT).
	URL string

	srv      *http.Server
	fail503  atomic.Int64
	delay    atomic.Int64 // nanoseconds
	injected atomic.Int64

	mu      sync.Mutex
	hook    func(Answer)
	answers []Answer
}

// Answer is one answer of signetd on a signing path, as the proxy saw it.
type Answer struct {
	Path      string
	Status    int
	RequestID string // X-Request-Id of the answer
}

// StartProxy forwards to target (the signer's URL), trusting ca for the
// upstream TLS and presenting a ca-issued certificate itself.
func StartProxy(ctx context.Context, ca *CA, target string) (*Proxy, error) {
	tu, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("proxy target %q: %w", target, err)
	}
	cert, err := ca.ServerCert()
	if err != nil {
		return nil, err
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy: listen: %w", err)
	}
	p := &Proxy{URL: "https://" + raw.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(tu)
	rp.Transport = &http.Transport{TLSClientConfig: ca.TLSClientConfig(), MaxIdleConnsPerHost: 64}
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		if isSigningPath(resp.Request.URL.Path) {
			p.mu.Lock()
			a := Answer{Path: resp.Request.URL.Path, Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
			p.answers = append(p.answers, a)
			hook := p.hook
			p.mu.Unlock()
			if hook != nil {
				hook(a) // before the answer reaches the client
			}
		}
		return nil
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := time.Duration(p.delay.Load()); d > 0 && isSigningPath(r.URL.Path) {
			// Read the body first so the server notices when the client hangs up.
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if isSigningPath(r.URL.Path) {
			for {
				n := p.fail503.Load()
				if n <= 0 {
					break
				}
				if p.fail503.CompareAndSwap(n, n-1) {
					p.injected.Add(1)
					w.Header().Set("Retry-After", "0")
					writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]any{"code": "hsm_unavailable", "message": "injected by the testbench proxy"}})
					return
				}
			}
		}
		// Detached from the client: when a client gives up, signetd still
		// finishes (and audits) the request, and the proxy still counts it.
		rp.ServeHTTP(w, r.WithContext(context.WithoutCancel(r.Context())))
	})
	p.srv = &http.Server{Handler: handler, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 5 * time.Second}
	go p.srv.Serve(tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})) //nolint:errcheck
	go func() {
		<-ctx.Done()
		p.Close()
	}()
	return p, nil
}

func isSigningPath(p string) bool {
	return strings.HasPrefix(p, "/v1/sign") || strings.HasPrefix(p, "/v1/attest")
}

// Fail503 makes the next n signing requests answer 503 without reaching signetd.
func (p *Proxy) Fail503(n int) { p.fail503.Store(int64(n)) }

// Injected503 counts the 503 answers injected so far.
func (p *Proxy) Injected503() int64 { return p.injected.Load() }

// SetDelay delays every signing request by d before forwarding (0: none).
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Statuses returns how often signetd answered each status on the signing paths.
func (p *Proxy) Statuses() map[int]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[int]int{}
	for _, a := range p.answers {
		out[a.Status]++
	}
	return out
}

// OnAnswer sets a function called with each signing answer before it is
// passed on to the client (nil: none).
func (p *Proxy) OnAnswer(f func(Answer)) {
	p.mu.Lock()
	p.hook = f
	p.mu.Unlock()
}

// Answers returns signetd's answers on the signing paths from index from on.
func (p *Proxy) Answers(from int) []Answer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if from > len(p.answers) {
		from = len(p.answers)
	}
	return append([]Answer(nil), p.answers[from:]...)
}

// Close stops the proxy.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return p.srv.Shutdown(ctx)
}
