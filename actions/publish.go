package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/signet-ci/signet/core"
)

// Output names of the action (action.yml declares the same).
const (
	outputSignatures = "signatures" // newline-separated signature file paths
	outputProvenance = "provenance" // path of the provenance (DSSE JSON lines); empty when off
	outputDigests    = "digests"    // JSON array of {name, path, sha256, signature}
	outputAuditSeq   = "audit-seq"  // last audit sequence number of the signer
	outputPublicKey  = "public-key" // PEM of the key used, for pinning
)

// digestOutput is one element of the `digests` output.
type digestOutput struct {
	Name      string `json:"name"`
	Path      string `json:"path"`
	SHA256    string `json:"sha256"`
	Signature string `json:"signature"`
}

// fileCommandDelimiter is the heredoc delimiter go-githubactions uses for
// multi-line values; a value containing it would corrupt GITHUB_OUTPUT.
const fileCommandDelimiter = "_GitHubActionsFileCommandDelimeter_"

// Publish sets the step outputs (GITHUB_OUTPUT) and appends a Markdown table
// to the job summary (GITHUB_STEP_SUMMARY). core calls it only after every
// signature and the provenance are on disk, so outputs never point at
// missing files.
func (p *platform) Publish(ctx context.Context, res *core.Result) error {
	if res == nil {
		return fmt.Errorf("publishing to GitHub Actions: no result")
	}
	outs, err := outputs(res)
	if err != nil {
		return err
	}
	if p.getenv("GITHUB_OUTPUT") == "" {
		p.log.Warn("GITHUB_OUTPUT is not set; the step outputs are not published (is this an old runner?)")
	} else {
		for _, kv := range outs {
			if err := p.fileCommand(func() { p.gha().SetOutput(kv[0], kv[1]) }); err != nil {
				return fmt.Errorf("setting step output %q in GITHUB_OUTPUT: %w", kv[0], err)
			}
		}
	}
	if p.getenv("GITHUB_STEP_SUMMARY") == "" {
		p.log.Warn("GITHUB_STEP_SUMMARY is not set; no job summary written")
		return nil
	}
	md := summary(res)
	if err := p.fileCommand(func() { p.gha().AddStepSummary(md) }); err != nil {
		return fmt.Errorf("writing the job summary GITHUB_STEP_SUMMARY: %w", err)
	}
	return nil
}

// fileCommand runs a go-githubactions file command, which panics on I/O
// errors, and turns the panic into an error.
func (p *platform) fileCommand(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	fn()
	return nil
}

// outputs returns the step outputs for res, in a stable order.
func outputs(res *core.Result) ([][2]string, error) {
	sigs := make([]string, 0, len(res.Artifacts))
	digests := make([]digestOutput, 0, len(res.Artifacts))
	for _, a := range res.Artifacts {
		sigs = append(sigs, a.SignaturePath)
		digests = append(digests, digestOutput{Name: a.Name, Path: a.Path, SHA256: a.SHA256, Signature: a.SignaturePath})
	}
	dj, err := json.Marshal(digests)
	if err != nil {
		return nil, fmt.Errorf("encoding the digests output: %w", err)
	}
	out := [][2]string{
		{outputSignatures, strings.Join(sigs, "\n")},
		{outputProvenance, res.ProvenancePath},
		{outputDigests, string(dj)},
		{outputAuditSeq, strconv.FormatUint(res.AuditSeq, 10)},
		{outputPublicKey, res.PublicKeyPath},
	}
	for _, kv := range out {
		if strings.Contains(kv[1], fileCommandDelimiter) {
			return nil, fmt.Errorf("output %q contains the reserved text %q (a file name?): rename the file", kv[0], fileCommandDelimiter)
		}
	}
	return out, nil
}

// summary renders the job summary: one table row per artifact (artifact,
// sha256, signature file, key, audit sequence) plus the provenance and key.
func summary(res *core.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Signet: %d artifact(s) signed\n\n", len(res.Artifacts))
	b.WriteString("| artifact | sha256 | signature file | key | audit sequence |\n")
	b.WriteString("|---|---|---|---|---|\n")
	key := res.Key.Name
	if res.Key.Algorithm != "" {
		key += " (" + res.Key.Algorithm + ")"
	}
	for _, a := range res.Artifacts {
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %d |\n",
			cell(a.Name), a.SHA256, cell(a.SignaturePath), cell(key), res.AuditSeq)
	}
	b.WriteString("\n")
	if res.ProvenancePath != "" {
		fmt.Fprintf(&b, "Provenance (in-toto DSSE, SLSA v1): %s\n\n", cell(res.ProvenancePath))
	}
	if res.Key.KeyID != "" {
		fmt.Fprintf(&b, "Key id (SHA-256 of the public key): `%s`", res.Key.KeyID)
		if res.PublicKeyPath != "" {
			fmt.Fprintf(&b, ", public key: %s", cell(res.PublicKeyPath))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// cell escapes a value for a Markdown table cell.
func cell(s string) string {
	r := strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ", "<", "&lt;", ">", "&gt;", "`", "\\`")
	return r.Replace(s)
}
