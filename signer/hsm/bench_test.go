package hsm

import (
	"crypto"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
)

// BenchmarkKeySign compares signing through Key (the signer's path) with
// crypto11 used directly on the same token object, 8 goroutines each.
func BenchmarkKeySign(b *testing.B) {
	const label = "bench-ecdsa-p256"
	if _, err := GenerateKey(th.URI(label), "ecdsa-p256"); err != nil {
		b.Fatal(err)
	}
	u, _ := ParseURI(th.URI(label))
	d := sha256.Sum256([]byte("x"))
	run := func(b *testing.B, s crypto.Signer) {
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		for range 8 {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	for _, n := range []int{0, 64} {
		b.Run(fmt.Sprintf("hsm.Key/sessions=%d", n), func(b *testing.B) {
			_, k := openKey(b, label, Options{MaxSessions: n})
			run(b, k)
		})
	}
	for _, n := range []int{5, 64} {
		b.Run(fmt.Sprintf("crypto11/sessions=%d", n), func(b *testing.B) {
			pin, _ := u.PIN(nil)
			mod, _ := u.Module()
			ctx, err := crypto11.Configure(&crypto11.Config{Path: mod, TokenLabel: u.Token, Pin: pin, MaxSessions: n})
			if err != nil {
				b.Fatal(err)
			}
			defer ctx.Close()
			k, err := ctx.FindKeyPair(nil, []byte(label))
			if err != nil || k == nil {
				b.Fatal(err)
			}
			run(b, k)
		})
	}
}

// BenchmarkKeySignIdleGaps signs from one goroutine with a pause between
// signatures (as a signer waiting on its audit fsync does): the per-signature
// cost rises when the CPU idles in between.
func BenchmarkKeySignIdleGaps(b *testing.B) {
	const label = "bench-gap-ecdsa-p256"
	if _, err := GenerateKey(th.URI(label), "ecdsa-p256"); err != nil {
		b.Fatal(err)
	}
	_, k := openKey(b, label, Options{})
	d := sha256.Sum256([]byte("x"))
	for _, gap := range []time.Duration{0, 200 * time.Microsecond} {
		b.Run(fmt.Sprintf("gap=%s", gap), func(b *testing.B) {
			var signing time.Duration
			for b.Loop() {
				if gap > 0 {
					time.Sleep(gap)
				}
				t0 := time.Now()
				if _, err := k.Sign(nil, d[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
				signing += time.Since(t0)
			}
			b.ReportMetric(float64(signing.Microseconds())/float64(b.N), "sign-µs")
		})
	}
}
