package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	prov1 "github.com/in-toto/attestation/go/predicates/provenance/v1"
	ita1 "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// In-toto and SLSA type URIs.
const (
	StatementTypeV1      = ita1.StatementTypeUri               // https://in-toto.io/Statement/v1
	StatementTypeV01     = "https://in-toto.io/Statement/v0.1" // cosign attest-blob still writes it
	PredicateSLSAProv1   = "https://slsa.dev/provenance/v1"
	BuildTypeGitHub      = "https://actions.github.io/buildtypes/workflow/v1"
	BuildTypeGitLab      = "https://github.com/signet-ci/signet/buildtypes/gitlab-ci/v1"
	BuildTypeJenkins     = "https://github.com/signet-ci/signet/buildtypes/jenkins/v1"
	GitCommitDigest      = "gitCommit"
	BuildAssertedKey     = "buildAsserted"
	MaxStatementBytes    = 16 << 20 // refuse to parse statements larger than this
	sourceURIPrefix      = "git+"
	internalRunnerEnv    = "runner_environment"
	internalEventName    = "event_name"
	internalPipelineSrc  = "pipeline_source"
	defaultStatementSize = 1 << 20
)

// Subject is one artifact of a statement: its stable name and digests
// (algorithm name as in-toto spells it, e.g. "sha256", to lower-case hex).
type Subject struct {
	Name   string
	Digest map[string]string
}

// platformKeys are the internalParameters keys core reserves for
// token-derived identity.
var platformKeys = []string{PlatformGitHub, PlatformGitLab, PlatformJenkins}

// internalIdentity is what goes into buildDefinition.internalParameters.<platform>.
func internalIdentity(id Identity) map[string]any {
	m := map[string]any{}
	for k, v := range id.ImmutableIDs {
		m[k] = v
	}
	if id.RunnerEnvironment != "" {
		m[internalRunnerEnv] = id.RunnerEnvironment
	}
	if id.BuildTrigger != "" {
		switch id.Platform {
		case PlatformGitHub:
			m[internalEventName] = id.BuildTrigger
		case PlatformGitLab:
			m[internalPipelineSrc] = id.BuildTrigger
		}
	}
	return m
}

func defaultBuildType(platform string) string {
	switch platform {
	case PlatformGitHub:
		return BuildTypeGitHub
	case PlatformGitLab:
		return BuildTypeGitLab
	default:
		return BuildTypeJenkins
	}
}

// sourceURI renders the resolved source dependency URI: git+<repo>@<ref>.
// '%' and '@' in the ref are percent-encoded so the LAST '@' always
// separates repository and ref, even for scp-like repos (git@host:o/r.git).
func sourceURI(repo, ref string) string {
	r := strings.NewReplacer("%", "%25", "@", "%40").Replace(ref)
	return sourceURIPrefix + repo + "@" + r
}

func parseSourceURI(uri string) (repo, ref string, err error) {
	if !strings.HasPrefix(uri, sourceURIPrefix) {
		return "", "", fmt.Errorf("resolvedDependencies[0].uri %q does not start with %q", uri, sourceURIPrefix)
	}
	rest := strings.TrimPrefix(uri, sourceURIPrefix)
	i := strings.LastIndexByte(rest, '@')
	if i < 0 {
		return "", "", fmt.Errorf("resolvedDependencies[0].uri %q lacks the @<ref> part", uri)
	}
	ref, err = url.PathUnescape(rest[i+1:])
	if err != nil {
		return "", "", fmt.Errorf("resolvedDependencies[0].uri %q: bad ref escape: %w", uri, err)
	}
	return rest[:i], ref, nil
}

