// Command signet signs build artifacts through a remote HSM signer using the
// CI platform's OIDC identity, verifies signatures and provenance, and prints
// sha256sum-compatible digests. It only parses flags: the logic is in core.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/signet-ci/signet/actions"
	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/gitlab"
	"github.com/signet-ci/signet/jenkins"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	envPrefix   = "SIGNET_"
	programName = "signet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const topUsage = `signet — sign CI build artifacts with an HSM key, using the CI job's OIDC identity.

Usage:
  signet sign    [flags] ARTIFACT-OR-GLOB...   hash, get signatures + signed provenance from the signer
  signet verify  [flags] ARTIFACT...           check .sig files and/or provenance against a public key
  signet digest  [--algorithm sha256] PATH...  print "HEX  NAME" lines exactly like sha256sum
  signet version                               print the version

Run "signet COMMAND --help" for the flags of a command.
Exit codes: 0 ok, 1 signing or verification failed, 2 usage error.
`

func run(ctx context.Context, args []string, env core.Env, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return exitUsage
	}
	switch args[0] {
	case "sign":
		return runSign(ctx, args[1:], env, stdout, stderr)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "digest":
		return runDigest(ctx, args[1:], stdin, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "signet %s\n", core.Version)
		return exitOK
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, topUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "signet: unknown command %q\n\n%s", args[0], topUsage)
		return exitUsage
	}
}

// parseFlags parses args; --help prints usage and returns (false, exitOK).
func parseFlags(fs *flag.FlagSet, args []string) (ok bool, code int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, exitOK
		}
		return false, exitUsage
	}
	return true, exitOK
}

// applyEnv fills every flag not given on the command line from
// SIGNET_<FLAG> (upper case, '-' as '_').
func applyEnv(fs *flag.FlagSet, env core.Env) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := env(name); ok && v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

func newLogger(w io.Writer, verbose bool) *slog.Logger {
	lvl := slog.LevelInfo
	if verbose {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

func runSign(ctx context.Context, args []string, env core.Env, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("signet sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o         core.SignOptions
		platform  string
		verbose   bool
		timeout   time.Duration
		provFlag  = true
		serverURL string
	)
	fs.StringVar(&o.SignerURL, "signer", "", "signer base URL, e.g. https://signer.example.com:8443 (required)")
	fs.StringVar(&o.Audience, "audience", "", "audience the OIDC token must carry; the signer's configured audience (required)")
	fs.StringVar(&o.Key, "key", "", "name of the signer key to use (required)")
	fs.StringVar(&o.OutputDir, "output-dir", "", "directory for NAME.sig, provenance and signer.pub (default: .sig beside each artifact, the rest in --base-dir)")
	fs.BoolVar(&provFlag, "provenance", true, "also get a signed in-toto/SLSA provenance")
	fs.StringVar(&o.ProvenancePath, "provenance-path", "", "provenance file (default DIR/"+core.DefaultProvenanceName+")")
	fs.StringVar(&o.CACert, "ca-cert", "", "PEM file with extra CA certificates to trust for the signer's TLS")
	fs.StringVar(&o.TokenEnv, "token-env", "", "read the OIDC token from this environment variable instead of asking the platform")
	fs.StringVar(&o.TokenFile, "token-file", "", "read the OIDC token from this file instead of asking the platform")
	fs.StringVar(&platform, "platform", "auto", "CI platform: auto, github, gitlab or jenkins")
	fs.StringVar(&o.BaseDir, "base-dir", "", "subject names are relative to this directory (default: current directory)")
	fs.StringVar(&serverURL, "server-url", "", "override {server} of the identity mapping (default: GitHub's server URL, GitLab's token issuer)")
	fs.DurationVar(&timeout, "timeout", 10*time.Minute, "overall deadline for the run, retries included")
	fs.BoolVar(&verbose, "verbose", false, "debug logs (never includes the token)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: signet sign --signer URL --audience AUD --key NAME [flags] ARTIFACT-OR-GLOB...

Hashes the artifacts (files, directories, globs) locally, proves the CI job's
identity with its OIDC token, and asks the signer for a signature per artifact
(ARTIFACT.sig, base64 DER over SHA-256, cosign-compatible) and a signed SLSA v1
provenance (DSSE JSON lines). Artifacts never leave this machine. Outputs are
written atomically; signer.pub holds the key's public key (and chain).

Every flag can also be given as SIGNET_<FLAG>, e.g. SIGNET_SIGNER, SIGNET_KEY,
SIGNET_OUTPUT_DIR, SIGNET_CA_CERT; a flag on the command line wins. With no
ARTIFACT argument, SIGNET_ARTIFACTS lists them (separated by spaces or newlines).

Flags:
`)
		fs.PrintDefaults()
	}
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if err := applyEnv(fs, env); err != nil {
		fmt.Fprintf(stderr, "signet sign: %v\n", err)
		return exitUsage
	}
	o.Artifacts = fs.Args()
	if len(o.Artifacts) == 0 {
		if v, ok := env(envPrefix + "ARTIFACTS"); ok && strings.TrimSpace(v) != "" {
			o.Artifacts = strings.Fields(v)
		}
	}
	o.Provenance = provFlag
	o.Timeout = timeout
	o.ServerURL = serverURL
	o.Env = env
	log := newLogger(stderr, verbose)
	o.Logger = log

	p, err := selectPlatform(platform, env)
	if err != nil && !errors.Is(err, errNoPlatform) {
		fmt.Fprintf(stderr, "signet sign: %v\n", err)
		return exitUsage
	}
	// With no platform detected, core.Sign reports missing options first and
	// then the missing platform, so a newcomer sees the usage problem first.
	o.Platform = p

	res, err := core.Sign(ctx, o)
	if err != nil {
		if r, ok := p.(interface{ ReportError(context.Context, error) }); ok {
			r.ReportError(ctx, err)
		}
		var ue *core.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "signet sign: %v\nRun \"signet sign --help\" for usage.\n", err)
			return exitUsage
		}
		fmt.Fprintf(stderr, "signet sign: %v\n", err)
		return exitFailed
	}
	for _, a := range res.Artifacts {
		fmt.Fprintf(stdout, "signed %s  %s -> %s\n", a.SHA256, a.Name, a.SignaturePath)
	}
	if res.ProvenancePath != "" {
		fmt.Fprintf(stdout, "provenance %s\n", res.ProvenancePath)
	}
	fmt.Fprintf(stdout, "public key %s (key %s, %s)\n", res.PublicKeyPath, res.Key.Name, res.Key.Algorithm)
	return exitOK
}

