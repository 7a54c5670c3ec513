package testbench

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signet-ci/signet/core"
)

// LoadOptions configure RunLoad and the crash row.
type LoadOptions struct {
	// Jobs is the fixed number of simulated CI jobs (default 240). Each job
	// gets its own token and calls /v1/sign (one digest) and /v1/attest.
	Jobs int
	// Workers is the number of jobs running at once (default 8).
	Workers int
	// Key is the signer key (default p256).
	Key string
}

func (o LoadOptions) withDefaults() LoadOptions {
	if o.Jobs <= 0 {
		o.Jobs = 240
	}
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Key == "" {
		o.Key = "p256"
	}
	return o
}

// LoadReport is what a load run measured.
type LoadReport struct {
	Jobs       int           `json:"jobs"`
	Workers    int           `json:"workers"`
	Failed     int           `json:"failed"`
	Requests   int           `json:"requests"`
	Elapsed    time.Duration `json:"-"`
	ElapsedMS  int64         `json:"elapsed_ms"`
	ReqPerSec  float64       `json:"requests_per_second"`
	JobsPerSec float64       `json:"jobs_per_second"`
	P50MS      float64       `json:"p50_ms"`
	P99MS      float64       `json:"p99_ms"`
	MaxMS      float64       `json:"max_ms"`
	// Received are the audit references of every answer a client got.
	Received []receipt `json:"-"`
	Errors   []string  `json:"errors,omitempty"`
}

func (r *LoadReport) String() string {
	return fmt.Sprintf("%d jobs x 2 requests by %d workers in %s: %.0f req/s (%.1f jobs/s), p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d failed",
		r.Jobs, r.Workers, r.Elapsed.Round(time.Millisecond), r.ReqPerSec, r.JobsPerSec, r.P50MS, r.P99MS, r.MaxMS, r.Failed)
}

// receipt is one answer a client received: the audit reference and the
// digest it covers.
type receipt struct {
	Op     string
	Seq    uint64
	Hash   string
	Digest string
}

// loadJob is one simulated CI job's work: its token and statement.
type loadJob struct {
	token string
	stmt  []byte
	d     core.DigestRequest
}

// makeLoadJobs mints tokens and builds statements up front so the timed part
// measures the signer only.
func (b *Bench) makeLoadJobs(n int) ([]loadJob, error) {
	jobs := make([]loadJob, n)
	for i := range jobs {
		p := Platforms[i%len(Platforms)]
		// A distinct build per job: run, job or build number.
		overrides := map[string]map[string]any{
			"github":  {"run_id": fmt.Sprint(7000000 + i)},
			"gitlab":  {"job_id": fmt.Sprint(9000000 + i)},
			"jenkins": {"build_number": 1000 + i},
		}[p]
		tok, id, err := b.mintWithIdentity(p, overrides)
		if err != nil {
			return nil, err
		}
		d := randomDigest()
		stmt, err := digestStatement(d, id, p)
		if err != nil {
			return nil, err
		}
		jobs[i] = loadJob{token: tok, stmt: stmt, d: d}
	}
	return jobs, nil
}

// startAuxSigner starts a second signetd in b.Dir/name on the same HSM with
// its own audit log (so load, crash and strace rows do not disturb the
// matrix's audit counts), under wrapper when given.
func (b *Bench) startAuxSigner(ctx context.Context, name string, wrapper ...string) (*Signer, error) {
	return StartSigner(ctx, SignerOptions{Signetd: b.Bins.Signetd, Dir: filepath.Join(b.Dir, name), CA: b.CA,
		Config: b.SignerConfig(), Env: b.HSM.Env(), Wrapper: wrapper})
}

// RunLoad runs opts.Jobs simulated CI jobs, opts.Workers at a time, against
// a dedicated signetd, and checks that its audit log holds exactly one allow
// record per answer and verifies.
func (b *Bench) RunLoad(ctx context.Context, opts LoadOptions) (*LoadReport, error) {
	opts = opts.withDefaults()
	s, err := b.startAuxSigner(ctx, "signer-load")
	if err != nil {
		return nil, err
	}
	defer s.Stop() //nolint:errcheck
	jobs, err := b.makeLoadJobs(opts.Jobs)
	if err != nil {
		return nil, err
	}
	b.Log.Info("load: running", "jobs", opts.Jobs, "workers", opts.Workers)
	rep := b.drive(ctx, s.URL, jobs, opts, nil)
	recs, err := AuditRecords(s.AuditPath)
	if err != nil {
		return rep, err
	}
	allowed := 0
	for _, r := range recs {
		if isAllowed(r) {
			allowed++
		}
	}
	if allowed != len(rep.Received) || len(recs) != len(rep.Received) {
		return rep, fmt.Errorf("audit log has %d records (%d allowed) for %d answers received", len(recs), allowed, len(rep.Received))
	}
	if out, err := AuditVerify(ctx, b.Bins.Signetd, s.AuditPath); err != nil {
		return rep, fmt.Errorf("%w (%s)", err, out)
	}
	b.Log.Info("load: done", "report", rep.String())
	return rep, nil
}

