package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func runCLI(env map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, mapEnv(env), strings.NewReader("from stdin\n"), &out, &errb)
	return code, out.String(), errb.String()
}

func TestDigestMatchesSha256sum(t *testing.T) {
	dir := t.TempDir()
	names := []string{"a.txt", "with space.bin", `back\slash`, "new\nline", "sub/deep.txt"}
	for i, n := range names {
		p := filepath.Join(dir, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, 1000*i+1), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	args := []string{"a.txt", "with space.bin", `back\slash`, "new\nline", "sub/deep.txt"}
	want, err := exec.Command("sha256sum", args...).Output()
	if err != nil {
		t.Fatalf("sha256sum: %v", err)
	}
	code, got, stderr := runCLI(nil, append([]string{"digest"}, args...)...)
	if code != 0 || got != string(want) {
		t.Fatalf("exit %d, stderr %q\n got: %q\nwant: %q", code, stderr, got, want)
	}
	// sha512sum compatibility.
	want512, _ := exec.Command("sha512sum", "a.txt").Output()
	if code, got, _ := runCLI(nil, "digest", "--algorithm", "sha512", "a.txt"); code != 0 || got != string(want512) {
		t.Fatalf("sha512: %q vs %q", got, want512)
	}
	// Standard input.
	wantStdin, _ := exec.Command("sh", "-c", "printf 'from stdin\\n' | sha256sum -").Output()
	if code, got, _ := runCLI(nil, "digest", "-"); code != 0 || got != string(wantStdin) {
		t.Fatalf("stdin: %q vs %q", got, wantStdin)
	}
	// A directory is walked.
	if code, got, _ := runCLI(nil, "digest", "sub"); code != 0 || !strings.HasSuffix(got, "  sub/deep.txt\n") {
		t.Fatalf("dir: exit %d %q", code, got)
	}
	// A missing file: exit 1, other files still printed, like sha256sum.
	code, got, stderr = runCLI(nil, "digest", "nope", "a.txt")
	if code != 1 || !strings.Contains(stderr, "nope: No such file") || !strings.HasSuffix(got, "  a.txt\n") {
		t.Fatalf("missing: exit %d out %q err %q", code, got, stderr)
	}
}

func TestExitCodesAndHelp(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		code     int
		inStderr string
		inStdout string
	}{
		{"no args", nil, nil, 2, "Usage:", ""},
		{"unknown command", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate"`, ""},
		{"help", nil, []string{"help"}, 0, "", "signet sign"},
		{"version", nil, []string{"version"}, 0, "", "signet v"},
		{"sign help", nil, []string{"sign", "--help"}, 0, "SIGNET_<FLAG>", ""},
		{"verify help", nil, []string{"verify", "-h"}, 0, "--public-key", ""},
		{"sign bad flag", nil, []string{"sign", "--nope"}, 2, "flag provided but not defined", ""},
		{"sign missing required", map[string]string{"GITHUB_ACTIONS": "true"}, []string{"sign", "x"}, 2, "missing required option(s): --signer (SIGNET_SIGNER), --audience (SIGNET_AUDIENCE), --key (SIGNET_KEY)", ""},
		{"sign no platform", nil, []string{"sign", "--signer", "https://s", "--audience", "a", "--key", "k", "x"}, 2, "no CI platform detected", ""},
		{"sign bad platform", nil, []string{"sign", "--platform", "travis", "x"}, 2, `--platform "travis"`, ""},
		{"sign env flag bad value", map[string]string{"SIGNET_PROVENANCE": "maybe"}, []string{"sign", "x"}, 2, "SIGNET_PROVENANCE", ""},
		{"sign missing artifact", map[string]string{"SIGNET_SIGNER": "https://127.0.0.1:1", "SIGNET_AUDIENCE": "a", "SIGNET_KEY": "k", "SIGNET_PLATFORM": "jenkins"},
			[]string{"sign", "/nonexistent/file.bin"}, 2, `"/nonexistent/file.bin" does not exist`, ""},
		{"verify usage", nil, []string{"verify", "x"}, 2, "need --public-key", ""},
		{"verify missing key file", nil, []string{"verify", "--public-key", "/nonexistent.pem", "x"}, 2, "read --public-key", ""},
		{"digest bad algorithm", nil, []string{"digest", "--algorithm", "md5", "x"}, 2, "unsupported hash algorithm", ""},
		{"digest nothing", nil, []string{"digest"}, 2, "no PATH", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(tt.env, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.inStderr) || !strings.Contains(out, tt.inStdout) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
		})
	}
}

func TestApplyEnvFillsUnsetFlagsOnly(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	signer := fs.String("signer", "", "")
	outDir := fs.String("output-dir", "", "")
	caCert := fs.String("ca-cert", "", "")
	if err := fs.Parse([]string{"--signer", "https://cli"}); err != nil {
		t.Fatal(err)
	}
	env := mapEnv(map[string]string{"SIGNET_SIGNER": "https://env", "SIGNET_OUTPUT_DIR": "out", "SIGNET_CA_CERT": "ca.pem"})
	if err := applyEnv(fs, env); err != nil {
		t.Fatal(err)
	}
	if *signer != "https://cli" || *outDir != "out" || *caCert != "ca.pem" {
		t.Fatalf("signer %q out %q ca %q", *signer, *outDir, *caCert)
	}
}

func TestSignArtifactsFromEnv(t *testing.T) {
	// With no ARTIFACT argument, SIGNET_ARTIFACTS names them (the GitLab
	// component passes them that way); a missing one is a usage error naming it.
	env := map[string]string{"SIGNET_SIGNER": "https://127.0.0.1:1", "SIGNET_AUDIENCE": "a", "SIGNET_KEY": "k",
		"SIGNET_PLATFORM": "jenkins", "SIGNET_ARTIFACTS": "/nonexistent/one.bin\n/nonexistent/two.bin"}
	code, _, errOut := runCLI(env, "sign")
	if code != 2 || !strings.Contains(errOut, `"/nonexistent/one.bin" does not exist`) {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
