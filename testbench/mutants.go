package testbench

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Mutant removes one protection from a copy of signetd's source. The bench
// runs the rows that should catch it against the mutated binary; every one
// of them must turn red. This is the proof behind the protection -> row table.
type Mutant struct {
	Name       string
	Protection string
	File       string // relative to the module root
	Old, New   string // exact source text replaced once
	// OldAlts are other spellings of Old (tried in order when Old is absent).
	OldAlts []string
	// Rows must all fail against the mutant.
	Rows []string
}

// Mutants are the protections of DESIGN.md's flow, each removed in turn.
// They name exact source text of signer/; when that text changes, the
// mutant reports that it could not be applied (update it here).
var Mutants = []Mutant{
	{Name: "no-audience-check", Protection: "audience check", File: "signer/oidc.go",
		Old: "if aud != v.audience {", New: "if false && aud != v.audience {",
		Rows: []string{"hostile/wrong-audience"}},
	{Name: "no-issuer-allowlist", Protection: "issuer allowlist", File: "signer/oidc.go",
		Old:  "\tif is == nil {\n\t\treturn nil, authErr(\"\", \"token issuer is not configured on this signer\")\n\t}",
		New:  "\tif is == nil {\n\t\tfor _, x := range v.byURL {\n\t\t\tif x.cfg.Name == \"github\" {\n\t\t\t\tc := &issuer{cfg: x.cfg, client: x.client, minGap: x.minGap, algs: x.algs}\n\t\t\t\tc.cfg.URL = issStr\n\t\t\t\tis = c\n\t\t\t}\n\t\t}\n\t}",
		Rows: []string{"hostile/wrong-issuer"}},
	{Name: "no-policy", Protection: "claim policy", File: "signer/server.go",
		Old: "if err := Authorize(rq.key, rq.p); err != nil {", New: "if err := Authorize(rq.key, rq.p); false && err != nil {",
		Rows: []string{"hostile/policy-other-repo", "hostile/policy-branch-on-tags-key", "hostile/cli-policy-refused"}},
	{Name: "no-identity-check", Protection: "provenance identity check", File: "signer/server.go",
		Old: "} else if err := want.Diff(got); err != nil {", New: "} else if err := want.Diff(got); false && err != nil {",
		Rows: []string{"hostile/statement-other-repo"}},
	{Name: "no-audit-fsync", Protection: "audit fsync", File: "signer/audit.go",
		Old: "err = syncData(a.f)", OldAlts: []string{"err = a.f.Sync()"}, New: "err = nil",
		Rows: []string{"audit/fsync-before-answer"}},
	{Name: "no-cert-validity", Protection: "code certificate validity", File: "signer/keys.go",
		Old: "\tfor i, c := range k.Chain {\n\t\tif t.Before(c.NotBefore) {", New: "\tfor i, c := range k.Chain[:0] {\n\t\tif t.Before(c.NotBefore) {",
		Rows: []string{"hostile/code-cert-expired", "hostile/code-cert-not-yet-valid"}},
	{Name: "no-purpose-check", Protection: "key purpose of allow rules", File: "signer/policy.go",
		Old: "if r.Purpose == \"\" || r.Purpose == k.Purpose {", New: "if true || r.Purpose == \"\" || r.Purpose == k.Purpose {",
		Rows: []string{"hostile/purpose-mismatch"}},
}

// copyTree copies the files under src/rel (recursively) to dst/rel.
func copyTree(src, dst string, rels ...string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, rel := range rels {
		root := filepath.Join(src, rel)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			r, _ := filepath.Rel(src, p)
			target := filepath.Join(dst, r)
			if d.IsDir() {
				return os.MkdirAll(target, 0o755)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		})
		if err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
	}
	return nil
}

// SwapSignetd restarts the bench's signetd (same port, config and audit
// log) with another binary; later auxiliary signers use it too.
func (b *Bench) SwapSignetd(ctx context.Context, path string) error {
	if err := b.Signer.Stop(); err != nil {
		return err
	}
	b.Signer.opts.Signetd = path
	b.Bins.Signetd = path
	return b.Signer.Restart(ctx)
}

// RunMutants builds one signetd per mutant from a copy of the source and
// runs the mutant's rows against it; a mutant row passes when every one of
// its rows turned red. The original signetd is restored afterwards.
func (b *Bench) RunMutants(ctx context.Context, mutants []Mutant) []Result {
	orig := b.Bins.Signetd
	defer func() {
		if b.Bins.Signetd != orig {
			if err := b.SwapSignetd(ctx, orig); err != nil {
				b.Log.Error("restore signetd", "err", err)
			}
		}
	}()
	var results []Result
	// record adds the mutant's row: it passes when got is "caught by" all its rows.
	record := func(m Mutant, start time.Time, got, detail string) {
		want := "caught by " + strings.Join(m.Rows, ", ")
		results = append(results, Result{Scenario: "mutant/" + m.Name, Platform: "-", Key: "-",
			Expected: want, Got: got, Pass: got == want, Detail: detail,
			Duration: time.Since(start), DurationMS: time.Since(start).Milliseconds()})
	}
	root, err := ModuleRoot()
	if err != nil {
		record(Mutant{Name: "setup"}, time.Now(), "setup error", err.Error())
		return results
	}
	for _, m := range mutants {
		start := time.Now()
		src := filepath.Join(b.Dir, "mutants", m.Name)
		if err := copyTree(root, src, "go.mod", "go.sum", "core", "signer", "cmd/signetd"); err != nil {
			record(m, start, "setup error", err.Error())
			continue
		}
		p := filepath.Join(src, m.File)
		code, err := os.ReadFile(p)
		old := ""
		for _, o := range append([]string{m.Old}, m.OldAlts...) {
			if err == nil && strings.Contains(string(code), o) {
				old = o
				break
			}
		}
		if old == "" {
			record(m, start, "mutant not applicable", fmt.Sprintf("%s no longer contains %q: update testbench.Mutants", m.File, m.Old))
			continue
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(code), old, m.New, 1)), 0o644); err != nil {
			record(m, start, "setup error", err.Error())
			continue
		}
		bin := filepath.Join(b.Dir, "mutants", "signetd-"+m.Name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/signetd")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			record(m, start, "mutant does not build", fmt.Sprintf("%v: %s", err, out))
			continue
		}
		b.Log.Info("mutant: running its rows", "mutant", m.Name, "protection", m.Protection, "rows", m.Rows)
		if err := b.SwapSignetd(ctx, bin); err != nil {
			record(m, start, "mutant signetd did not start", err.Error())
			continue
		}
		rows := b.RunMatrix(ctx, MatrixOptions{Rows: m.Rows, SkipLoad: true})
		var green, red []string
		for _, r := range rows {
			label := r.Scenario + "[" + r.Platform + "]"
			if r.Pass {
				green = append(green, label)
			} else {
				red = append(red, label+": "+r.Got)
			}
		}
		got := "caught by " + strings.Join(m.Rows, ", ")
		detail := "red: " + strings.Join(red, "; ")
		if len(green) > 0 || len(red) == 0 {
			got = fmt.Sprintf("NOT caught: %d rows still green", len(green))
			detail = "green: " + strings.Join(green, ", ") + "; " + detail
		}
		record(m, start, got, detail)
	}
	return results
}