// BuildStatement returns the canonical JSON of one in-toto Statement v1 with
// an SLSA Provenance v1 predicate for subjects. The identity fields come from
// id (derived from verified token claims); bc supplies the rest. The layout
// is documented in docs/provenance.md.
func BuildStatement(subjects []Subject, id Identity, bc *BuildContext) ([]byte, error) {
	if len(subjects) == 0 {
		return nil, errors.New("build statement: no subjects")
	}
	if bc == nil {
		bc = &BuildContext{Platform: id.Platform}
	}
	if id.Platform == "" {
		return nil, errors.New("build statement: identity has no platform")
	}
	if id.BuilderID == "" {
		return nil, errors.New("build statement: identity has no builder id")
	}

	ext := map[string]any{}
	for k, v := range bc.ExternalParameters {
		ext[k] = v
	}
	if len(bc.Asserted) > 0 {
		if _, clash := ext[BuildAssertedKey]; clash {
			return nil, fmt.Errorf("build statement: externalParameters.%s is reserved for build-asserted facts", BuildAssertedKey)
		}
		a := map[string]any{}
		for k, v := range bc.Asserted {
			a[k] = v
		}
		ext[BuildAssertedKey] = a
	}
	if len(ext) == 0 {
		// SLSA requires non-empty externalParameters.
		ext["platform"] = id.Platform
	}
	internal := map[string]any{}
	for k, v := range bc.InternalParameters {
		internal[k] = v
	}
	for _, k := range platformKeys {
		delete(internal, k) // reserved: only token-derived values live there
	}
	internal[id.Platform] = internalIdentity(id)

	extPB, err := toStruct(ext)
	if err != nil {
		return nil, fmt.Errorf("build statement: externalParameters: %w", err)
	}
	intPB, err := toStruct(internal)
	if err != nil {
		return nil, fmt.Errorf("build statement: internalParameters: %w", err)
	}
	buildType := bc.BuildType
	if buildType == "" {
		buildType = defaultBuildType(id.Platform)
	}
	p := &prov1.Provenance{
		BuildDefinition: &prov1.BuildDefinition{
			BuildType:          buildType,
			ExternalParameters: extPB,
			InternalParameters: intPB,
		},
		RunDetails: &prov1.RunDetails{
			Builder:  &prov1.Builder{Id: id.BuilderID},
			Metadata: &prov1.BuildMetadata{InvocationId: id.Invocation},
		},
	}
	if !bc.StartedOn.IsZero() {
		p.RunDetails.Metadata.StartedOn = timestamppb.New(bc.StartedOn.UTC().Truncate(time.Second))
	}
	if id.SourceRepo != "" || id.SourceRef != "" || id.SourceDigest != "" {
		rd := &ita1.ResourceDescriptor{Uri: sourceURI(id.SourceRepo, id.SourceRef)}
		if id.SourceDigest != "" {
			rd.Digest = map[string]string{GitCommitDigest: id.SourceDigest}
		}
		p.BuildDefinition.ResolvedDependencies = []*ita1.ResourceDescriptor{rd}
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("build statement: SLSA provenance invalid: %w", err)
	}
	predJSON, err := protojson.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("build statement: marshal predicate: %w", err)
	}
	pred := &structpb.Struct{}
	if err := protojson.Unmarshal(predJSON, pred); err != nil {
		return nil, fmt.Errorf("build statement: predicate to struct: %w", err)
	}
	st := &ita1.Statement{
		Type:          StatementTypeV1,
		PredicateType: PredicateSLSAProv1,
		Predicate:     pred,
	}
	seen := make(map[string]bool, len(subjects))
	for _, s := range subjects {
		if seen[s.Name] {
			return nil, fmt.Errorf("build statement: duplicate subject name %q", s.Name)
		}
		seen[s.Name] = true
		st.Subject = append(st.Subject, &ita1.ResourceDescriptor{Name: s.Name, Digest: s.Digest})
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("build statement: in-toto statement invalid: %w", err)
	}
	raw, err := protojson.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("build statement: marshal: %w", err)
	}
	return CanonicalJSON(raw)
}

// toStruct converts a JSON-like Go value to a protobuf Struct by way of JSON,
// so any marshalable map (map[string]string, nested structs) is accepted.
func toStruct(m map[string]any) (*structpb.Struct, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	return s, nil
}

