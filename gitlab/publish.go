package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/signet-ci/signet/core"
)

// Publish uploads the signatures, the provenance and the public key to the
// project's generic package registry and, on tag pipelines, links them from
// the tag's release. It does nothing unless SIGNET_GITLAB_PUBLISH=true. It
// authenticates with the job's CI_JOB_TOKEN against CI_API_V4_URL. The local
// outputs are already written when Publish runs; a failed upload loses nothing.
func (p *Platform) Publish(ctx context.Context, res *core.Result) error {
	on, err := p.boolEnv(EnvPublish, false)
	if err != nil || !on {
		return err
	}
	if res == nil {
		return errorf("nothing to publish: no signing result")
	}
	cfg, err := p.publishConfig()
	if err != nil {
		return err
	}
	files, err := publishFiles(res)
	if err != nil {
		return err
	}
	pub, err := newPublisher(cfg, p.log)
	if err != nil {
		return err
	}
	return pub.run(ctx, files)
}

type publishConfig struct {
	apiURL, jobToken, project string
	pkgName, pkgVersion       string
	tag                       string // release tag; "" means no release links
}

func (p *Platform) publishConfig() (*publishConfig, error) {
	cfg := &publishConfig{
		apiURL:     strings.TrimRight(p.get("CI_API_V4_URL"), "/"),
		jobToken:   p.get("CI_JOB_TOKEN"),
		project:    p.get("CI_PROJECT_ID"),
		pkgName:    p.get(EnvPackageName),
		pkgVersion: p.get(EnvPackageVersion),
	}
	var missing []string
	for _, kv := range [][2]string{{"CI_API_V4_URL", cfg.apiURL}, {"CI_JOB_TOKEN", cfg.jobToken}, {"CI_PROJECT_ID", cfg.project}} {
		if kv[1] == "" {
			missing = append(missing, kv[0])
		}
	}
	if len(missing) > 0 {
		return nil, errorf("%s=true but %s not set: publishing needs the variables GitLab gives every job; run it inside the job, or set %s=false",
			EnvPublish, strings.Join(missing, ", "), EnvPublish)
	}
	if cfg.pkgName == "" {
		cfg.pkgName = DefaultPackageName
	}
	if !pkgNameRE.MatchString(cfg.pkgName) {
		return nil, errorf("%s=%q is not a valid generic package name: use letters, digits, '.', '_', '-' and '+'", EnvPackageName, cfg.pkgName)
	}
	if cfg.pkgVersion == "" {
		cfg.pkgVersion = p.get("CI_COMMIT_TAG")
	}
	if cfg.pkgVersion == "" {
		cfg.pkgVersion = p.get("CI_COMMIT_SHA")
	}
	if cfg.pkgVersion == "" {
		return nil, errorf("no package version: set %s (CI_COMMIT_TAG and CI_COMMIT_SHA are both empty)", EnvPackageVersion)
	}
	if !pkgVersionRE.MatchString(cfg.pkgVersion) || strings.Contains(cfg.pkgVersion, "..") {
		return nil, errorf("package version %q is not valid for the generic package registry: use letters, digits, '.', '_', '-' and '+' (set %s)", cfg.pkgVersion, EnvPackageVersion)
	}
	links, err := p.boolEnv(EnvReleaseLinks, true)
	if err != nil {
		return nil, err
	}
	if links {
		cfg.tag = p.get("CI_COMMIT_TAG")
	}
	return cfg, nil
}

var (
	pkgNameRE    = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)
	pkgVersionRE = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)
	// Valid generic package file names (GitLab docs "Valid package filename
	// format"), without '/': we upload flat.
	fileNameRE = regexp.MustCompile(`^[A-Za-z0-9._+~@-]+$`)
)

type publishFile struct{ name, path string }

