package core

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Names of verification checks; every VerifyError carries one.
const (
	CheckKey               = "key"
	CheckArtifact          = "artifact"
	CheckSignature         = "signature"
	CheckProvenanceFormat  = "provenance-format"
	CheckProvenanceSig     = "provenance-signature"
	CheckStatement         = "provenance-statement"
	CheckSubject           = "subject"
	CheckSubjectDigest     = "subject-digest"
	CheckSourceRepo        = "source-repo"
	CheckRef               = "ref"
	CheckBuilderID         = "builder-id"
	CheckRunnerEnvironment = "runner-environment"
)

// VerifyError names the check that failed.
type VerifyError struct {
	Check    string
	Artifact string
	Err      error
}

func (e *VerifyError) Error() string {
	if e.Artifact != "" {
		return fmt.Sprintf("%s: check %s failed: %v", e.Artifact, e.Check, e.Err)
	}
	return fmt.Sprintf("check %s failed: %v", e.Check, e.Err)
}

func (e *VerifyError) Unwrap() error { return e.Err }

func verr(check, artifact string, format string, a ...any) *VerifyError {
	return &VerifyError{Check: check, Artifact: artifact, Err: fmt.Errorf(format, a...)}
}

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// KeyPEM is a PUBLIC KEY PEM or a certificate chain PEM (leaf first).
	KeyPEM []byte
	// Artifacts are the files to verify.
	Artifacts []string
	// SignaturePath is the .sig of the single artifact; with several
	// artifacts (or empty) each ARTIFACT.sig is used when it exists.
	SignaturePath string
	// RequireSignature fails when an artifact has no .sig (default: a
	// missing .sig fails unless ProvenancePath is set).
	RequireSignature bool
	// ProvenancePath is a DSSE JSON-lines file (or one cosign envelope).
	ProvenancePath string
	// Expectations on the provenance identity (empty = not checked).
	SourceRepo        string
	RefGlob           string // path.Match glob, e.g. refs/tags/v*
	BuilderID         string
	RunnerEnvironment string
}

// VerifiedArtifact reports what was checked for one artifact.
type VerifiedArtifact struct {
	Path     string
	SHA256   string
	Checks   []string
	Identity *Identity // from the provenance, when checked
}