// CanonicalJSON re-encodes JSON with sorted object keys, no insignificant
// whitespace, no HTML escaping and numbers kept as written. Applying it to
// its own output returns identical bytes, which makes statements byte-stable.
func CanonicalJSON(in []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	if dec.More() {
		return nil, errors.New("canonical json: trailing data after the JSON value")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ParsedStatement is a validated in-toto Statement v1 with an SLSA
// Provenance v1 predicate.
type ParsedStatement struct {
	Statement  *ita1.Statement
	Provenance *prov1.Provenance
}

// ParseStatement parses and validates statement JSON defensively: bounded
// size, no unknown fields, in-toto Statement v1 with an SLSA v1 predicate.
func ParseStatement(stmtJSON []byte) (*ParsedStatement, error) {
	if len(stmtJSON) == 0 {
		return nil, errors.New("statement is empty")
	}
	if len(stmtJSON) > MaxStatementBytes {
		return nil, fmt.Errorf("statement is %d bytes, over the %d byte limit", len(stmtJSON), MaxStatementBytes)
	}
	st := &ita1.Statement{}
	if err := protojson.Unmarshal(stmtJSON, st); err != nil {
		return nil, fmt.Errorf("statement is not a valid in-toto statement: %w", err)
	}
	if st.GetType() != StatementTypeV1 && st.GetType() != StatementTypeV01 {
		return nil, fmt.Errorf("statement _type is %q, want %q", st.GetType(), StatementTypeV1)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("statement invalid: %w", err)
	}
	if st.GetPredicateType() != PredicateSLSAProv1 {
		return nil, fmt.Errorf("statement predicateType is %q, want %q", st.GetPredicateType(), PredicateSLSAProv1)
	}
	predJSON, err := protojson.Marshal(st.GetPredicate())
	if err != nil {
		return nil, fmt.Errorf("statement predicate: %w", err)
	}
	p := &prov1.Provenance{}
	if err := protojson.Unmarshal(predJSON, p); err != nil {
		return nil, fmt.Errorf("statement predicate is not SLSA provenance v1: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("statement predicate invalid: %w", err)
	}
	return &ParsedStatement{Statement: st, Provenance: p}, nil
}

// Subjects returns the statement's subjects.
func (ps *ParsedStatement) Subjects() []Subject {
	var out []Subject
	for _, s := range ps.Statement.GetSubject() {
		out = append(out, Subject{Name: s.GetName(), Digest: s.GetDigest()})
	}
	return out
}

// IdentityFromStatement reads the identity fields from their fixed places in
// a statement built by BuildStatement (see docs/provenance.md). Anything
// under externalParameters.buildAsserted is ignored.
func IdentityFromStatement(stmtJSON []byte) (Identity, error) {
	ps, err := ParseStatement(stmtJSON)
	if err != nil {
		return Identity{}, err
	}
	return ps.Identity()
}

// Identity reads the identity fields of a parsed statement. Only Statement
// v1 (what BuildStatement writes) carries them.
func (ps *ParsedStatement) Identity() (Identity, error) {
	if t := ps.Statement.GetType(); t != StatementTypeV1 {
		return Identity{}, fmt.Errorf("statement _type is %q: identity fields are only read from %q statements", t, StatementTypeV1)
	}
	p := ps.Provenance
	var id Identity
	id.BuilderID = p.GetRunDetails().GetBuilder().GetId()
	id.Invocation = p.GetRunDetails().GetMetadata().GetInvocationId()

	internal := p.GetBuildDefinition().GetInternalParameters().GetFields()
	var found []string
	for _, k := range platformKeys {
		if _, ok := internal[k]; ok {
			found = append(found, k)
		}
	}
	if len(found) != 1 {
		return Identity{}, fmt.Errorf("statement internalParameters must hold exactly one of %v, found %v", platformKeys, found)
	}
	id.Platform = found[0]
	pv := internal[id.Platform].GetStructValue()
	if pv == nil {
		return Identity{}, fmt.Errorf("statement internalParameters.%s is not an object", id.Platform)
	}
	keys := make([]string, 0, len(pv.GetFields()))
	for k := range pv.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := pv.GetFields()[k]
		sv, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return Identity{}, fmt.Errorf("statement internalParameters.%s.%s is not a string", id.Platform, k)
		}
		switch {
		case k == internalRunnerEnv:
			id.RunnerEnvironment = sv.StringValue
		case k == internalEventName && id.Platform == PlatformGitHub,
			k == internalPipelineSrc && id.Platform == PlatformGitLab:
			id.BuildTrigger = sv.StringValue
		case isImmutableIDKey(id.Platform, k):
			if id.ImmutableIDs == nil {
				id.ImmutableIDs = map[string]string{}
			}
			id.ImmutableIDs[k] = sv.StringValue
		default:
			return Identity{}, fmt.Errorf("statement internalParameters.%s.%s is not a token-derived field", id.Platform, k)
		}
	}

	deps := p.GetBuildDefinition().GetResolvedDependencies()
	if len(deps) > 0 {
		repo, ref, err := parseSourceURI(deps[0].GetUri())
		if err != nil {
			return Identity{}, fmt.Errorf("statement: %w", err)
		}
		id.SourceRepo, id.SourceRef = repo, ref
		id.SourceDigest = deps[0].GetDigest()[GitCommitDigest]
	}
	return id, nil
}

func isImmutableIDKey(platform, k string) bool {
	switch platform {
	case PlatformGitHub:
		return k == "repository_id" || k == "repository_owner_id"
	case PlatformGitLab:
		return k == "project_id" || k == "namespace_id"
	}
	return false
}