// publishFiles lists the files to upload and checks them all before the first
// request, so a bad name never leaves a half-published package.
func publishFiles(res *core.Result) ([]publishFile, error) {
	var files []publishFile
	seen := map[string]string{}
	add := func(path string) error {
		if path == "" {
			return nil
		}
		name := filepath.Base(path)
		if prev, dup := seen[name]; dup {
			return errorf("two outputs would be uploaded as %q (%s and %s): the generic package is flat; sign them with distinct file names or publish into separate packages", name, prev, path)
		}
		if !fileNameRE.MatchString(name) || strings.HasPrefix(name, "~") || strings.HasPrefix(name, "@") ||
			strings.HasSuffix(name, "~") || strings.HasSuffix(name, "@") {
			return errorf("cannot publish %q: GitLab package file names may hold only letters, digits and . _ - + ~ @ (not first or last), and no spaces; rename the artifact", name)
		}
		st, err := os.Stat(path)
		if err != nil {
			return errorf("cannot publish %s: %w", path, err)
		}
		if !st.Mode().IsRegular() {
			return errorf("cannot publish %s: not a regular file", path)
		}
		seen[name] = path
		files = append(files, publishFile{name: name, path: path})
		return nil
	}
	for _, a := range res.Artifacts {
		if err := add(a.SignaturePath); err != nil {
			return nil, err
		}
	}
	for _, path := range []string{res.ProvenancePath, res.PublicKeyPath} {
		if err := add(path); err != nil {
			return nil, err
		}
	}
	if len(files) == 0 {
		return nil, errorf("nothing to publish: the signing result has no signature, provenance or public key file")
	}
	return files, nil
}

type publisher struct {
	cfg    *publishConfig
	client *gl.Client
	bodies *errorBodies
	log    *slog.Logger
}

func newPublisher(cfg *publishConfig, log *slog.Logger) (*publisher, error) {
	bodies := &errorBodies{}
	client, err := gl.NewJobClient(cfg.jobToken,
		gl.WithBaseURL(cfg.apiURL),
		gl.WithCustomRetryMax(3),
		gl.WithCustomRetryWaitMinMax(200*time.Millisecond, 2*time.Second),
		gl.WithInterceptor(bodies.intercept),
		gl.WithUserAgent("signet"),
	)
	if err != nil {
		return nil, errorf("cannot create the GitLab API client for CI_API_V4_URL=%q: %w", cfg.apiURL, err)
	}
	return &publisher{cfg: cfg, client: client, bodies: bodies, log: log}, nil
}

func (pb *publisher) run(ctx context.Context, files []publishFile) error {
	c := pb.cfg
	var uploaded []string
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			return errorf("cannot read %s for upload: %w", f.path, err)
		}
		_, resp, err := pb.client.GenericPackages.PublishPackageFile(c.project, c.pkgName, c.pkgVersion, f.name,
			bytes.NewReader(data), nil, gl.WithContext(ctx))
		if err != nil {
			return pb.explain(fmt.Sprintf("uploading %s to generic package %s/%s of project %s", f.name, c.pkgName, c.pkgVersion, c.project),
				"package", resp, err, uploaded)
		}
		uploaded = append(uploaded, f.name)
		pb.log.Info("uploaded to the generic package registry", "file", f.name, "package", c.pkgName, "version", c.pkgVersion)
	}
	if c.tag == "" {
		return nil
	}
	for _, f := range files {
		link := c.apiURL + "/projects/" + url.PathEscape(c.project) + "/packages/generic/" +
			url.PathEscape(c.pkgName) + "/" + url.PathEscape(c.pkgVersion) + "/" + url.PathEscape(f.name)
		_, resp, err := pb.client.ReleaseLinks.CreateReleaseLink(c.project, c.tag, &gl.CreateReleaseLinkOptions{
			Name:     gl.Ptr(f.name),
			URL:      gl.Ptr(link),
			LinkType: gl.Ptr(gl.OtherLinkType),
		}, gl.WithContext(ctx))
		if err != nil {
			return pb.explain(fmt.Sprintf("adding release link %s to release %s of project %s", f.name, c.tag, c.project),
				"release", resp, err, uploaded)
		}
		pb.log.Info("linked from the release", "file", f.name, "tag", c.tag, "url", link)
	}
	return nil
}

