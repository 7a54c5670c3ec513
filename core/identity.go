package core

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Identity holds the fields of DESIGN.md's "Identity fields" table. They are
// derived from VERIFIED token claims only. The client uses IdentityFromClaims to
// fill the statement; the signer uses the same function, then
// IdentityFromStatement on the statement it received, and refuses any
// difference (Identity.Diff names the first differing field).
//
// The mapping follows Fulcio's OIDC-to-certificate-extension mapping
// (SourceRepositoryURI, SourceRepositoryDigest, SourceRepositoryRef,
// BuildSignerURI, RunInvocationURI, RunnerEnvironment, BuildTrigger,
// SourceRepositoryIdentifier, SourceRepositoryOwnerIdentifier).
type Identity struct {
	Platform          string `json:"platform"`
	SourceRepo        string `json:"source_repo,omitempty"`
	SourceDigest      string `json:"source_digest,omitempty"` // git commit
	SourceRef         string `json:"source_ref,omitempty"`
	BuilderID         string `json:"builder_id"`
	Invocation        string `json:"invocation,omitempty"`
	RunnerEnvironment string `json:"runner_environment,omitempty"`
	// BuildTrigger is what started the run (GitHub event_name, GitLab
	// pipeline_source), as Fulcio's BuildTrigger extension.
	BuildTrigger string            `json:"build_trigger,omitempty"`
	ImmutableIDs map[string]string `json:"immutable_ids,omitempty"` // repository_id, ... / project_id, ...
}

// Platform names used throughout Signet.
const (
	PlatformGitHub  = "github"
	PlatformGitLab  = "gitlab"
	PlatformJenkins = "jenkins"
)

// DefaultGitHubServer is {server} for github.com.
const DefaultGitHubServer = "https://github.com"

// IdentityFromClaims maps verified token claims to the identity fields for the
// platform ("github", "gitlab", "jenkins"). serverURL is {server} of the table
// (e.g. https://github.com); for GitLab an empty serverURL means the token's iss.
// It fails when a claim the platform always sets is missing or of the wrong type.
func IdentityFromClaims(platform, serverURL string, claims map[string]any) (Identity, error) {
	return identityFromClaims(platform, serverURL, claims)
}

func identityFromClaims(platform, serverURL string, claims map[string]any) (Identity, error) {
	c := claimReader{claims: claims, platform: platform}
	var id Identity
	switch platform {
	case PlatformGitHub:
		server := strings.TrimRight(serverURL, "/")
		if server == "" {
			server = DefaultGitHubServer
		}
		repo := c.required("repository")
		id = Identity{
			Platform:          PlatformGitHub,
			SourceRepo:        server + "/" + repo,
			SourceDigest:      c.required("sha"),
			SourceRef:         c.required("ref"),
			BuilderID:         server + "/" + c.required("job_workflow_ref"),
			Invocation:        fmt.Sprintf("%s/%s/actions/runs/%s/attempts/%s", server, repo, c.required("run_id"), c.required("run_attempt")),
			RunnerEnvironment: c.optional("runner_environment"),
			BuildTrigger:      c.optional("event_name"),
			ImmutableIDs: map[string]string{
				"repository_id":       c.required("repository_id"),
				"repository_owner_id": c.required("repository_owner_id"),
			},
		}
	case PlatformGitLab:
		server := strings.TrimRight(serverURL, "/")
		if server == "" {
			server = strings.TrimRight(c.required("iss"), "/")
		}
		project := c.required("project_path")
		jobProject := project
		if jp := c.optional("job_project_path"); jp != "" {
			jobProject = jp
		}
		ref := c.required("ref")
		var fullRef string
		switch rt := c.required("ref_type"); rt {
		case "branch":
			fullRef = "refs/heads/" + ref
		case "tag":
			fullRef = "refs/tags/" + ref
		default:
			if c.err == nil {
				c.err = fmt.Errorf("gitlab token claim ref_type is %q: want \"branch\" or \"tag\"", rt)
			}
		}
		id = Identity{
			Platform:     PlatformGitLab,
			SourceRepo:   server + "/" + project,
			SourceDigest: c.required("sha"),
			SourceRef:    fullRef,
			BuilderID:    "https://" + c.required("ci_config_ref_uri"),
			// In a fork's merge-request pipeline project_path names the fork (the
			// source) while the job runs in job_project_path: the job URL must use it.
			Invocation:        fmt.Sprintf("%s/%s/-/jobs/%s", server, jobProject, c.required("job_id")),
			RunnerEnvironment: c.optional("runner_environment"),
			BuildTrigger:      c.optional("pipeline_source"),
			ImmutableIDs: map[string]string{
				"project_id":   c.required("project_id"),
				"namespace_id": c.required("namespace_id"),
			},
		}
	case PlatformJenkins:
		sub := c.required("sub")
		id = Identity{
			Platform:     PlatformJenkins,
			SourceRepo:   c.optional("git_url"),
			SourceDigest: c.optional("git_commit"),
			SourceRef:    c.optional("branch"),
			BuilderID:    sub,
		}
		if bn := c.optional("build_number"); bn != "" && sub != "" {
			jobURL := sub
			if !strings.HasSuffix(jobURL, "/") {
				jobURL += "/"
			}
			id.Invocation = jobURL + bn + "/"
		}
	default:
		return Identity{}, fmt.Errorf("unknown platform %q: want github, gitlab or jenkins", platform)
	}
	if c.err != nil {
		return Identity{}, c.err
	}
	return id, nil
}

