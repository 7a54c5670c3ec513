package core

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// SignOptions configures one `signet sign` run.
type SignOptions struct {
	SignerURL string // required
	Audience  string // required: aud of the OIDC token
	Key       string // required: signer key name

	// Artifacts are files, directories or globs; names are relative to BaseDir
	// ("" = current directory).
	Artifacts []string
	BaseDir   string

	// OutputDir receives NAME.sig files, the provenance and signer.pub.
	// Empty: each .sig beside its artifact, provenance and signer.pub in BaseDir.
	OutputDir string
	// Provenance turns the signed in-toto statement on (default in the CLI: true).
	Provenance bool
	// ProvenancePath overrides DIR/provenance.intoto.jsonl.
	ProvenancePath string

	CACert string // extra TLS roots for the signer (PEM)

	// TokenEnv / TokenFile override the platform's IDToken.
	TokenEnv  string
	TokenFile string

	// Platform is the detected CI adapter (required): it describes the
	// build, provides the token unless TokenEnv/TokenFile override it, and
	// publishes the result.
	Platform Platform
	// Env is the environment (for TokenEnv); default os.LookupEnv.
	Env Env
	// ServerURL overrides {server} of the identity mapping (default: the
	// build context's ServerURL for GitHub, the token's iss for GitLab).
	ServerURL string

	// Timeout is the one overall deadline for the run (default 10m).
	Timeout time.Duration
	// MaxStatementBytes splits the provenance into several statements when
	// one would be larger (default 1 MiB; the signer's default body limit is 4 MiB).
	MaxStatementBytes int
	// ClientOptions tunes the signer client (retries, HTTP client); BaseURL,
	// Token and CACertFile are filled from the fields above.
	ClientOptions ClientOptions

	Logger *slog.Logger
}

// UsageError marks a bad invocation (exit code 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

func (o *SignOptions) validate() error {
	var missing []string
	if o.SignerURL == "" {
		missing = append(missing, "--signer (SIGNET_SIGNER)")
	}
	if o.Audience == "" {
		missing = append(missing, "--audience (SIGNET_AUDIENCE)")
	}
	if o.Key == "" {
		missing = append(missing, "--key (SIGNET_KEY)")
	}
	if len(missing) > 0 {
		return usagef("missing required option(s): %s", strings.Join(missing, ", "))
	}
	if len(o.Artifacts) == 0 {
		return usagef("no artifacts: name at least one file, directory or glob to sign")
	}
	if o.TokenEnv != "" && o.TokenFile != "" {
		return usagef("--token-env and --token-file are exclusive: give one")
	}
	if o.Platform == nil {
		return usagef("no CI platform detected: run inside GitHub Actions, GitLab CI or Jenkins, or pass --platform")
	}
	return nil
}

