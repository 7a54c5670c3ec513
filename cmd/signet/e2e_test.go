package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/testbench"
)

// End to end with real parts: the signet binary against the real signetd
// (SoftHSM2 keys through PKCS#11), real OIDC issuers minting GitHub, GitLab
// and Jenkins tokens, and cosign verifying the outputs.
func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bench, err := testbench.NewBench(ctx, testbench.BenchOptions{Dir: filepath.Join(t.TempDir(), "bench")})
	if err != nil {
		t.Fatalf("testbench: %v", err)
	}
	defer bench.Close()

	signetCmd := func(t *testing.T, dir string, env map[string]string, args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bench.Bins.Signet, args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errb.String()
	}
	cosign := func(t *testing.T, dir string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bench.Cosign, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TUF_ROOT="+filepath.Join(dir, ".sigstore"))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Verified OK") {
			t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	workspace := func(t *testing.T, n int) string {
		t.Helper()
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "dist"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			p := filepath.Join(dir, "dist", fmt.Sprintf("app-%05d.bin", i))
			if err := os.WriteFile(p, []byte(fmt.Sprintf("artifact %d built by the job\n", i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	common := func(key string) map[string]string {
		return map[string]string{
			"SIGNET_SIGNER":     bench.Signer.URL,
			"SIGNET_AUDIENCE":   testbench.DefaultAudience,
			"SIGNET_KEY":        key,
			"SIGNET_CA_CERT":    bench.CA.CAPath,
			"SIGNET_OUTPUT_DIR": "out",
		}
	}
	merge := func(ms ...map[string]string) map[string]string {
		out := map[string]string{}
		for _, m := range ms {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}

	t.Run("github p256, cosign verifies both outputs", func(t *testing.T) {
		dir := workspace(t, 2)
		code, out, errOut := signetCmd(t, dir, merge(bench.GitHub.Env(dir), common("p256")), "sign", "dist/*.bin")
		if code != 0 {
			t.Fatalf("signet sign: exit %d\n%s\n%s", code, out, errOut)
		}
		for _, f := range []string{"out/dist/app-00000.bin.sig", "out/dist/app-00001.bin.sig", "out/provenance.intoto.jsonl", "out/signer.pub"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatalf("missing output: %v", err)
			}
		}
		cosign(t, dir, "verify-blob", "--key", "out/signer.pub", "--signature", "out/dist/app-00000.bin.sig", "--insecure-ignore-tlog=true", "dist/app-00000.bin")
		cosign(t, dir, "verify-blob-attestation", "--key", "out/signer.pub", "--signature", "out/provenance.intoto.jsonl",
			"--type", "slsaprovenance1", "--insecure-ignore-tlog=true", "dist/app-00001.bin")
		code, out, errOut = signetCmd(t, dir, nil, "verify", "--public-key", "out/signer.pub", "--signature", "out/dist/app-00000.bin.sig",
			"--provenance", "out/provenance.intoto.jsonl", "--source-repo", testbench.GitHubServerURL+"/"+testbench.GitHubRepository,
			"--ref", "refs/heads/*", "--runner-environment", "github-hosted", "dist/app-00000.bin")
		if code != 0 || !strings.Contains(out, "OK ") {
			t.Fatalf("signet verify: exit %d\n%s\n%s", code, out, errOut)
		}
		// The provenance carries the token-derived identity.
		envs, err := core.ReadEnvelopes(filepath.Join(dir, "out", core.DefaultProvenanceName))
		if err != nil {
			t.Fatal(err)
		}
		id, err := core.IdentityFromStatement(envs[0].Payload)
		if err != nil {
			t.Fatal(err)
		}
		if id.ImmutableIDs["repository_id"] != testbench.GitHubRepositoryID || id.SourceDigest != testbench.GitHubSHA {
			t.Fatalf("identity %+v", id)
		}
		// A policy refusal: exit 1, the signer's reason, no outputs.
		dir2 := workspace(t, 1)
		code, _, errOut = signetCmd(t, dir2, merge(bench.GitHub.Env(dir2), common(testbench.TagsOnlyKey)), "sign", "dist")
		if code != 1 || !strings.Contains(errOut, core.ErrCodePolicyDenied) {
			t.Fatalf("tags-only key on a branch: exit %d\n%s", code, errOut)
		}
		if _, err := os.Stat(filepath.Join(dir2, "out")); !os.IsNotExist(err) {
			entries, _ := os.ReadDir(filepath.Join(dir2, "out"))
			if len(entries) > 0 {
				t.Fatalf("refused run left outputs: %v", entries)
			}
		}
	})

	t.Run("gitlab ed25519", func(t *testing.T) {
		dir := workspace(t, 1)
		tok, err := bench.GitLab.Mint(bench.GitLab.DefaultClaims())
		if err != nil {
			t.Fatal(err)
		}
		code, out, errOut := signetCmd(t, dir, merge(bench.GitLab.Env(dir, tok), common("ed25519"), map[string]string{"SIGNET_TOKEN_ENV": "SIGNET_ID_TOKEN"}), "sign", "dist")
		if code != 0 {
			t.Fatalf("signet sign: exit %d\n%s\n%s", code, out, errOut)
		}
		cosign(t, dir, "verify-blob-attestation", "--key", "out/signer.pub", "--signature", "out/provenance.intoto.jsonl",
			"--type", "slsaprovenance1", "--insecure-ignore-tlog=true", "dist/app-00000.bin")
		code, out, errOut = signetCmd(t, dir, nil, "verify", "--public-key", "out/signer.pub", "--signature", "out/dist/app-00000.bin.sig",
			"--provenance", "out/provenance.intoto.jsonl", "--source-repo", bench.GitLab.BaseURL+"/"+testbench.GitLabProjectPath, "dist/app-00000.bin")
		if code != 0 {
			t.Fatalf("signet verify: exit %d\n%s\n%s", code, out, errOut)
		}
	})

	t.Run("jenkins p256, 10000 artifacts in one run", func(t *testing.T) {
		dir := workspace(t, 10_000)
		tok, err := bench.Jenkins.Mint(bench.Jenkins.DefaultClaims())
		if err != nil {
			t.Fatal(err)
		}
		tokFile := filepath.Join(dir, "token")
		if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		env := merge(bench.Jenkins.Env(dir, ""), common("p256"), map[string]string{"SIGNET_TOKEN_FILE": tokFile})
		delete(env, "SIGNET_ID_TOKEN")
		code, out, errOut := signetCmd(t, dir, env, "sign", "--platform", "jenkins", "dist")
		if code != 0 {
			t.Fatalf("signet sign: exit %d\n%s", code, lastLines(errOut, 20))
		}
		t.Logf("signet sign log:\n%s", lastLines(errOut, 12))
		if n := strings.Count(out, "signed "); n != 10_000 {
			t.Fatalf("%d signed lines, want 10000", n)
		}
		envs, err := core.ReadEnvelopes(filepath.Join(dir, "out", core.DefaultProvenanceName))
		if err != nil {
			t.Fatal(err)
		}
		subjects := 0
		for _, e := range envs {
			ps, err := core.ParseStatement(e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			subjects += len(ps.Subjects())
		}
		if subjects != 10_000 {
			t.Fatalf("provenance covers %d subjects in %d envelopes, want 10000", subjects, len(envs))
		}
		code, out, errOut = signetCmd(t, dir, nil, "verify", "--public-key", "out/signer.pub", "--signature", "out/dist/app-09999.bin.sig",
			"--provenance", "out/provenance.intoto.jsonl", "--builder-id", bench.Jenkins.JobURL, "dist/app-09999.bin")
		if code != 0 {
			t.Fatalf("signet verify: exit %d\n%s\n%s", code, out, errOut)
		}
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