// claimReader reads string-ish claims, remembering the first error.
type claimReader struct {
	claims   map[string]any
	platform string
	err      error
}

// required is optional plus an error when the claim is missing, null or empty.
func (c *claimReader) required(name string) string {
	s := c.optional(name)
	if s == "" && c.err == nil {
		if v, ok := c.claims[name]; !ok || v == nil {
			c.err = fmt.Errorf("%s token lacks required claim %q", c.platform, name)
		} else {
			c.err = fmt.Errorf("%s token claim %q is empty", c.platform, name)
		}
	}
	return s
}

// optional returns the claim as a string ("" when missing or null),
// remembering an error when it is not a scalar.
func (c *claimReader) optional(name string) string {
	v, ok := c.claims[name]
	if !ok || v == nil {
		return ""
	}
	s, err := ClaimString(v)
	if err != nil {
		if c.err == nil {
			c.err = fmt.Errorf("%s token claim %q: %w", c.platform, name, err)
		}
		return ""
	}
	return s
}

// ClaimString renders a scalar claim as a string: strings as they are,
// integral numbers in decimal (some issuers, e.g. Jenkins build_number, send
// numbers), booleans as true/false. Anything else (nil, objects, arrays,
// fractional numbers) is an error. The identity mapping, the adapters and the
// signer's policy all compare claims through this one function.
func ClaimString(v any) (string, error) {
	switch t := v.(type) {
	case string:
		return t, nil
	case json.Number:
		return t.String(), nil
	case float64:
		if t != math.Trunc(t) || math.IsInf(t, 0) || math.Abs(t) > 1<<53 {
			return "", fmt.Errorf("number %v is not an integer", t)
		}
		return strconv.FormatInt(int64(t), 10), nil
	case int:
		return strconv.Itoa(t), nil
	case int64:
		return strconv.FormatInt(t, 10), nil
	case bool:
		return strconv.FormatBool(t), nil
	default:
		return "", fmt.Errorf("has type %T, want a string", v)
	}
}

// Diff returns nil when id and other are equal, otherwise an error naming the
// first differing field. id is the identity from the token, other the one
// found in the statement.
func (id Identity) Diff(other Identity) error {
	fields := []struct{ name, tok, stmt string }{
		{"platform", id.Platform, other.Platform},
		{"source_repo", id.SourceRepo, other.SourceRepo},
		{"source_digest", id.SourceDigest, other.SourceDigest},
		{"source_ref", id.SourceRef, other.SourceRef},
		{"builder_id", id.BuilderID, other.BuilderID},
		{"invocation", id.Invocation, other.Invocation},
		{"runner_environment", id.RunnerEnvironment, other.RunnerEnvironment},
		{"build_trigger", id.BuildTrigger, other.BuildTrigger},
	}
	for _, f := range fields {
		if f.tok != f.stmt {
			return fmt.Errorf("%s: token says %q, statement says %q", f.name, f.tok, f.stmt)
		}
	}
	for _, k := range sortedKeys(id.ImmutableIDs, other.ImmutableIDs) {
		a, aok := id.ImmutableIDs[k]
		b, bok := other.ImmutableIDs[k]
		switch {
		case !aok:
			return fmt.Errorf("%s: token has none, statement says %q", k, b)
		case !bok:
			return fmt.Errorf("%s: token says %q, statement has none", k, a)
		case a != b:
			return fmt.Errorf("%s: token says %q, statement says %q", k, a, b)
		}
	}
	return nil
}

func sortedKeys(ms ...map[string]string) []string {
	seen := map[string]bool{}
	var keys []string
	for _, m := range ms {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}
