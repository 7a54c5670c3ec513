package signer_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
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

func pct(lat []time.Duration, p float64) time.Duration {
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// reportAudit reports the mean audit fsync latency and group-commit size
// accumulated so far by the server.
func reportAudit(b *testing.B, ts *testServer) {
	mfs, err := ts.srv.Metrics().Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil || h.GetSampleCount() == 0 {
				continue
			}
			mean := h.GetSampleSum() / float64(h.GetSampleCount())
			switch mf.GetName() {
			case "signetd_audit_fsync_seconds":
				b.ReportMetric(mean*1000, "fsync-ms")
			case "signetd_audit_batch_records":
				b.ReportMetric(mean, "records/fsync")
			}
		}
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
				lat, wall := runConcurrent(b, b.N, c, func() error {
					_, err := key.Sign(nil, d[:], crypto.SHA256)
					return err
				})
				rate := float64(b.N) / wall.Seconds()
				b.ReportMetric(rate, "sigs/s")
				b.ReportMetric(float64(pct(lat, 0.5).Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(pct(lat, 0.99).Microseconds())/1000, "p99-ms")
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
		if p := os.Getenv("SIGNET_BENCH_AUDIT_DIR"); p != "" {
			cfg.Audit.Path = filepath.Join(p, fmt.Sprintf("bench-%d.jsonl", time.Now().UnixNano()))
		}
		ts := fx.start(b, cfg)
		tokens := make([]string, 32)
		for i := range tokens {
			tokens[i] = mint(b, fx.gh, map[string]any{"sub": fmt.Sprintf("repo:signet-ci/demo:client:%d", i)})
		}
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		post := func(tok string, body []byte) error {
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/sign", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var sr core.SignResponse
			if err := json.NewDecoder(resp.Body).Decode(&sr); err != nil || resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d: %v", resp.StatusCode, err)
			}
			return nil
		}
		one, _ := json.Marshal(signReq(alg, "app.tar.gz"))
		for _, c := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/http/clients=%d", alg, c), func(b *testing.B) {
				// The machine is noisy: the baseline is the raw rate measured
				// right before and right after the HTTP run, same concurrency.
				probe := max(200, min(b.N, 2000))
				before := rawRate(probe, c)
				var who atomic.Int64
				lat, wall := runConcurrent(b, b.N, c, func() error {
					return post(tokens[int(who.Add(1))%c], one)
				})
				rate := float64(b.N) / wall.Seconds()
				after := rawRate(probe, c)
				b.ReportMetric((before+after)/2, "raw-sigs/s")
				b.ReportMetric(rate/((before+after)/2), "ratio-vs-raw-interleaved")
				b.ReportMetric(rate, "sigs/s")
				b.ReportMetric(float64(pct(lat, 0.5).Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(pct(lat, 0.99).Microseconds())/1000, "p99-ms")
				reportAudit(b, ts)
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
