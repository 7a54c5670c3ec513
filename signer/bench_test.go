package signer_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer/internal/testhsm"
)

// runConcurrent runs n operations over c goroutines and returns per-op
// latencies and wall time.
func runConcurrent(b *testing.B, n, c int, op func() error) ([]time.Duration, time.Duration) {
	b.Helper()
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				if err := op(); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return lat, wall
}

// cpuTime is the CPU time (user + system, all threads incl. SoftHSM's) this
// process has used: the HTTP benchmarks report it per request, client and
// server together, next to the raw rate's cost per signature.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func pct(lat []time.Duration, p float64) time.Duration {
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// reportRun reports the rate (one signature per op), the CPU per op and the
// latency percentiles of a run, and returns the rate.
func reportRun(b *testing.B, lat []time.Duration, wall, cpu time.Duration) float64 {
	rate := float64(len(lat)) / wall.Seconds()
	b.ReportMetric(rate, "sigs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(lat)), "cpu-µs/op")
	b.ReportMetric(float64(pct(lat, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(lat, 0.99).Microseconds())/1000, "p99-ms")
	return rate
}

// reportVsRaw reports the raw rate measured right before and right after an
// HTTP run (same concurrency) and the run's rate relative to it.
func reportVsRaw(b *testing.B, rate, before, after float64) {
	raw := (before + after) / 2
	b.ReportMetric(raw, "raw-sigs/s")
	b.ReportMetric(rate/raw, "ratio-vs-raw-interleaved")
}

// histSnap is the sum and count of the server's histograms by name.
type histSnap map[string][2]float64

func snapHists(b *testing.B, ts *testServer) histSnap {
	mfs, err := ts.srv.Metrics().Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	out := histSnap{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				v := out[mf.GetName()]
				out[mf.GetName()] = [2]float64{v[0] + h.GetSampleSum(), v[1] + float64(h.GetSampleCount())}
			}
		}
	}
	return out
}

// reportAudit reports, for the requests since before, the mean audit fsync
// latency, the group-commit size and the mean HSM signing time.
func reportAudit(b *testing.B, ts *testServer, before histSnap) {
	now := snapHists(b, ts)
	mean := func(name string) (float64, bool) {
		n := now[name][1] - before[name][1]
		if n <= 0 {
			return 0, false
		}
		return (now[name][0] - before[name][0]) / n, true
	}
	if m, ok := mean("signetd_audit_fsync_seconds"); ok {
		b.ReportMetric(m*1000, "fsync-ms")
	}
	if m, ok := mean("signetd_audit_batch_records"); ok {
		b.ReportMetric(m, "records/fsync")
	}
	if m, ok := mean("signetd_sign_seconds"); ok {
		b.ReportMetric(m*1000, "hsm-sign-ms")
	}
}

