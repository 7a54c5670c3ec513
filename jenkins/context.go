package jenkins

import (
	"encoding/json"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"github.com/signet-ci/signet/core"
)

// envFacts are the Jenkins variables the adapter reports, in statement order.
func envFacts() []string {
	return []string{"JENKINS_URL", "JOB_URL", "BUILD_URL", "JOB_NAME", "BUILD_NUMBER", "NODE_NAME",
		"GIT_URL", "GIT_COMMIT", "GIT_BRANCH", "BRANCH_NAME", "CHANGE_ID", "TAG_NAME",
	}
}

// claimFor names the claim that vouches for an environment variable when
// the credential's claim templates set it (docs/jenkins.md). JOB_URL and
// BUILD_NUMBER are the plugin's defaults (sub = ${JOB_URL},
// build_number = ${BUILD_NUMBER}); the git ones are the templates we
// recommend. JENKINS_URL, JOB_NAME and BUILD_URL are derived below.
func claimFor() map[string]string {
	return map[string]string{
		"JOB_URL":      "sub",
		"BUILD_NUMBER": "build_number",
		"GIT_URL":      "git_url",
		"GIT_COMMIT":   "git_commit",
		"GIT_BRANCH":   "branch",
		"BRANCH_NAME":  "branch",
		"CHANGE_ID":    "change_id",
		"TAG_NAME":     "tag_name",
	}
}

// claimString renders a claim as text (strings as they are, numbers in
// their JSON form); ok is false when the claim is absent or not a scalar.
func claimString(claims map[string]any, name string) (string, bool) {
	switch v := claims[name].(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	default:
		return "", false
	}
}

// describe builds the BuildContext. claims may be nil (no token visible):
// then every fact is build-asserted.
func describe(get func(string) string, claims map[string]any, log *slog.Logger) *core.BuildContext {
	jenkinsURL := get("JENKINS_URL")
	vouched := map[string]bool{}
	for env, claim := range claimFor() {
		v := get(env)
		if v == "" {
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

	ext := map[string]any{}
	internal := map[string]any{}
	asserted := map[string]string{}
	source := map[string]any{}
	for _, env := range envFacts() {
		v := get(env)
		if v == "" {
			continue
		}
		ok, known := vouched[env]
		if known && !ok {
			continue // contradicted by the token
		}
		if !ok {
			asserted[env] = v
			continue
		}
		switch env {
		case "JENKINS_URL":
			internal["jenkins_url"] = v
		case "JOB_URL":
			ext["job"] = v
		case "JOB_NAME":
			ext["job_name"] = v
		case "BUILD_URL":
			internal["build_url"] = v
		case "BUILD_NUMBER":
			internal["build_number"] = v
		case "GIT_URL":
			source["repository"] = v
		case "GIT_COMMIT":
			source["commit"] = v
		case "GIT_BRANCH", "BRANCH_NAME":
			source["branch"] = v
		case "CHANGE_ID":
			ext["change_id"] = v
		case "TAG_NAME":
			ext["tag"] = v
		}
	}
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
