// Command signet-testbench runs Signet's end-to-end matrix against the real
// signetd, SoftHSM2, TLS OIDC issuers and cosign, prints a table and exits
// non-zero on any mismatch.
//
//	signet-testbench [--json FILE] [--only SUBSTR] [--no-load] [--jobs N] [--workers N]
//	                 [--scale] [--scale-n N] [--scale-sample N] [--keep] [--dir DIR]
//	                 [--mutants] [--signet BIN --signetd BIN]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/signet-ci/signet/testbench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type report struct {
	Results []testbench.Result     `json:"results"`
	Passed  int                    `json:"passed"`
	Failed  int                    `json:"failed"`
	Total   int                    `json:"total"`
	Seconds float64                `json:"seconds"`
	Scale   *testbench.ScaleReport `json:"scale,omitempty"`
	Load    *testbench.LoadReport  `json:"load,omitempty"`
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("signet-testbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonPath := fs.String("json", "", "also write the results as JSON to this file")
	only := fs.String("only", "", "run only scenarios whose name contains this (audit rows always run)")
	noLoad := fs.Bool("no-load", false, "leave out the load and kill -9 crash rows")
	jobs := fs.Int("jobs", 240, "simulated CI jobs in the load and crash rows")
	workers := fs.Int("workers", 8, "parallel jobs in the load and crash rows")
	scale := fs.Bool("scale", false, "also run the scale comparison (10,000 artifacts vs a cosign sign-blob loop)")
	scaleN := fs.Int("scale-n", 10000, "artifacts in the scale comparison")
	scaleSample := fs.Int("scale-sample", 20, "cosign sign-blob runs timed and extrapolated")
	mutants := fs.Bool("mutants", false, "also remove each protection from a copy of signetd and check that its rows turn red")
	keep := fs.Bool("keep", false, "keep the working directory")
	dir := fs.String("dir", "", "working directory (default: a new temp dir)")
	verbose := fs.Bool("v", false, "debug logs")
	signetBin := fs.String("signet", "", "use this signet binary instead of building cmd/signet")
	signetdBin := fs.String("signetd", "", "use this signetd binary instead of building cmd/signetd")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "signet-testbench: unexpected arguments %v\n", fs.Args())
		return 2
	}
	if (*signetBin == "") != (*signetdBin == "") {
		fmt.Fprintln(stderr, "signet-testbench: give both --signet and --signetd, or neither")
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if _, _, err := testbench.FindSoftHSM(); err != nil {
		fmt.Fprintf(stderr, "signet-testbench: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work := *dir
	if work == "" {
		d, err := os.MkdirTemp("", "signet-testbench-")
		if err != nil {
			fmt.Fprintf(stderr, "signet-testbench: %v\n", err)
			return 1
		}
		work = d
	}
	if !*keep && *dir == "" {
		defer os.RemoveAll(work)
	} else {
		log.Info("working directory kept", "dir", work)
	}
	start := time.Now()
	log.Info("setting up: CA, issuers, SoftHSM2 keys, signetd", "dir", work)
	b, err := testbench.NewBench(ctx, testbench.BenchOptions{Dir: work, Logger: log,
		Binaries: testbench.Binaries{Signet: *signetBin, Signetd: *signetdBin}})
	if err != nil {
		fmt.Fprintf(stderr, "signet-testbench: setup failed: %v\n", err)
		return 1
	}
	defer b.Close()
	log.Info("setup done", "took", time.Since(start).Round(time.Millisecond))

	results := b.RunMatrix(ctx, testbench.MatrixOptions{Only: *only, SkipLoad: *noLoad,
		Load: testbench.LoadOptions{Jobs: *jobs, Workers: *workers}})
	rep := report{Results: results, Total: len(results), Load: b.LastLoad}
	if *mutants {
		log.Info("mutants: removing one protection at a time", "count", len(testbench.Mutants))
		mr := b.RunMutants(ctx, testbench.Mutants)
		rep.Results = append(rep.Results, mr...)
		rep.Total += len(mr)
	}
	if *scale {
		log.Info("scale comparison", "artifacts", *scaleN, "cosign sample", *scaleSample)
		sr, err := b.RunScale(ctx, testbench.ScaleOptions{Artifacts: *scaleN, CosignSample: *scaleSample})
		r := testbench.Result{Scenario: "scale/10k-artifacts-vs-cosign-loop", Platform: "github", Key: "p256",
			Expected: "signed, verified"}
		if err != nil {
			r.Got, r.Detail = "error", err.Error()
		} else {
			rep.Scale = sr
			r.Got, r.Detail, r.Duration = sr.Outcome(), sr.String(), sr.SignetElapsed
			r.DurationMS = sr.SignetElapsed.Milliseconds()
		}
		r.Pass = r.Got == r.Expected
		rep.Results = append(rep.Results, r)
		rep.Total++
	}
	for _, r := range rep.Results {
		if r.Pass {
			rep.Passed++
		} else {
			rep.Failed++
		}
	}
	rep.Seconds = time.Since(start).Seconds()

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tPLATFORM\tKEY\tEXPECTED\tGOT\tDURATION\t")
	for _, r := range rep.Results {
		mark := ""
		if !r.Pass {
			mark = "  <-- MISMATCH"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.Platform, r.Key, r.Expected, r.Got, r.Duration.Round(time.Millisecond), mark)
	}
	tw.Flush()
	for _, r := range rep.Results {
		if !r.Pass && r.Detail != "" {
			fmt.Fprintf(stdout, "\n%s [%s/%s]: %s\n", r.Scenario, r.Platform, r.Key, r.Detail)
		}
	}
	for _, r := range rep.Results {
		if r.Pass && (r.Scenario == "load/parallel-ci-jobs" || r.Scenario == "crash/kill-9-audit-complete" || r.Scenario == "audit/counts-match") {
			fmt.Fprintf(stdout, "%s: %s\n", r.Scenario, r.Detail)
		}
	}
	if rep.Scale != nil {
		fmt.Fprintf(stdout, "scale: %s\n", rep.Scale.String())
	}
	fmt.Fprintf(stdout, "\n%d/%d scenarios as expected, %d mismatches, %.1fs\n", rep.Passed, rep.Total, rep.Failed, rep.Seconds)
	if *jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonPath, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "signet-testbench: write %s: %v\n", *jsonPath, err)
			return 1
		}
	}
	if rep.Failed > 0 {
		return 1
	}
	return 0
}
