package gitlab

import (
	"context"
	"net/url"
	"strings"
	"time"

	"github.com/signet-ci/signet/core"
)

// BuildContext describes the job for the SLSA buildDefinition (buildType
// BuildType). The identity fields of the statement come from the verified
// token in core; here the adapter supplies the GitLab-specific parameters.
//
// Parameters are taken from the claims of the ID token core signs with (core
// decodes it once, whatever its source, and passes the claims), so they say what
// GitLab vouched for; for merge-request pipelines from forks that means
// project_* names the fork the code came from and job_project_* the project
// the job ran in. Without a readable token the same fields come from the CI_*
// variables and Asserted["parameters_source"] says so. Facts only the
// environment knows (job name, URLs, runner description, merge request) are
// always in Asserted.
func (p *Platform) BuildContext(ctx context.Context, claims map[string]any) (*core.BuildContext, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	server := strings.TrimRight(p.get("CI_SERVER_URL"), "/")
	if server == "" {
		return nil, errorf("CI_SERVER_URL is not set: signet --platform gitlab must run inside a GitLab CI job (GitLab sets CI_SERVER_URL and the other CI_* variables)")
	}
	if u, err := url.Parse(server); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, errorf("CI_SERVER_URL=%q is not an absolute URL such as https://gitlab.example.com", server)
	}

	asserted := map[string]string{}
	var ext, internal map[string]any
	if claims != nil {
		ext, internal = p.paramsFromClaims(server, claims)
		asserted["parameters_source"] = "id_token"
	} else {
		ext, internal = p.paramsFromEnv(server)
		asserted["parameters_source"] = "environment"
	}
	for key, env := range map[string]string{
		"job_name":                          "CI_JOB_NAME",
		"job_stage":                         "CI_JOB_STAGE",
		"job_url":                           "CI_JOB_URL",
		"pipeline_url":                      "CI_PIPELINE_URL",
		"runner_description":                "CI_RUNNER_DESCRIPTION",
		"runner_version":                    "CI_RUNNER_VERSION",
		"server_version":                    "CI_SERVER_VERSION",
		"commit_tag":                        "CI_COMMIT_TAG",
		"merge_request_iid":                 "CI_MERGE_REQUEST_IID",
		"merge_request_project_path":        "CI_MERGE_REQUEST_PROJECT_PATH",
		"merge_request_source_project_path": "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH",
		"merge_request_source_branch_name":  "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
		"merge_request_target_branch_name":  "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
	} {
		if v := p.get(env); v != "" {
			asserted[key] = v
		}
	}

	bc := &core.BuildContext{
		Platform:           "gitlab",
		BuildType:          BuildType,
		ServerURL:          server,
		ExternalParameters: ext,
		InternalParameters: internal,
		Asserted:           asserted,
	}
	if s := p.get("CI_JOB_STARTED_AT"); s != "" {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			bc.StartedOn = t.UTC()
		}
	}
	return bc, nil
}

// paramsFromClaims mirrors Fulcio's GitLab mapping: source from project_path,
// sha and ref_type/ref; build config from ci_config_ref_uri/ci_config_sha;
// trigger from pipeline_source.
func (p *Platform) paramsFromClaims(server string, c map[string]any) (ext, internal map[string]any) {
	ref := claimString(c, "ref_path")
	if ref == "" {
		ref = qualifyRef(claimString(c, "ref_type"), claimString(c, "ref"))
	}
	ext = map[string]any{}
	setSub(ext, "source", "repository", joinURL(server, claimString(c, "project_path")))
	setSub(ext, "source", "ref", ref)
	if uri := claimString(c, "ci_config_ref_uri"); uri != "" {
		setSub(ext, "config", "uri", "https://"+uri)
	}
	setSub(ext, "config", "path", p.get("CI_CONFIG_PATH"))
	set(ext, "pipeline_source", claimString(c, "pipeline_source"))
	set(ext, "environment", claimString(c, "environment"))

	g := map[string]any{}
	for _, k := range []string{
		"project_id", "project_path", "namespace_id", "namespace_path",
		"job_project_id", "job_project_path", "job_namespace_id", "job_namespace_path",
		"pipeline_id", "job_id", "sha", "ci_config_sha", "ref_protected",
		"runner_id", "runner_environment", "project_visibility",
		"environment_protected", "deployment_tier",
	} {
		set(g, k, claimString(c, k))
	}
	return ext, map[string]any{"job": g}
}