// Verify checks each artifact against its .sig and/or the provenance. The
// first failure is returned as a *VerifyError naming its check.
func Verify(ctx context.Context, o VerifyOptions) ([]VerifiedArtifact, error) {
	if len(o.Artifacts) == 0 {
		return nil, usagef("no artifacts to verify")
	}
	if len(o.KeyPEM) == 0 {
		return nil, usagef("no public key: pass --public-key PEM")
	}
	if o.SignaturePath != "" && len(o.Artifacts) > 1 {
		return nil, usagef("--signature names one .sig file but %d artifacts were given", len(o.Artifacts))
	}
	expectations := o.SourceRepo != "" || o.RefGlob != "" || o.BuilderID != "" || o.RunnerEnvironment != ""
	if expectations && o.ProvenancePath == "" {
		return nil, usagef("--source-repo, --ref, --builder-id and --runner-environment check the provenance: pass --provenance FILE")
	}
	if o.RefGlob != "" {
		if _, err := path.Match(o.RefGlob, ""); err != nil {
			return nil, usagef("--ref %q is not a valid glob: %v", o.RefGlob, err)
		}
	}
	vk, err := ParseVerificationKey(o.KeyPEM)
	if err != nil {
		return nil, verr(CheckKey, "", "%v", err)
	}

	var envs []ParsedEnvelope
	var stmts []*ParsedStatement
	if o.ProvenancePath != "" {
		envs, err = ReadEnvelopes(o.ProvenancePath)
		if err != nil {
			return nil, verr(CheckProvenanceFormat, "", "%v", err)
		}
		for _, e := range envs {
			if e.Envelope.PayloadType != PayloadTypeInToto {
				return nil, verr(CheckProvenanceFormat, "", "envelope on line %d has payloadType %q, want %q", e.Line, e.Envelope.PayloadType, PayloadTypeInToto)
			}
			if _, err := VerifyEnvelope(e.Envelope, vk.Public); err != nil {
				return nil, verr(CheckProvenanceSig, "", "envelope on line %d: the DSSE signature does not verify with the given key (payload or signature changed, or another key signed it): %v", e.Line, err)
			}
			ps, err := ParseStatement(e.Payload)
			if err != nil {
				return nil, verr(CheckStatement, "", "envelope on line %d: %v", e.Line, err)
			}
			stmts = append(stmts, ps)
		}
	}

	var out []VerifiedArtifact
	for _, a := range o.Artifacts {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		digest, _, err := HashFile(ctx, a, SHA256)
		if err != nil {
			return out, verr(CheckArtifact, a, "%v", err)
		}
		va := VerifiedArtifact{Path: a, SHA256: hex.EncodeToString(digest)}

		sigPath := o.SignaturePath
		if sigPath == "" {
			sigPath = a + ".sig"
		}
		// The signature and the provenance are both evaluated first, so the
		// failure can say what changed: the artifact (both disagree), the
		// .sig (provenance vouches for the artifact), or the provenance
		// subject (the .sig vouches for the artifact).
		var sigErr error
		haveSig := false
		if _, statErr := os.Stat(sigPath); statErr == nil {
			sig, err := ReadSigFile(sigPath)
			if err != nil {
				return out, verr(CheckSignature, a, "%v", err)
			}
			haveSig = true
			sigErr = VerifyDigest(vk.Public, digest, sig)
		} else if o.SignaturePath != "" || o.RequireSignature || o.ProvenancePath == "" {
			return out, verr(CheckSignature, a, "signature file %s: %v", sigPath, statErr)
		}
		var ps *ParsedStatement
		var subjErr error
		if o.ProvenancePath != "" {
			ps, subjErr = findSubject(stmts, a, va.SHA256)
		}
		switch {
		case haveSig && sigErr != nil && o.ProvenancePath != "" && subjErr != nil:
			return out, verr(CheckArtifact, a, "the artifact changed after signing: its SHA-256 %s matches neither %s nor the provenance (%v)", va.SHA256, sigPath, errors.Unwrap(subjErr))
		case haveSig && sigErr != nil && o.ProvenancePath != "":
			return out, verr(CheckSignature, a, "%s does not verify with the given key although the provenance vouches for the artifact's SHA-256 %s: the signature file is corrupted or made by another key: %v", sigPath, va.SHA256, sigErr)
		case haveSig && sigErr != nil:
			return out, verr(CheckSignature, a, "%s does not verify the artifact's SHA-256 %s with the given key (artifact or signature changed, or another key signed it): %v", sigPath, va.SHA256, sigErr)
		case subjErr != nil && haveSig:
			var ve *VerifyError
			if errors.As(subjErr, &ve) {
				ve.Err = fmt.Errorf("%w; the .sig verifies the artifact, so the provenance was made for different content", ve.Err)
			}
			return out, subjErr
		case subjErr != nil:
			return out, subjErr
		}
		if haveSig {
			va.Checks = append(va.Checks, CheckSignature)
		}

		if o.ProvenancePath != "" {
			va.Checks = append(va.Checks, CheckProvenanceSig, CheckSubjectDigest)
			if expectations {
				id, err := ps.Identity()
				if err != nil {
					return out, verr(CheckStatement, a, "identity fields: %v", err)
				}
				va.Identity = &id
				if o.SourceRepo != "" {
					if id.SourceRepo != o.SourceRepo {
						return out, verr(CheckSourceRepo, a, "provenance source repository is %q, expected %q", id.SourceRepo, o.SourceRepo)
					}
					va.Checks = append(va.Checks, CheckSourceRepo)
				}
				if o.RefGlob != "" {
					if ok, _ := path.Match(o.RefGlob, id.SourceRef); !ok || id.SourceRef == "" {
						return out, verr(CheckRef, a, "provenance source ref %q does not match %q", id.SourceRef, o.RefGlob)
					}
					va.Checks = append(va.Checks, CheckRef)
				}
				if o.BuilderID != "" {
					if id.BuilderID != o.BuilderID {
						return out, verr(CheckBuilderID, a, "provenance builder id is %q, expected %q", id.BuilderID, o.BuilderID)
					}
					va.Checks = append(va.Checks, CheckBuilderID)
				}
				if o.RunnerEnvironment != "" {
					if id.RunnerEnvironment != o.RunnerEnvironment {
						return out, verr(CheckRunnerEnvironment, a, "provenance runner environment is %q, expected %q", id.RunnerEnvironment, o.RunnerEnvironment)
					}
					va.Checks = append(va.Checks, CheckRunnerEnvironment)
				}
			}
		}
		if len(va.Checks) == 0 {
			return out, errors.New("nothing verified")
		}
		out = append(out, va)
	}
	return out, nil
}

// findSubject finds the statement listing the artifact's SHA-256. When no
// subject carries that digest but one carries the artifact's name, the error
// says the subject digest differs.
func findSubject(stmts []*ParsedStatement, artifact, hexDigest string) (*ParsedStatement, error) {
	base := filepath.Base(artifact)
	slash := filepath.ToSlash(artifact)
	var nameMatch *Subject
	for _, ps := range stmts {
		for _, s := range ps.Subjects() {
			if strings.EqualFold(s.Digest[string(SHA256)], hexDigest) {
				return ps, nil
			}
			if nameMatch == nil && (s.Name == slash || s.Name == base || strings.HasSuffix(slash, "/"+s.Name)) {
				sc := s
				nameMatch = &sc
			}
		}
	}
	if nameMatch != nil {
		return nil, verr(CheckSubjectDigest, artifact, "provenance subject %q has sha256 %s, the artifact has %s (artifact or provenance changed)", nameMatch.Name, nameMatch.Digest[string(SHA256)], hexDigest)
	}
	return nil, verr(CheckSubject, artifact, "no provenance subject has the artifact's sha256 %s", hexDigest)
}