// BenchmarkSigner compares signatures/s through the HTTP API with the raw
// crypto11 rate on the same SoftHSM2 token. Run:
//
//	go test -run '^$' -bench BenchmarkSigner -benchtime 3000x ./signer/
func BenchmarkSigner(b *testing.B) {
	for _, alg := range []string{"ecdsa-p256", "rsa-3072"} {
		// Raw ceiling: crypto11 on the same token, in-process, no HTTP.
		ctx, err := crypto11.Configure(&crypto11.Config{Path: testhsm.Module, TokenLabel: fx.hsm.Label, Pin: fx.hsm.PIN, MaxSessions: 64})
		if err != nil {
			b.Fatal(err)
		}
		key, err := ctx.FindKeyPair(nil, []byte(alg))
		if err != nil || key == nil {
			b.Fatalf("find %s: %v", alg, err)
		}
		for _, c := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/raw-crypto11/clients=%d", alg, c), func(b *testing.B) {
				d := sha256.Sum256([]byte("x"))
				cpu0 := cpuTime()
				lat, wall := runConcurrent(b, b.N, c, func() error {
					_, err := key.Sign(nil, d[:], crypto.SHA256)
					return err
				})
				reportRun(b, lat, wall, cpuTime()-cpu0)
			})
		}
		d := sha256.Sum256([]byte("x"))
		rawRate := func(n, c int) float64 {
			_, wall := runConcurrent(b, n, c, func() error {
				_, err := key.Sign(nil, d[:], crypto.SHA256)
				return err
			})
			return float64(n) / wall.Seconds()
		}

		cfg := fx.baseConfig(b)
		cfg.Limits.JTIUses = 1 << 30
		if n, err := strconv.Atoi(os.Getenv("SIGNET_BENCH_SESSIONS")); err == nil {
			cfg.PKCS11.MaxSessions = n
		}
		if p := os.Getenv("SIGNET_BENCH_AUDIT_DIR"); p != "" {
			cfg.Audit.Path = filepath.Join(p, fmt.Sprintf("bench-%d.jsonl", time.Now().UnixNano()))
		}
		ts := fx.start(b, cfg)
		tokens := make([]string, 32)
		for i := range tokens {
			tokens[i] = mint(b, fx.gh, map[string]any{"sub": fmt.Sprintf("repo:signet-ci/demo:client:%d", i)})
		}
		// One keep-alive connection per client goroutine at most: the body is
		// read to EOF before Close, or net/http cannot reuse the connection
		// and every request would pay a new TCP connection (a client
		// artefact, not the server's cost). newConns counts connections.
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		var newConns atomic.Int64
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused {
				newConns.Add(1)
			}
		}}
		post := func(tok string, body []byte) error {
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, ts.URL+"/v1/sign", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var sr core.SignResponse
			err = json.NewDecoder(resp.Body).Decode(&sr)
			_, _ = io.Copy(io.Discard, resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || len(sr.Signatures) == 0 {
				return fmt.Errorf("status %d: %v", resp.StatusCode, err)
			}
			return nil
		}
		one, _ := json.Marshal(signReq(alg, "app.tar.gz"))
		// connPost is a lean client: one keep-alive connection per client
		// goroutine and the request bytes built once, so the client's own
		// CPU (which shares the 2 cores with the server here, unlike a CI job
		// on its runner) stays small. The server sees the same HTTP/1.1
		// requests as from net/http.
		u, _ := url.Parse(ts.URL)
		wire := make([][]byte, len(tokens))
		for i, tok := range tokens {
			wire[i] = fmt.Appendf(nil, "POST /v1/sign HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", u.Host, tok, len(one), one)
		}
		type benchConn struct {
			c  net.Conn
			br *bufio.Reader
		}
		connPost := func(bc *benchConn, i int) error {
			if _, err := bc.c.Write(wire[i]); err != nil {
				return err
			}
			resp, err := http.ReadResponse(bc.br, nil)
			if err != nil {
				return err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"signature":"`)) {
				return fmt.Errorf("status %d: %v: %.200s", resp.StatusCode, err, body)
			}
			return nil
		}
		for _, c := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/http-conn/clients=%d", alg, c), func(b *testing.B) {
				probe := max(200, min(b.N, 2000))
				before := rawRate(probe, c)
				conns := make(chan *benchConn, c)
				for range c {
					nc, err := net.Dial("tcp", u.Host)
					if err != nil {
						b.Fatal(err)
					}
					defer nc.Close()
					conns <- &benchConn{c: nc, br: bufio.NewReader(nc)}
				}
				var who atomic.Int64
				hs0 := snapHists(b, ts)
				cpu0 := cpuTime()
				lat, wall := runConcurrent(b, b.N, c, func() error {
					bc := <-conns
					defer func() { conns <- bc }()
					return connPost(bc, int(who.Add(1))%c)
				})
				rate := reportRun(b, lat, wall, cpuTime()-cpu0)
				reportVsRaw(b, rate, before, rawRate(probe, c))
				reportAudit(b, ts, hs0)
			})
		}
		for _, c := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/http/clients=%d", alg, c), func(b *testing.B) {
				// The machine is noisy: the baseline is the raw rate measured
				// right before and right after the HTTP run, same concurrency.
				probe := max(200, min(b.N, 2000))
				before := rawRate(probe, c)
				var who atomic.Int64
				conns0 := newConns.Load()
				hs0 := snapHists(b, ts)
				cpu0 := cpuTime()
				lat, wall := runConcurrent(b, b.N, c, func() error {
					return post(tokens[int(who.Add(1))%c], one)
				})
				rate := reportRun(b, lat, wall, cpuTime()-cpu0)
				reportVsRaw(b, rate, before, rawRate(probe, c))
				b.ReportMetric(float64(newConns.Load()-conns0), "new-conns")
				reportAudit(b, ts, hs0)
			})
		}
		names := make([]string, 1000)
		for i := range names {
			names[i] = fmt.Sprintf("artifact-%04d.bin", i)
		}
		batch, _ := json.Marshal(signReq(alg, names...))
		b.Run(fmt.Sprintf("%s/http/batch-1000", alg), func(b *testing.B) {
			// One request per iteration is 1,000 signatures: cap the
			// iterations so -benchtime Nx sized for single digests stays short.
			iters := max(1, min(b.N, 5))
			before := rawRate(1000, 8)
			lat, wall := runConcurrent(b, iters, 1, func() error { return post(tokens[0], batch) })
			after := rawRate(1000, 8)
			rate := float64(1000*iters) / wall.Seconds()
			b.ReportMetric(rate, "sigs/s")
			b.ReportMetric(float64(pct(lat, 0.5).Microseconds())/1000, "ms/request")
			b.ReportMetric(rate/((before+after)/2), "ratio-vs-raw8-interleaved")
		})
		ctx.Close()
	}
}