var errNoPlatform = errors.New("no CI platform detected (GitHub Actions, GitLab CI, Jenkins): run inside a CI job or pass --platform")

// selectPlatform picks the adapter by name or by detection.
func selectPlatform(name string, env core.Env) (core.Platform, error) {
	all := []core.Platform{actions.New(env), gitlab.New(env), jenkins.New(env)}
	switch name {
	case "", "auto":
		for _, p := range all {
			if p.Detect(env) {
				return p, nil
			}
		}
		return nil, errNoPlatform
	default:
		for _, p := range all {
			if p.Name() == name {
				return p, nil
			}
		}
		return nil, fmt.Errorf("--platform %q: want auto, github, gitlab or jenkins", name)
	}
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("signet verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o       core.VerifyOptions
		keyPath string
	)
	fs.StringVar(&keyPath, "public-key", "", "PEM public key or certificate chain (leaf first), e.g. signer.pub (required)")
	fs.StringVar(&o.SignaturePath, "signature", "", "signature file of the single ARTIFACT (default: ARTIFACT.sig when it exists)")
	fs.StringVar(&o.ProvenancePath, "provenance", "", "DSSE provenance file (JSON lines, or one cosign envelope)")
	fs.StringVar(&o.SourceRepo, "source-repo", "", "expected source repository URI, e.g. https://github.com/org/repo")
	fs.StringVar(&o.RefGlob, "ref", "", "glob the source ref must match, e.g. 'refs/tags/v*'")
	fs.StringVar(&o.BuilderID, "builder-id", "", "expected builder id (workflow / CI config URI / Jenkins job URL)")
	fs.StringVar(&o.RunnerEnvironment, "runner-environment", "", "expected runner environment, e.g. github-hosted")
	fs.BoolVar(&o.RequireSignature, "require-signature", false, "fail when an artifact has no .sig even if --provenance is given")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: signet verify --public-key PEM [flags] ARTIFACT...

Checks each artifact against ARTIFACT.sig (or --signature) and, with
--provenance, that the DSSE envelope is signed by the key, lists the artifact's
SHA-256 as a subject, and meets the --source-repo/--ref/--builder-id/
--runner-environment expectations. Accepts cosign sign-blob / attest-blob
outputs made with a key. A failure names the check that failed.

Flags:
`)
		fs.PrintDefaults()
	}
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	o.Artifacts = fs.Args()
	if keyPath == "" || len(o.Artifacts) == 0 {
		fmt.Fprintln(stderr, "signet verify: need --public-key and at least one ARTIFACT")
		fs.Usage()
		return exitUsage
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		fmt.Fprintf(stderr, "signet verify: read --public-key: %v\n", err)
		return exitUsage
	}
	o.KeyPEM = keyPEM
	res, err := core.Verify(ctx, o)
	for _, va := range res {
		fmt.Fprintf(stdout, "OK %s  %s (%s)\n", va.SHA256, va.Path, strings.Join(va.Checks, ", "))
	}
	if err != nil {
		var ue *core.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "signet verify: %v\n", err)
			return exitUsage
		}
		fmt.Fprintf(stderr, "FAILED %v\n", err)
		return exitFailed
	}
	return exitOK
}

func runDigest(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("signet digest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	alg := fs.String("algorithm", "sha256", "sha256, sha384 or sha512 (output like sha256sum/sha384sum/sha512sum)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: signet digest [--algorithm sha256] PATH...\n\nPrints \"HEX  NAME\" lines exactly like sha256sum; directories are walked; - is standard input.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	a, err := core.ParseHashAlgorithm(*alg)
	if err != nil {
		fmt.Fprintf(stderr, "signet digest: %v\n", err)
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "signet digest: no PATH given")
		fs.Usage()
		return exitUsage
	}
	code := exitOK
	w := bufio.NewWriterSize(stdout, 64<<10)
	defer w.Flush()
	fail := func(msg string) {
		w.Flush()
		fmt.Fprintf(stderr, "signet: %s\n", msg)
		code = exitFailed
	}
	// Hash runs of file arguments in one parallel pass; print in argument order.
	var pending []core.ArtifactFile
	flush := func() {
		if len(pending) == 0 {
			return
		}
		digests, errs, err := core.HashFilesAll(ctx, pending, a, 0)
		if err != nil {
			fail(err.Error())
			pending = nil
			return
		}
		for i, d := range digests {
			if errs[i] != nil {
				fail(pending[i].Name + ": " + errs[i].Error())
				continue
			}
			w.WriteString(core.SumLine(d.Hex(), d.Name))
		}
		pending = nil
	}
	for _, p := range fs.Args() {
		if p == "-" { // standard input, as sha256sum
			flush()
			sum, _, err := core.HashReader(ctx, stdin, a)
			if err != nil {
				fail("-: " + err.Error())
				continue
			}
			w.WriteString(core.SumLine(hex.EncodeToString(sum), "-"))
			continue
		}
		files, err := core.DigestTargets(p)
		if err != nil {
			flush()
			fail(err.Error())
			continue
		}
		pending = append(pending, files...)
	}
	flush()
	return code
}
