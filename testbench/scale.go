package testbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ScaleOptions configure RunScale.
type ScaleOptions struct {
	// Artifacts is the number of small files signed in one `signet sign` run (default 10,000).
	Artifacts int
	// CosignSample is how many of them a `cosign sign-blob --key` loop signs
	// (timed, then extrapolated to Artifacts; default 20).
	CosignSample int
	// Key is the signer key (default p256).
	Key string
}

// ScaleReport compares one batched `signet sign` run with a cosign loop
// measured in the same run.
type ScaleReport struct {
	Artifacts          int           `json:"artifacts"`
	SignetElapsed      time.Duration `json:"-"`
	SignetMS           int64         `json:"signet_ms"`
	SignetPerArtifact  float64       `json:"signet_us_per_artifact"`
	CosignSample       int           `json:"cosign_sample"`
	CosignPerArtifact  time.Duration `json:"-"`
	CosignPerMS        float64       `json:"cosign_ms_per_artifact"`
	CosignExtrapolated time.Duration `json:"-"`
	CosignExtrapMS     int64         `json:"cosign_extrapolated_ms"`
	Ratio              float64       `json:"ratio"`
	Signatures         int           `json:"signatures"`
	Envelopes          int           `json:"envelopes"`
	Verified           bool          `json:"verified"`
	VerifyNote         string        `json:"verify_note,omitempty"`
}

// Outcome is the row's "got": whether the batch was signed and verified.
func (r *ScaleReport) Outcome() string {
	if r.Signatures != r.Artifacts {
		return fmt.Sprintf("%d of %d signed", r.Signatures, r.Artifacts)
	}
	if !r.Verified {
		return "verification failed"
	}
	return "signed, verified"
}

func (r *ScaleReport) String() string {
	return fmt.Sprintf("%d artifacts: signet sign+attest %s (%.0f µs/artifact, %d envelopes); cosign sign-blob --key %.0f ms/artifact over %d, extrapolated %s; signet is %.0fx faster",
		r.Artifacts, r.SignetElapsed.Round(time.Millisecond), r.SignetPerArtifact, r.Envelopes, r.CosignPerMS, r.CosignSample,
		r.CosignExtrapolated.Round(time.Second), r.Ratio)
}

// RunScale signs and attests opts.Artifacts small files in one `signet sign`
// run (GitHub platform environment), then times `cosign sign-blob --key` on
// a sample of the same files, and reports the extrapolated ratio.
func (b *Bench) RunScale(ctx context.Context, opts ScaleOptions) (*ScaleReport, error) {
	if opts.Artifacts <= 0 {
		opts.Artifacts = 10000
	}
	if opts.CosignSample <= 0 {
		opts.CosignSample = 20
	}
	opts.CosignSample = min(opts.CosignSample, opts.Artifacts)
	if opts.Key == "" {
		opts.Key = "p256"
	}
	ws := filepath.Join(b.Dir, "scale")
	arts := filepath.Join(ws, "dist")
	out := filepath.Join(ws, "out")
	if err := os.MkdirAll(arts, 0o755); err != nil {
		return nil, err
	}
	b.Log.Info("scale: writing artifacts", "n", opts.Artifacts)
	for i := 0; i < opts.Artifacts; i++ {
		data := fmt.Appendf(nil, "artifact %d of the scale run %s\n", i, randomHex(16))
		if err := os.WriteFile(filepath.Join(arts, fmt.Sprintf("pkg-%05d.txt", i)), data, 0o644); err != nil {
			return nil, err
		}
	}
	env := b.GitHub.Env(ws)
	rep := &ScaleReport{Artifacts: opts.Artifacts, CosignSample: opts.CosignSample}
	b.Log.Info("scale: signet sign", "n", opts.Artifacts)
	res := run(ctx, ws, env, b.Bins.Signet, "sign", "--signer", b.Proxy.URL, "--audience", DefaultAudience, "--key", opts.Key,
		"--output-dir", out, "--ca-cert", b.CA.CAPath, "--platform", "github", "dist")
	rep.SignetElapsed = res.Duration
	rep.SignetMS = res.Duration.Milliseconds()
	rep.SignetPerArtifact = float64(res.Duration.Microseconds()) / float64(opts.Artifacts)
	if res.Exit != 0 {
		return rep, fmt.Errorf("signet sign of %d artifacts: exit %d: %s", opts.Artifacts, res.Exit, res.tail())
	}
	sigs, _ := filepath.Glob(filepath.Join(out, "dist", "*.sig"))
	if len(sigs) == 0 {
		sigs, _ = filepath.Glob(filepath.Join(out, "*.sig"))
	}
	rep.Signatures = len(sigs)
	prov := filepath.Join(out, "provenance.intoto.jsonl")
	if data, err := os.ReadFile(prov); err == nil {
		for _, c := range data {
			if c == '\n' {
				rep.Envelopes++
			}
		}
	}
	// Verify a few (first, middle, last) with signet verify.
	k := b.Keys[opts.Key]
	rep.Verified = true
	for _, i := range []int{0, opts.Artifacts / 2, opts.Artifacts - 1} {
		name := fmt.Sprintf("pkg-%05d.txt", i)
		sig := filepath.Join(out, "dist", name+".sig")
		if _, err := os.Stat(sig); err != nil {
			sig = filepath.Join(out, name+".sig")
		}
		r := run(ctx, ws, nil, b.Bins.Signet, "verify", "--public-key", k.PubPath, "--signature", sig, "--provenance", prov,
			"--source-repo", b.expectedRepo("github"), filepath.Join("dist", name))
		if r.Exit != 0 {
			rep.Verified = false
			rep.VerifyNote = name + ": " + r.tail()
			break
		}
	}
	// The cosign baseline, same machine, same run.
	cdir := filepath.Join(ws, "cosign")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return rep, err
	}
	cenv := map[string]string{"COSIGN_PASSWORD": "testbench"}
	if r := run(ctx, cdir, cenv, b.Cosign, "generate-key-pair"); r.Exit != 0 {
		return rep, fmt.Errorf("cosign generate-key-pair: %s", r.tail())
	}
	b.Log.Info("scale: cosign sign-blob loop", "sample", opts.CosignSample)
	var total time.Duration
	for i := 0; i < opts.CosignSample; i++ {
		name := fmt.Sprintf("pkg-%05d.txt", i*opts.Artifacts/opts.CosignSample)
		r := run(ctx, cdir, cenv, b.Cosign, "sign-blob", "--key", "cosign.key", "--tlog-upload=false", "--yes",
			"--output-signature", name+".sig", filepath.Join(arts, name))
		if r.Exit != 0 {
			return rep, fmt.Errorf("cosign sign-blob %s: %s", name, r.tail())
		}
		total += r.Duration
	}
	rep.CosignPerArtifact = total / time.Duration(opts.CosignSample)
	rep.CosignPerMS = float64(rep.CosignPerArtifact.Microseconds()) / 1000
	rep.CosignExtrapolated = rep.CosignPerArtifact * time.Duration(opts.Artifacts)
	rep.CosignExtrapMS = rep.CosignExtrapolated.Milliseconds()
	rep.Ratio = float64(rep.CosignExtrapolated) / float64(rep.SignetElapsed)
	b.Log.Info("scale: done", "report", rep.String())
	return rep, nil
}
