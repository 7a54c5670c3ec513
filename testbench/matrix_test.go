package testbench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The bench is expensive (keys, binaries, signetd): the tests share one.
var (
	benchOnce sync.Once
	benchVal  *Bench
	benchErr  error
)

func sharedBench(t *testing.T) *Bench {
	t.Helper()
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "signet-testbench-test-")
		if err != nil {
			benchErr = err
			return
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		benchVal, benchErr = NewBench(context.Background(), BenchOptions{Dir: dir, Logger: log})
	})
	if benchErr != nil {
		t.Fatalf("bench setup: %v", benchErr)
	}
	return benchVal
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchVal != nil {
		benchVal.Close()
		os.RemoveAll(benchVal.Dir)
	}
	os.Exit(code)
}

// TestMatrix runs the whole scenario matrix (good, hostile, tamper, faults,
// load, crash, audit) against the real signetd; each row is a subtest that
// fails when what happened differs from what the row expects.
func TestMatrix(t *testing.T) {
	b := sharedBench(t)
	results := b.RunMatrix(t.Context(), MatrixOptions{Load: LoadOptions{Jobs: 120, Workers: 8}})
	if len(results) < 40 {
		t.Fatalf("only %d rows ran", len(results))
	}
	seen := map[string]int{}
	for _, r := range results {
		name := fmt.Sprintf("%s/%s/%s", r.Scenario, r.Platform, r.Key)
		seen[name]++
		if seen[name] > 1 {
			name += fmt.Sprintf("#%d", seen[name])
		}
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			if !r.Pass {
				t.Errorf("expected %q, got %q: %s", r.Expected, r.Got, r.Detail)
			}
		})
	}
}

// TestScale signs and attests many small artifacts in one `signet sign` run
// and times a cosign sign-blob loop on a sample in the same run. It reports
// the ratio; it asserts only correctness (everything signed and verified).
func TestScale(t *testing.T) {
	b := sharedBench(t)
	n := 10000
	if testing.Short() {
		n = 1000
	}
	rep, err := b.RunScale(t.Context(), ScaleOptions{Artifacts: n, CosignSample: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep.String())
	if got := rep.Outcome(); got != "signed, verified" {
		t.Fatalf("scale run: %s (%s)", got, rep.VerifyNote)
	}
}

// TestAnalyseStrace checks the fsync-ordering analysis on hand-made logs.
func TestAnalyseStrace(t *testing.T) {
	const audit = "/x/audit.jsonl"
	open := `10  openat(AT_FDCWD, "/x/audit.jsonl", O_RDWR|O_CREAT|O_CLOEXEC, 0600) = 5` + "\n"
	cases := []struct {
		name, log, want string
	}{
		{"synced", open +
			`10  write(5, "{\"seq\":1}"..., 10) = 10` + "\n" +
			`10  fsync(5)                          = 0` + "\n" +
			`11  write(9, "\27\3\3\3y"..., 894) = 894` + "\n", "fsync precedes every answer"},
		{"unsynced", open +
			`10  write(5, "{\"seq\":1}"..., 10) = 10` + "\n" +
			`11  write(9, "\27\3\3\3y"..., 894) = 894` + "\n" +
			`10  fsync(5)                          = 0` + "\n", "1 answers before fsync"},
		{"fsync-unfinished-at-answer", open +
			`10  write(5, "{\"seq\":1}"..., 10) = 10` + "\n" +
			`10  fsync(5 <unfinished ...>` + "\n" +
			`11  write(9, "\27\3\3\3y"..., 894) = 894` + "\n" +
			`10  <... fsync resumed>)              = 0` + "\n", "1 answers before fsync"},
		{"fd-reused-after-close", `10  openat(AT_FDCWD, "/etc/ssl/a.pem", O_RDONLY) = 5` + "\n" +
			`10  write(5, "x", 1) = 1` + "\n" + `10  close(5) = 0` + "\n" + open +
			`10  write(5, "{\"seq\":1}"..., 10) = 10` + "\n" +
			`10  fdatasync(5)                      = 0` + "\n" +
			`11  write(9, "\27\3\3\3y"..., 894) = 894` + "\n" +
			`10  close(5) = 0` + "\n" +
			`12  write(5, "\1\0\0\0\0\0\0\0", 8) = 8` + "\n", "fsync precedes every answer"},
		{"o-dsync", `10  openat(AT_FDCWD, "/x/audit.jsonl", O_RDWR|O_DSYNC, 0600) = 5` + "\n" +
			`10  write(5, "{\"seq\":1}"..., 10) = 10` + "\n" +
			`11  write(9, "\27\3\3\3y"..., 894) = 894` + "\n", "fsync precedes every answer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "strace.out")
			if err := os.WriteFile(p, []byte(tc.log), 0o644); err != nil {
				t.Fatal(err)
			}
			got, detail := analyseStrace(p, audit, 1)
			if got != tc.want {
				t.Errorf("got %q (%s), want %q", got, detail, tc.want)
			}
		})
	}
}

// TestMutants removes each protection (audience check, issuer allowlist,
// policy, provenance identity check, audit fsync, code certificate
// validity, rule purpose) from a copy of signetd and
// checks that the rows named for it turn red.
func TestMutants(t *testing.T) {
	b := sharedBench(t)
	for _, r := range b.RunMutants(t.Context(), Mutants) {
		t.Run(r.Scenario, func(t *testing.T) {
			if !r.Pass {
				t.Errorf("expected %q, got %q: %s", r.Expected, r.Got, r.Detail)
			}
		})
	}
}
