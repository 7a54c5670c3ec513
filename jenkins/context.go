package jenkins

import (
	"log/slog"
	"net/url"
	"strings"

	"github.com/signet-ci/signet/core"
)

// fact is a Jenkins variable the adapter reports: the claim that vouches for
// it when the credential's claim templates set it (docs/jenkins.md), and
// where it goes in the SLSA parameters when it is vouched for.
type fact struct {
	env, claim string
	param, key string // param is "external", "internal" or "source"
}

// facts in statement order. JOB_URL and BUILD_NUMBER are vouched for by the
// plugin's defaults (sub = ${JOB_URL}, build_number = ${BUILD_NUMBER}); the
// git ones by the templates we recommend. JENKINS_URL, JOB_NAME and
// BUILD_URL are derived in describe; NODE_NAME is always build-asserted.
var facts = []fact{
	{env: "JENKINS_URL", param: "internal", key: "jenkins_url"},
	{env: "JOB_URL", claim: "sub", param: "external", key: "job"},
	{env: "BUILD_URL", param: "internal", key: "build_url"},
	{env: "JOB_NAME", param: "external", key: "job_name"},
	{env: "BUILD_NUMBER", claim: "build_number", param: "internal", key: "build_number"},
	{env: "NODE_NAME"},
	{env: "GIT_URL", claim: "git_url", param: "source", key: "repository"},
	{env: "GIT_COMMIT", claim: "git_commit", param: "source", key: "commit"},
	{env: "GIT_BRANCH", claim: "branch", param: "source", key: "branch"},
	{env: "BRANCH_NAME", claim: "branch", param: "source", key: "branch"},
	{env: "CHANGE_ID", claim: "change_id", param: "external", key: "change_id"},
	{env: "TAG_NAME", claim: "tag_name", param: "external", key: "tag"},
}

// claimString renders a claim as text (core.ClaimString); ok is false when
// the claim is absent or not a scalar.
func claimString(claims map[string]any, name string) (string, bool) {
	s, err := core.ClaimString(claims[name])
	return s, err == nil
}

// describe builds the BuildContext. claims may be nil (no token visible):
// then every fact is build-asserted.
func describe(get func(string) string, claims map[string]any, log *slog.Logger) *core.BuildContext {
	jenkinsURL := get("JENKINS_URL")
	vouched := map[string]bool{}
	for _, f := range facts {
		env, claim := f.env, f.claim
		v := get(env)
		if claim == "" || v == "" {
			continue
		}
		c, ok := claimString(claims, claim)
		switch {
		case !ok:
		case c == v:
			vouched[env] = true
		case strings.Contains(c, "${"):
			log.Warn("a claim template was not expanded when the token was minted; bind the credential after checkout so the variable is set",
				"claim", claim, "value", c, "env", env)
		case env == "GIT_BRANCH" || env == "BRANCH_NAME" || env == "JOB_URL":
			// branch vouches for one of the two branch variables, the other
			// one is asserted; a sub template other than ${JOB_URL} leaves
			// JOB_URL asserted.
		default:
			log.Warn("the build environment contradicts the token; the token's value is the one signed as identity",
				"env", env, "env_value", v, "claim", claim, "claim_value", c)
			vouched[env] = false // contradicted: not reported at all
		}
	}
	jobURL, number := get("JOB_URL"), get("BUILD_NUMBER")
	if vouched["JOB_URL"] && vouched["BUILD_NUMBER"] && get("BUILD_URL") == jobURL+number+"/" {
		vouched["BUILD_URL"] = true
	}
	if vouched["JOB_URL"] && get("JOB_NAME") != "" && jobURLFor(jenkinsURL, get("JOB_NAME")) == jobURL {
		vouched["JOB_NAME"] = true
	}
	if iss, ok := claimString(claims, "iss"); ok && jenkinsURL != "" {
		root := strings.TrimRight(jenkinsURL, "/") + "/oidc"
		if iss == root || strings.HasPrefix(iss, root+"/job/") {
			vouched["JENKINS_URL"] = true
		}
	}

	params := map[string]map[string]any{"external": {}, "internal": {}, "source": {}}
	asserted := map[string]string{}
	for _, f := range facts {
		v := get(f.env)
		if v == "" {
			continue
		}
		ok, known := vouched[f.env]
		if known && !ok {
			continue // contradicted by the token
		}
		if !ok {
			asserted[f.env] = v
			continue
		}
		params[f.param][f.key] = v
	}
	ext, internal, source := params["external"], params["internal"], params["source"]
	if len(source) > 0 {
		ext["source"] = source
	}
	bc := &core.BuildContext{
		Platform:           platformName,
		BuildType:          buildType,
		ServerURL:          strings.TrimRight(jenkinsURL, "/"),
		ExternalParameters: ext,
		InternalParameters: internal,
	}
	if len(asserted) > 0 {
		bc.Asserted = asserted
	}
	return bc
}

// jobURLFor is the URL Jenkins gives the job with full name fullName
// ("folder/sub/job"): ${JENKINS_URL}job/folder/job/sub/job/job/.
func jobURLFor(jenkinsURL, fullName string) string {
	segs := strings.Split(fullName, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.TrimRight(jenkinsURL, "/") + "/job/" + strings.Join(segs, "/job/") + "/"
}