// Sign hashes the artifacts, obtains the token, asks the signer for
// signatures (and a signed provenance), verifies every answer against the
// key's public key, writes all outputs atomically and publishes the result.
func Sign(ctx context.Context, o SignOptions) (*Result, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Env == nil {
		o.Env = os.LookupEnv
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// 1. Artifacts.
	files, err := ResolveArtifacts(o.BaseDir, o.Artifacts)
	if err != nil {
		return nil, usagef("%v", err)
	}
	log.Info("hashing artifacts", "count", len(files))
	start := time.Now()
	lastReport := time.Now()
	digests, err := HashFiles(ctx, files, SHA256, 0, func(done int) {
		if time.Since(lastReport) > 2*time.Second {
			lastReport = time.Now()
			log.Info("hashing progress", "done", done, "total", len(files))
		}
	})
	if err != nil {
		return nil, err
	}
	log.Info("hashed artifacts", "count", len(digests), "duration", time.Since(start).Round(time.Millisecond))

	// 2. Token, then the build context from the same token's claims.
	token, claims, err := o.token(ctx)
	if err != nil {
		return nil, err
	}
	bc, err := o.Platform.BuildContext(ctx, claims)
	if err != nil {
		return nil, fmt.Errorf("describe the build (%s): %w", o.Platform.Name(), err)
	}

	// 3. Signer client and key.
	copts := o.ClientOptions
	copts.BaseURL = o.SignerURL
	copts.Token = token
	if copts.CACertFile == "" {
		copts.CACertFile = o.CACert
	}
	if copts.Logger == nil {
		copts.Logger = log
	}
	client, err := NewClient(copts)
	if err != nil {
		return nil, usagef("%v", err)
	}
	ki, err := client.Key(ctx, o.Key)
	if err != nil {
		return nil, fmt.Errorf("look up key %q on the signer: %w", o.Key, err)
	}
	vk, err := ParseVerificationKey([]byte(ki.PublicKey + "\n" + ki.CertificateChain))
	if err != nil {
		return nil, fmt.Errorf("signer key %q: public key: %w", o.Key, err)
	}

	// 4. Signatures.
	reqs := make([]DigestRequest, len(digests))
	for i, d := range digests {
		reqs[i] = DigestRequest{Name: d.Name, SHA256: d.Hex()}
	}
	log.Info("requesting signatures", "count", len(reqs), "key", o.Key)
	sr, err := client.Sign(ctx, o.Key, reqs)
	if err != nil {
		return nil, err
	}
	var stage Staging
	defer stage.Abort()
	res := &Result{Key: *ki, AuditSeq: sr.Audit.Seq}
	for i, s := range sr.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Signature)
		if err != nil {
			return nil, fmt.Errorf("signer returned a non-base64 signature for %s: %w", s.Name, err)
		}
		if err := VerifyDigest(vk.Public, digests[i].Digest, sig); err != nil {
			return nil, fmt.Errorf("signer returned a signature for %s that does not verify with key %q: %w", s.Name, o.Key, err)
		}
		sigPath := o.sigPath(digests[i])
		if err := stage.Add(sigPath, SigFileContent(sig), 0o644); err != nil {
			return nil, err
		}
		res.Artifacts = append(res.Artifacts, ArtifactResult{Name: s.Name, Path: digests[i].Path, SHA256: s.SHA256, SignaturePath: sigPath})
	}

	// 5. Provenance.
	if o.Provenance {
		server := o.ServerURL
		if server == "" && o.Platform.Name() == PlatformGitHub {
			server = bc.ServerURL
		}
		id, err := IdentityFromClaims(o.Platform.Name(), server, claims)
		if err != nil {
			return nil, fmt.Errorf("identity from token: %w", err)
		}
		subjects := make([]Subject, len(digests))
		for i, d := range digests {
			subjects[i] = Subject{Name: d.Name, Digest: map[string]string{string(SHA256): d.Hex()}}
		}
		chunks, err := buildStatementChunks(subjects, id, bc, o.MaxStatementBytes)
		if err != nil {
			return nil, err
		}
		log.Info("requesting attestation", "statements", len(chunks), "subjects", len(subjects))
		envs, seq, err := attestAll(ctx, client, o.Key, vk, chunks, id, bc, log)
		if err != nil {
			return nil, err
		}
		if seq > res.AuditSeq {
			res.AuditSeq = seq
		}
		data, err := EnvelopesJSONL(envs)
		if err != nil {
			return nil, err
		}
		res.ProvenancePath = o.provenancePath()
		if err := stage.Add(res.ProvenancePath, data, 0o644); err != nil {
			return nil, err
		}
	}

	// 6. signer.pub
	pubPEM := strings.TrimSpace(ki.PublicKey) + "\n"
	if c := strings.TrimSpace(ki.CertificateChain); c != "" {
		pubPEM += c + "\n"
	}
	res.PublicKeyPath = filepath.Join(o.outDir(), PublicKeyFileName)
	if err := stage.Add(res.PublicKeyPath, []byte(pubPEM), 0o644); err != nil {
		return nil, err
	}
	if err := stage.Commit(); err != nil {
		return nil, err
	}
	log.Info("signed", "artifacts", len(res.Artifacts), "provenance", res.ProvenancePath, "public_key", res.PublicKeyPath, "audit_seq", res.AuditSeq)

	if err := o.Platform.Publish(ctx, res); err != nil {
		return res, fmt.Errorf("outputs written, but publishing to %s failed: %w", o.Platform.Name(), err)
	}
	return res, nil
}

func (o *SignOptions) outDir() string {
	if o.OutputDir != "" {
		return o.OutputDir
	}
	if o.BaseDir != "" {
		return o.BaseDir
	}
	return "."
}

func (o *SignOptions) sigPath(d ArtifactDigest) string {
	if o.OutputDir == "" {
		return d.Path + ".sig"
	}
	return filepath.Join(o.OutputDir, filepath.FromSlash(d.Name)+".sig")
}

func (o *SignOptions) provenancePath() string {
	if o.ProvenancePath != "" {
		return o.ProvenancePath
	}
	return filepath.Join(o.outDir(), DefaultProvenanceName)
}

// token returns the OIDC token and its (unverified) claims, which also fill
// the provenance's identity.
func (o *SignOptions) token(ctx context.Context) (string, map[string]any, error) {
	t, src, err := o.rawToken(ctx)
	if err != nil {
		return "", nil, err
	}
	// Fail before any request when the token cannot be for this signer: the
	// signer would refuse it anyway, but its answer cannot say which
	// credential or id_tokens entry to fix.
	claims, err := UnverifiedClaims(t)
	if err != nil {
		return "", nil, fmt.Errorf("the OIDC token from %s: %w", src, err)
	}
	if err := CheckAudience(claims, o.Audience); err != nil {
		return "", nil, fmt.Errorf("the OIDC token from %s: %w", src, err)
	}
	return t, claims, nil
}

