package core

import (
	"context"
	"encoding/json"
	"time"
)

// RawJSON is raw JSON bytes carried unchanged.
type RawJSON = json.RawMessage

// Envelope is a DSSE envelope (https://github.com/secure-systems-lab/dsse).
// Payload is standard base64 of the payload bytes; Sig is standard base64.
type Envelope struct {
	PayloadType string              `json:"payloadType"`
	Payload     string              `json:"payload"`
	Signatures  []EnvelopeSignature `json:"signatures"`
}

// EnvelopeSignature is one signature of a DSSE envelope.
type EnvelopeSignature struct {
	KeyID string `json:"keyid,omitempty"`
	Sig   string `json:"sig"`
}

// Platform is the one small interface each CI adapter (actions/, gitlab/,
// jenkins/) implements. Adapters never hash, sign or build statements: core does.
type Platform interface {
	// Name is "github", "gitlab" or "jenkins".
	Name() string
	// Detect reports whether the process runs on this platform (from env).
	Detect(env Env) bool
	// IDToken obtains the platform's OIDC token whose aud is audience.
	IDToken(ctx context.Context, audience string) (string, error)
	// BuildContext describes the build from the platform's environment.
	// claims are the (unverified) claims of the token this run signs with,
	// whatever its source (IDToken, --token-env, --token-file): core decodes
	// it once and hands the claims to the adapter, which must not look for
	// the token itself. The identity fields never come from here.
	BuildContext(ctx context.Context, claims map[string]any) (*BuildContext, error)
	// Publish hands the results to the platform (outputs, summary, uploads).
	// It is called after all outputs are written; it may be a no-op.
	Publish(ctx context.Context, res *Result) error
}

// Env is the environment lookup used by adapters (os.LookupEnv in production,
// a map in tests).
type Env func(key string) (string, bool)

// BuildContext is what an adapter knows about the build. The identity fields
// of the provenance are NOT taken from here: they come from the token claims
// through IdentityFromClaims. BuildContext supplies the platform-specific rest.
type BuildContext struct {
	Platform  string // github | gitlab | jenkins
	BuildType string // SLSA buildType URI
	// ServerURL is the platform's web URL (GITHUB_SERVER_URL, CI_SERVER_URL,
	// JENKINS_URL); used as {server} in the identity mapping.
	ServerURL string
	// ExternalParameters and InternalParameters go into the SLSA
	// buildDefinition as they are (platform-specific shapes).
	ExternalParameters map[string]any
	InternalParameters map[string]any
	// Asserted holds facts the build states but the token does not vouch
	// for; core puts them in the statement plainly marked as build-asserted.
	Asserted  map[string]string
	StartedOn time.Time
}

// Result is what a `signet sign` run produced; adapters publish it.
type Result struct {
	Key            KeyInfo
	Artifacts      []ArtifactResult
	ProvenancePath string // empty when provenance was off
	PublicKeyPath  string
	AuditSeq       uint64 // last audit sequence number the signer returned
}

// ArtifactResult is one signed artifact.
type ArtifactResult struct {
	Name          string // subject name (relative to the base dir)
	Path          string // local path of the artifact
	SHA256        string
	SignaturePath string
}