// paramsFromEnv fills the same fields from CI_* variables. In a merge-request
// pipeline from a fork CI_PROJECT_* is the project the job runs in and
// CI_MERGE_REQUEST_SOURCE_PROJECT_* the fork, which is what the token's
// job_project_* and project_* claims name.
func (p *Platform) paramsFromEnv(server string) (ext, internal map[string]any) {
	projectPath, projectID := p.get("CI_PROJECT_PATH"), p.get("CI_PROJECT_ID")
	fork := false
	if src := p.get("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH"); src != "" && src != projectPath {
		projectPath, projectID, fork = src, p.get("CI_MERGE_REQUEST_SOURCE_PROJECT_ID"), true
	}
	ref := ""
	switch {
	case p.get("CI_COMMIT_TAG") != "":
		ref = qualifyRef("tag", p.get("CI_COMMIT_TAG"))
	case p.get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME") != "":
		ref = qualifyRef("branch", p.get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"))
	case p.get("CI_COMMIT_BRANCH") != "":
		ref = qualifyRef("branch", p.get("CI_COMMIT_BRANCH"))
	case p.get("CI_COMMIT_REF_NAME") != "":
		ref = qualifyRef("branch", p.get("CI_COMMIT_REF_NAME"))
	}
	ext = map[string]any{}
	setSub(ext, "source", "repository", joinURL(server, projectPath))
	setSub(ext, "source", "ref", ref)
	if cfg := p.get("CI_CONFIG_PATH"); cfg != "" && p.get("CI_PROJECT_PATH") != "" && ref != "" {
		host := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
		setSub(ext, "config", "uri", "https://"+host+"/"+p.get("CI_PROJECT_PATH")+"//"+cfg+"@"+ref)
	}
	setSub(ext, "config", "path", p.get("CI_CONFIG_PATH"))
	set(ext, "pipeline_source", p.get("CI_PIPELINE_SOURCE"))
	set(ext, "environment", p.get("CI_ENVIRONMENT_NAME"))

	g := map[string]any{}
	set(g, "project_id", projectID)
	set(g, "project_path", projectPath)
	if !fork {
		set(g, "namespace_id", p.get("CI_PROJECT_NAMESPACE_ID"))
		set(g, "namespace_path", p.get("CI_PROJECT_NAMESPACE"))
	}
	set(g, "job_project_id", p.get("CI_PROJECT_ID"))
	set(g, "job_project_path", p.get("CI_PROJECT_PATH"))
	set(g, "job_namespace_id", p.get("CI_PROJECT_NAMESPACE_ID"))
	set(g, "job_namespace_path", p.get("CI_PROJECT_NAMESPACE"))
	set(g, "pipeline_id", p.get("CI_PIPELINE_ID"))
	set(g, "job_id", p.get("CI_JOB_ID"))
	set(g, "sha", p.get("CI_COMMIT_SHA"))
	set(g, "ref_protected", p.get("CI_COMMIT_REF_PROTECTED"))
	set(g, "runner_id", p.get("CI_RUNNER_ID"))
	set(g, "project_visibility", p.get("CI_PROJECT_VISIBILITY"))
	return ext, map[string]any{"job": g}
}

// qualifyRef turns GitLab's ref_type + ref into a fully qualified git ref.
func qualifyRef(refType, ref string) string {
	switch {
	case ref == "":
		return ""
	case strings.HasPrefix(ref, "refs/"):
		return ref
	case refType == "tag":
		return "refs/tags/" + ref
	default:
		return "refs/heads/" + ref
	}
}

func joinURL(server, path string) string {
	if path == "" {
		return ""
	}
	return server + "/" + strings.Trim(path, "/")
}

func set(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

func setSub(m map[string]any, outer, k, v string) {
	if v == "" {
		return
	}
	sub, _ := m[outer].(map[string]any)
	if sub == nil {
		sub = map[string]any{}
		m[outer] = sub
	}
	sub[k] = v
}
