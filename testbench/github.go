package testbench

import (
	"context"
	"crypto/subtle"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Default build identity of the bench's GitHub Actions job.
const (
	GitHubOwner        = "signet-ci"
	GitHubRepo         = "demo"
	GitHubRepository   = GitHubOwner + "/" + GitHubRepo
	GitHubRepositoryID = "812345678"
	GitHubOwnerID      = "98765432"
	GitHubSHA          = "4f2d0a6c9e1b3d5f7a8c0e2b4d6f8a1c3e5b7d9f"
	GitHubRunID        = "11223344556"
	GitHubServerURL    = "https://github.com"
)

// GitHubIssuer mints tokens like https://token.actions.githubusercontent.com
// and serves the Actions runtime's ID-token request endpoint.
type GitHubIssuer struct {
	*Issuer
	// RequestURL is ACTIONS_ID_TOKEN_REQUEST_URL (already carries a query;
	// clients append "&audience=...").
	RequestURL string
	// RequestToken is ACTIONS_ID_TOKEN_REQUEST_TOKEN, the bearer the endpoint requires.
	RequestToken string

	mu            sync.Mutex
	requestClaims map[string]any
	requests      int
}

// GitHubClaims returns the claims GitHub Actions sets for a push to main of
// signet-ci/demo running .github/workflows/release.yml (without iss/aud/iat/nbf/exp).
// Numbers are JSON strings, as GitHub sends them.
func GitHubClaims() map[string]any {
	wf := GitHubRepository + "/.github/workflows/release.yml@refs/heads/main"
	return map[string]any{
		"jti":                   newUUID(),
		"sub":                   "repo:" + GitHubRepository + ":ref:refs/heads/main",
		"ref":                   "refs/heads/main",
		"ref_type":              "branch",
		"ref_protected":         "true",
		"sha":                   GitHubSHA,
		"repository":            GitHubRepository,
		"repository_id":         GitHubRepositoryID,
		"repository_owner":      GitHubOwner,
		"repository_owner_id":   GitHubOwnerID,
		"repository_visibility": "private",
		"run_id":                GitHubRunID,
		"run_number":            "42",
		"run_attempt":           "1",
		"actor":                 "octocat",
		"actor_id":              "583231",
		"workflow":              "release",
		"workflow_ref":          wf,
		"workflow_sha":          GitHubSHA,
		"job_workflow_ref":      wf,
		"job_workflow_sha":      GitHubSHA,
		"event_name":            "push",
		"head_ref":              "",
		"base_ref":              "",
		"runner_environment":    "github-hosted",
	}
}

// StartGitHubIssuer serves a GitHub Actions-like issuer on a free loopback
// port over TLS. Tokens: RS256, nbf 10 min before iat and exp 5 min after it,
// as in GitHub's published example token. It stops when ctx is done or on Close.
func StartGitHubIssuer(ctx context.Context, ca *CA, opts IssuerOptions) (*GitHubIssuer, error) {
	is, err := startIssuer(ctx, ca, issuerSpec{platform: "github", jwksPath: "/.well-known/jwks",
		lifetime: 5 * time.Minute, nbfBefore: 10 * time.Minute}, opts)
	if err != nil {
		return nil, err
	}
	is.defaults = func(time.Time) map[string]any { return GitHubClaims() }
	g := &GitHubIssuer{Issuer: is, RequestToken: "ghs_" + randomHex(18)}
	g.RequestURL = is.BaseURL + "/_apis/distributedtask/hubs/build/plans/" + newUUID() + "/jobs/" + newUUID() + "/idtoken?api-version=2.0"
	is.mux.HandleFunc("GET /_apis/distributedtask/hubs/build/plans/{plan}/jobs/{job}/idtoken", g.serveIDToken)
	return g, nil
}

// SetRequestClaims sets the claim overrides of tokens handed out by the
// request endpoint (what the "job" is). nil restores the defaults.
func (g *GitHubIssuer) SetRequestClaims(claims map[string]any) {
	g.mu.Lock()
	g.requestClaims = maps.Clone(claims)
	g.mu.Unlock()
}

// TokenRequests counts successful calls of the request endpoint.
func (g *GitHubIssuer) TokenRequests() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests
}

// serveIDToken answers like the Actions runtime: bearer required, optional
// audience parameter, body {"count":N,"value":"<jwt>"}.
func (g *GitHubIssuer) serveIDToken(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "Authorization header is missing"})
		return
	}
	bearer, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(bearer), []byte(g.RequestToken)) != 1 {
		writeJSON(w, http.StatusForbidden, map[string]any{"message": "The user is not authorized to request an OIDC token"})
		return
	}
	g.mu.Lock()
	claims := maps.Clone(g.requestClaims)
	g.requests++
	g.mu.Unlock()
	if claims == nil {
		claims = map[string]any{}
	}
	if aud := r.URL.Query().Get("audience"); aud != "" {
		claims["aud"] = aud
	} else if _, set := claims["aud"]; !set {
		// GitHub's default audience is the URL of the repository owner.
		claims["aud"] = GitHubServerURL + "/" + GitHubOwner
	}
	tok, err := g.Mint(claims)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"message": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(tok), "value": tok})
}

// Env returns the environment a GitHub Actions job step sees for the default
// claims: GITHUB_ACTIONS=true, GITHUB_* and ACTIONS_ID_TOKEN_REQUEST_*, plus
// SSL_CERT_FILE pointing at the bench CA so the runtime endpoint is trusted.
// workspace is GITHUB_WORKSPACE (and where GITHUB_OUTPUT etc. are created by
// the caller if wanted).
func (g *GitHubIssuer) Env(workspace string) map[string]string {
	return map[string]string{
		"CI":                             "true",
		"GITHUB_ACTIONS":                 "true",
		"GITHUB_SERVER_URL":              GitHubServerURL,
		"GITHUB_API_URL":                 "https://api.github.com",
		"GITHUB_REPOSITORY":              GitHubRepository,
		"GITHUB_REPOSITORY_ID":           GitHubRepositoryID,
		"GITHUB_REPOSITORY_OWNER":        GitHubOwner,
		"GITHUB_REPOSITORY_OWNER_ID":     GitHubOwnerID,
		"GITHUB_REF":                     "refs/heads/main",
		"GITHUB_REF_NAME":                "main",
		"GITHUB_REF_TYPE":                "branch",
		"GITHUB_REF_PROTECTED":           "true",
		"GITHUB_SHA":                     GitHubSHA,
		"GITHUB_RUN_ID":                  GitHubRunID,
		"GITHUB_RUN_NUMBER":              "42",
		"GITHUB_RUN_ATTEMPT":             "1",
		"GITHUB_ACTOR":                   "octocat",
		"GITHUB_ACTOR_ID":                "583231",
		"GITHUB_TRIGGERING_ACTOR":        "octocat",
		"GITHUB_WORKFLOW":                "release",
		"GITHUB_WORKFLOW_REF":            GitHubRepository + "/.github/workflows/release.yml@refs/heads/main",
		"GITHUB_WORKFLOW_SHA":            GitHubSHA,
		"GITHUB_EVENT_NAME":              "push",
		"GITHUB_JOB":                     "release",
		"GITHUB_WORKSPACE":               workspace,
		"RUNNER_OS":                      "Linux",
		"RUNNER_ARCH":                    "X64",
		"RUNNER_NAME":                    "GitHub Actions 2",
		"RUNNER_ENVIRONMENT":             "github-hosted",
		"ACTIONS_ID_TOKEN_REQUEST_URL":   g.RequestURL,
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": g.RequestToken,
		"SSL_CERT_FILE":                  g.CAPath,
	}
}
