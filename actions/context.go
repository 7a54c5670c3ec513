package actions

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/signet-ci/signet/core"
)

// BuildContext describes the workflow run the way GitHub's own provenance
// (actions/attest-build-provenance, buildType workflow/v1) does. The adapter
// supplies externalParameters.workflow{ref, repository, path} (from
// GITHUB_WORKFLOW_REF, plus `inputs` for workflow_dispatch from the event
// payload). Everything the token vouches for is filled by core from the
// verified claims and checked again by the signer:
// internalParameters.github{event_name, repository_id, repository_owner_id,
// runner_environment}, the commit in resolvedDependencies, runDetails.builder.id
// and metadata.invocationId; core reserves internalParameters.github for them,
// so the adapter leaves internalParameters empty. Facts only the build states
// (actor, run number, head commit of the event, ...) go to Asserted, which core
// marks as build-asserted.
func (p *platform) BuildContext(ctx context.Context, _ map[string]any) (*core.BuildContext, error) {
	ghctx, err := p.gha().Context()
	if err != nil {
		return nil, fmt.Errorf("reading the GitHub Actions environment (GITHUB_* and the event payload at GITHUB_EVENT_PATH): %w", err)
	}
	if ghctx.Repository == "" {
		return nil, fmt.Errorf("GITHUB_REPOSITORY is not set: run signet inside a GitHub Actions job, or pass --platform explicitly")
	}
	server := strings.TrimSuffix(ghctx.ServerURL, "/")

	event := ghctx.Event // parsed from GITHUB_EVENT_PATH by go-githubactions
	if event == nil {
		event = map[string]any{}
	}

	workflow := map[string]any{"repository": server + "/" + ghctx.Repository}
	if wref := p.getenv("GITHUB_WORKFLOW_REF"); wref != "" {
		path, ref, err := splitWorkflowRef(ghctx.Repository, wref)
		if err != nil {
			return nil, err
		}
		workflow["path"], workflow["ref"] = path, ref
	} else {
		// Runners before GITHUB_WORKFLOW_REF existed (and some emulators): the
		// workflow file path and the triggering ref are the best we know.
		p.log.Warn("GITHUB_WORKFLOW_REF is not set; taking the workflow ref from GITHUB_REF", "ref", ghctx.Ref)
		workflow["ref"] = ghctx.Ref
	}
	ext := map[string]any{"workflow": workflow}
	if ghctx.EventName == "workflow_dispatch" {
		if inputs, ok := event["inputs"].(map[string]any); ok && len(inputs) > 0 {
			ext["inputs"] = inputs
		}
	}

	asserted := map[string]string{}
	put := func(k, v string) {
		if v != "" {
			asserted[k] = v
		}
	}
	put("github.actor", ghctx.Actor)
	put("github.actor_id", ghctx.ActorID)
	put("github.triggering_actor", ghctx.TriggeringActor)
	put("github.workflow", ghctx.Workflow)
	put("github.job", ghctx.Job)
	put("github.sha", ghctx.SHA)
	put("github.ref", ghctx.Ref)
	put("github.head_ref", ghctx.HeadRef)
	put("github.base_ref", ghctx.BaseRef)
	if ghctx.RunNumber > 0 {
		put("github.run_number", strconv.FormatInt(ghctx.RunNumber, 10))
	}
	put("runner.os", p.getenv("RUNNER_OS"))
	put("runner.arch", p.getenv("RUNNER_ARCH"))
	put("event.sender", str(event, "sender", "login"))
	put("event.head_commit.id", str(event, "head_commit", "id"))
	if n, ok := dig(event, "pull_request", "number").(float64); ok {
		put("event.pull_request.number", strconv.FormatInt(int64(n), 10))
	}

	return &core.BuildContext{
		Platform:           platformName,
		BuildType:          buildType,
		ServerURL:          server,
		ExternalParameters: ext,
		Asserted:           asserted,
	}, nil
}

// splitWorkflowRef splits GITHUB_WORKFLOW_REF
// ("octo/repo/.github/workflows/release.yml@refs/tags/v1") into the path
// inside the repository and the ref. A ref may itself contain "@".
func splitWorkflowRef(repository, wref string) (path, ref string, err error) {
	rest, ok := strings.CutPrefix(wref, repository+"/")
	if !ok {
		return "", "", fmt.Errorf("GITHUB_WORKFLOW_REF=%q does not start with GITHUB_REPOSITORY=%q: the runner environment is inconsistent", wref, repository)
	}
	path, ref, ok = strings.Cut(rest, "@")
	if !ok || path == "" || ref == "" {
		return "", "", fmt.Errorf("GITHUB_WORKFLOW_REF=%q is not of the form OWNER/REPO/PATH@REF", wref)
	}
	return path, ref, nil
}

// dig walks nested JSON objects.
func dig(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = obj[k]
	}
	return cur
}

func str(m map[string]any, keys ...string) string {
	s, _ := dig(m, keys...).(string)
	return s
}
