package core

// Identity holds the fields of DESIGN.md's "Identity fields" table. They are
// derived from VERIFIED token claims only. The client uses IdentityFromClaims to
// fill the statement; the signer uses the same function, then
// IdentityFromStatement on the statement it received, and refuses any
// difference (Identity.Diff names the first differing field).
type Identity struct {
	Platform          string            `json:"platform"`
	SourceRepo        string            `json:"source_repo,omitempty"`
	SourceDigest      string            `json:"source_digest,omitempty"` // git commit
	SourceRef         string            `json:"source_ref,omitempty"`
	BuilderID         string            `json:"builder_id"`
	Invocation        string            `json:"invocation,omitempty"`
	RunnerEnvironment string            `json:"runner_environment,omitempty"`
	ImmutableIDs      map[string]string `json:"immutable_ids,omitempty"` // repository_id, ... / project_id, ...
}

// IdentityFromClaims maps verified token claims to the identity fields for the
// platform ("github", "gitlab", "jenkins"). serverURL is {server} of the table
// (e.g. https://github.com); for GitLab an empty serverURL means the token's iss.
// It fails when a claim the platform always sets is missing or of the wrong type.
func IdentityFromClaims(platform, serverURL string, claims map[string]any) (Identity, error) {
	return identityFromClaims(platform, serverURL, claims)
}