// drive runs the jobs; after half of them, midway (if not nil) is called once.
func (b *Bench) drive(ctx context.Context, url string, jobs []loadJob, opts LoadOptions, midway func()) *LoadReport {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		received  []receipt
		errs      []string
		failed    int
		next      atomic.Int64
		done      atomic.Int64
		midOnce   sync.Once
		wg        sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				j := jobs[i]
				c, err := core.NewClient(core.ClientOptions{BaseURL: url, Token: j.token, CACertFile: b.CA.CAPath,
					RetryMax: 30, RetryWaitMin: 50 * time.Millisecond, RetryWaitMax: 500 * time.Millisecond})
				if err == nil {
					var sr *core.SignResponse
					t0 := time.Now()
					sr, err = c.Sign(ctx, opts.Key, []core.DigestRequest{j.d})
					t1 := time.Now()
					if err == nil {
						var ar *core.AttestResponse
						ar, err = c.Attest(ctx, opts.Key, j.stmt)
						t2 := time.Now()
						mu.Lock()
						latencies = append(latencies, t1.Sub(t0))
						received = append(received, receipt{"sign", sr.Audit.Seq, sr.Audit.Hash, j.d.SHA256})
						if err == nil {
							latencies = append(latencies, t2.Sub(t1))
							received = append(received, receipt{"attest", ar.Audit.Seq, ar.Audit.Hash, j.d.SHA256})
						}
						mu.Unlock()
					}
				}
				if err != nil {
					mu.Lock()
					failed++
					if len(errs) < 5 {
						errs = append(errs, err.Error())
					}
					mu.Unlock()
				}
				if n := done.Add(1); midway != nil && int(n) == len(jobs)/2 {
					midOnce.Do(midway)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		i := int(p*float64(len(latencies))+0.5) - 1
		i = max(0, min(i, len(latencies)-1))
		return float64(latencies[i].Microseconds()) / 1000
	}
	rep := &LoadReport{Jobs: len(jobs), Workers: opts.Workers, Failed: failed, Requests: len(latencies),
		Elapsed: elapsed, ElapsedMS: elapsed.Milliseconds(), P50MS: pct(0.50), P99MS: pct(0.99), MaxMS: pct(1.0),
		Received: received, Errors: errs}
	rep.ReqPerSec = float64(len(latencies)) / elapsed.Seconds()
	rep.JobsPerSec = float64(len(jobs)-failed) / elapsed.Seconds()
	return rep
}

// crashRun: load against a dedicated signetd, kill -9 midway, restart; every
// answer a client received must be in the audit log, and the chain verifies.
func (b *Bench) crashRun(ctx context.Context, opts LoadOptions) (string, string) {
	opts = opts.withDefaults()
	s, err := b.startAuxSigner(ctx, "signer-crash")
	if err != nil {
		return "setup error", err.Error()
	}
	defer s.Stop() //nolint:errcheck
	jobs, err := b.makeLoadJobs(opts.Jobs)
	if err != nil {
		return "setup error", err.Error()
	}
	var (
		restartErr  error
		killed      bool
		recsAtKill  int
		restartTook time.Duration
	)
	rep := b.drive(ctx, s.URL, jobs, opts, func() {
		b.Log.Info("crash: kill -9 signetd midway")
		if err := s.Kill(); err != nil {
			restartErr = err
			return
		}
		killed = true
		if recs, err := AuditRecords(s.AuditPath); err == nil {
			recsAtKill = len(recs)
		}
		t0 := time.Now()
		restartErr = s.Restart(ctx)
		restartTook = time.Since(t0)
		b.Log.Info("crash: signetd restarted", "err", restartErr, "took", restartTook.Round(time.Millisecond))
	})
	if !killed || restartErr != nil {
		return "kill/restart failed", fmt.Sprint(restartErr)
	}
	recs, err := AuditRecords(s.AuditPath)
	if err != nil {
		return "audit unreadable", err.Error()
	}
	bySeq := map[string]map[string]any{}
	for _, r := range recs {
		bySeq[fmt.Sprint(r["seq"])] = r
	}
	var missing []string
	for _, rc := range rep.Received {
		r, ok := bySeq[fmt.Sprint(rc.Seq)]
		if !ok {
			missing = append(missing, fmt.Sprintf("seq %d (%s) absent", rc.Seq, rc.Op))
			continue
		}
		if h, _ := r["hash"].(string); rc.Hash != "" && h != rc.Hash {
			missing = append(missing, fmt.Sprintf("seq %d hash %s, client got %s", rc.Seq, h, rc.Hash))
			continue
		}
		if rc.Op == "sign" && !recordHasDigest(r, rc.Digest) {
			missing = append(missing, fmt.Sprintf("seq %d lacks digest %s", rc.Seq, rc.Digest))
		}
	}
	out, verr := AuditVerify(ctx, b.Bins.Signetd, s.AuditPath)
	detail := fmt.Sprintf("kill -9 after %d of %d jobs with %d records on disk, restarted in %s (clients retried); %d answers received (%d jobs failed), %d records; %s",
		len(jobs)/2, len(jobs), recsAtKill, restartTook.Round(time.Millisecond), len(rep.Received), rep.Failed, len(recs), strings.TrimSpace(out))
	switch {
	case len(missing) > 0:
		return fmt.Sprintf("%d received signatures not in the audit log", len(missing)), strings.Join(missing[:min(5, len(missing))], "; ")
	case verr != nil:
		return "audit chain broken", verr.Error()
	case len(rep.Received) == 0:
		return "no answers received", strings.Join(rep.Errors, "; ")
	}
	return "every received signature audited, chain ok", detail
}

func recordHasDigest(r map[string]any, hexDigest string) bool {
	ds, _ := r["digests"].([]any)
	for _, d := range ds {
		if m, ok := d.(map[string]any); ok && strings.EqualFold(fmt.Sprint(m["sha256"]), hexDigest) {
			return true
		}
	}
	return false
}