// explain turns a GitLab API failure into a message that says what to do.
func (pb *publisher) explain(what, kind string, resp *gl.Response, err error, uploaded []string) error {
	status := 0
	if resp != nil && resp.Response != nil {
		status = resp.StatusCode
	}
	var er *gl.ErrorResponse
	if status == 0 && errors.As(err, &er) && er.Response != nil {
		status = er.Response.StatusCode
	}
	msg := pb.bodies.message(status)
	if msg == "" && er != nil {
		msg = er.Message
	}
	c := pb.cfg
	var hint string
	switch {
	case status == http.StatusUnauthorized:
		hint = "GitLab rejected CI_JOB_TOKEN: it is valid only while its job runs; publish from the signing job itself and do not pass a token from another job"
	case status == http.StatusForbidden && kind == "package":
		hint = fmt.Sprintf("the job token may not write packages to project %s: enable the package registry (Settings > General > Visibility), make sure the user running the pipeline has at least the Developer role, and check package protection rules for %q", c.project, c.pkgName)
	case status == http.StatusForbidden:
		hint = fmt.Sprintf("the job token may not edit releases of project %s: the user running the pipeline needs at least the Developer role (Maintainer for protected tags such as %q); or set %s=false", c.project, c.tag, EnvReleaseLinks)
	case status == http.StatusNotFound && kind == "package":
		hint = fmt.Sprintf("project %s or its package registry was not found: check CI_PROJECT_ID and CI_API_V4_URL=%s and that the package registry is enabled", c.project, c.apiURL)
	case status == http.StatusNotFound:
		hint = fmt.Sprintf("no release for tag %q in project %s: create the release before this job runs (a release: job in an earlier stage, or glab release create), or set %s=false", c.tag, c.project, EnvReleaseLinks)
	case status == http.StatusConflict && kind == "package":
		hint = fmt.Sprintf("a file with this name already exists in %s/%s: publish under a new version (%s) or delete the existing package file", c.pkgName, c.pkgVersion, EnvPackageVersion)
	case status == http.StatusConflict:
		hint = fmt.Sprintf("release %q already has a link with this name or URL: delete the old link, or set %s=false when re-running the job", c.tag, EnvReleaseLinks)
	case status == http.StatusBadRequest && strings.Contains(strings.ToLower(msg), "duplicate"):
		hint = fmt.Sprintf("the project forbids duplicate generic packages and %s/%s already holds this file: publish under a new version (%s) or allow duplicates in Settings > Packages and registries", c.pkgName, c.pkgVersion, EnvPackageVersion)
	case status == http.StatusBadRequest && strings.Contains(strings.ToLower(msg), "taken"):
		hint = fmt.Sprintf("release %q already has a link with this name or URL: delete the old link, or set %s=false when re-running the job", c.tag, EnvReleaseLinks)
	case status == http.StatusBadRequest:
		hint = "GitLab refused the request as invalid; check the package name, version and file names"
	case status >= 500 || status == http.StatusTooManyRequests:
		hint = "GitLab is unavailable or rate limiting (retried); run the job again later"
	case status == 0:
		hint = fmt.Sprintf("could not reach GitLab at CI_API_V4_URL=%s", c.apiURL)
	default:
		hint = "unexpected answer from GitLab"
	}
	detail := ""
	if status != 0 {
		detail = fmt.Sprintf(" (HTTP %d", status)
		if msg != "" {
			detail += fmt.Sprintf(": %q", msg)
		}
		detail += ")"
	} else {
		detail = fmt.Sprintf(" (%v)", err)
	}
	done := "nothing was uploaded"
	if len(uploaded) > 0 {
		done = "already uploaded: " + strings.Join(uploaded, ", ")
	}
	return fmt.Errorf("gitlab: %s failed%s: %s; the local outputs are complete (%s): %w", what, detail, hint, done, err)
}

// errorBodies keeps the JSON message of the last error answer per status:
// client-go drops the body of 404 answers, whose message tells a missing
// project from a missing release.
type errorBodies struct {
	mu   sync.Mutex
	last map[int]string
}

func (b *errorBodies) intercept(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		if err != nil || resp.StatusCode < 400 {
			return resp, err
		}
		data, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(data))
		if rerr == nil {
			var body struct {
				Message any `json:"message"`
				Error   any `json:"error"`
			}
			msg := ""
			if jsonErr := json.Unmarshal(data, &body); jsonErr == nil {
				msg = flatten(body.Message)
				if msg == "" {
					msg = flatten(body.Error)
				}
			}
			b.mu.Lock()
			if b.last == nil {
				b.last = map[int]string{}
			}
			b.last[resp.StatusCode] = msg
			b.mu.Unlock()
		}
		return resp, nil
	})
}

func (b *errorBodies) message(status int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last[status]
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// flatten renders GitLab's message field, which is a string, a list or an
// object of lists ({"name": ["has already been taken"]}).
func flatten(v any) string {
	switch m := v.(type) {
	case string:
		return m
	case []any:
		parts := make([]string, 0, len(m))
		for _, e := range m {
			parts = append(parts, flatten(e))
		}
		return strings.Join(parts, "; ")
	case map[string]any:
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(m))
		for _, k := range keys {
			parts = append(parts, k+" "+flatten(m[k]))
		}
		return strings.Join(parts, "; ")
	}
	return ""
}