// CheckAudience reports whether the (unverified) claims name audience in
// "aud" (a string or an array of strings, RFC 7519 section 4.1.3). The error
// names both values so the user knows which side to change.
func CheckAudience(claims map[string]any, audience string) error {
	var auds []string
	switch v := claims["aud"].(type) {
	case nil:
		return fmt.Errorf("it has no aud claim; signers refuse tokens without an audience: configure the token's audience as %q", audience)
	case string:
		auds = []string{v}
	case []any:
		for _, a := range v {
			s, ok := a.(string)
			if !ok {
				return fmt.Errorf("its aud claim holds a %T, not a string", a)
			}
			auds = append(auds, s)
		}
	default:
		return fmt.Errorf("its aud claim is a %T, not a string or an array of strings", v)
	}
	for _, a := range auds {
		if a == audience {
			return nil
		}
	}
	return fmt.Errorf("its aud is %q but the signer's audience (--audience) is %q: request the token for %q, or fix --audience", strings.Join(auds, ","), audience, audience)
}

func (o *SignOptions) rawToken(ctx context.Context) (token, source string, err error) {
	switch {
	case o.TokenFile != "":
		b, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return "", "", fmt.Errorf("read --token-file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", "", fmt.Errorf("--token-file %s is empty", o.TokenFile)
		}
		return t, "--token-file " + o.TokenFile, nil
	case o.TokenEnv != "":
		t, ok := o.Env(o.TokenEnv)
		t = strings.TrimSpace(t)
		if !ok || t == "" {
			return "", "", fmt.Errorf("--token-env %s: the variable is unset or empty", o.TokenEnv)
		}
		return t, "--token-env " + o.TokenEnv, nil
	}
	t, err := o.Platform.IDToken(ctx, o.Audience)
	if err != nil {
		return "", "", fmt.Errorf("get the %s OIDC token for audience %q: %w", o.Platform.Name(), o.Audience, err)
	}
	return t, o.Platform.Name(), nil
}

// UnverifiedClaims decodes a JWT's claims WITHOUT verifying it. The client
// uses it only to fill the statement; the signer verifies the token and
// recomputes the identity.
func UnverifiedClaims(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("token is not a JWT (want three dot-separated parts)")
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, fmt.Errorf("token claims are not base64url: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, fmt.Errorf("token claims are not a JSON object: %w", err)
	}
	if claims == nil {
		return nil, errors.New("token claims are null, not a JSON object")
	}
	return claims, nil
}

type statementChunk struct {
	subjects  []Subject
	statement []byte
}

// buildStatementChunks builds as many statements as needed so that none
// exceeds maxBytes (default 1 MiB, well below the signer's default 4 MiB body
// limit); each covers a contiguous run of subjects.
func buildStatementChunks(subjects []Subject, id Identity, bc *BuildContext, maxBytes int) ([]statementChunk, error) {
	if maxBytes <= 0 {
		maxBytes = defaultStatementSize
	}
	var out []statementChunk
	var build func(s []Subject) error
	build = func(s []Subject) error {
		st, err := BuildStatement(s, id, bc)
		if err != nil {
			return err
		}
		if len(st) <= maxBytes {
			out = append(out, statementChunk{subjects: s, statement: st})
			return nil
		}
		if len(s) == 1 {
			return fmt.Errorf("statement for subject %q is %d bytes, over the %d byte limit", s[0].Name, len(st), maxBytes)
		}
		// Split proportionally to the overshoot, then recurse.
		n := len(s) * maxBytes / len(st)
		if n < 1 {
			n = 1
		}
		if n >= len(s) {
			n = len(s) / 2
		}
		if err := build(s[:n]); err != nil {
			return err
		}
		return build(s[n:])
	}
	if err := build(subjects); err != nil {
		return nil, err
	}
	return out, nil
}

// attestAll gets one envelope per statement chunk. When the signer answers
// 413 (body too large), the chunk is split in two and retried.
func attestAll(ctx context.Context, client *Client, key string, vk *VerificationKey, chunks []statementChunk, id Identity, bc *BuildContext, log *slog.Logger) ([]Envelope, uint64, error) {
	var envs []Envelope
	var seq uint64
	for i := 0; i < len(chunks); i++ {
		c := chunks[i]
		ar, err := client.Attest(ctx, key, c.statement)
		var he *HTTPError
		if errors.As(err, &he) && he.Status == 413 && len(c.subjects) > 1 {
			half := len(c.subjects) / 2
			log.Info("signer refused the statement as too large; splitting", "subjects", len(c.subjects))
			parts, err := buildStatementChunks(c.subjects[:half], id, bc, len(c.statement))
			if err != nil {
				return nil, 0, err
			}
			rest, err := buildStatementChunks(c.subjects[half:], id, bc, len(c.statement))
			if err != nil {
				return nil, 0, err
			}
			repl := append(append(parts, rest...), chunks[i+1:]...)
			chunks = append(chunks[:i], repl...)
			i--
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("statement %d of %d: %w", i+1, len(chunks), err)
		}
		payload, err := VerifyEnvelope(&ar.Envelope, vk.Public)
		if err != nil {
			return nil, 0, fmt.Errorf("signer returned an envelope that does not verify with key %q: %w", key, err)
		}
		if !bytes.Equal(payload, c.statement) {
			return nil, 0, errors.New("signer returned an envelope whose payload differs from the statement sent")
		}
		if ar.Audit.Seq > seq {
			seq = ar.Audit.Seq
		}
		envs = append(envs, ar.Envelope)
	}
	return envs, seq, nil
}
