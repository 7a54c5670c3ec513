package gitlab

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/gitlab/internal/fakegitlab"
)

func newFakeGitLab(t *testing.T) *fakegitlab.Server {
	f := fakegitlab.Start("100", parentPath, "job-token-secret")
	t.Cleanup(func() {
		f.Close()
		f.Lock()
		defer f.Unlock()
		for _, v := range f.Violations {
			t.Errorf("API contract violation: %s", v)
		}
	})
	return f
}

// outputs writes the files of a signing run into a temp dir.
func outputs(t *testing.T, sigNames ...string) *core.Result {
	t.Helper()
	dir := t.TempDir()
	write := func(rel, content string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if len(sigNames) == 0 {
		sigNames = []string{"app.tar.gz.sig", "app.sbom.json.sig"}
	}
	res := &core.Result{
		ProvenancePath: write("provenance.intoto.jsonl", `{"payloadType":"application/vnd.in-toto+json"}`+"\n"),
		PublicKeyPath:  write("signer.pub", "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"),
	}
	for i, s := range sigNames {
		res.Artifacts = append(res.Artifacts, core.ArtifactResult{
			Name: strings.TrimSuffix(filepath.Base(s), ".sig"), SignaturePath: write(s, "c2lnbmF0dXJl"+string(rune('0'+i))),
		})
	}
	return res
}

func publishEnv(f *fakegitlab.Server, tag string) map[string]string {
	env := baseEnv()
	env["SIGNET_GITLAB_PUBLISH"] = "true"
	env["CI_API_V4_URL"] = f.APIURL()
	env["CI_JOB_TOKEN"] = f.JobToken
	if tag != "" {
		env["CI_COMMIT_TAG"] = tag
	}
	return env
}

func TestPublishUploadsAndLinksRelease(t *testing.T) {
	f := newFakeGitLab(t)
	f.Releases["v1.2.0"] = nil
	res := outputs(t)
	env := publishEnv(f, "v1.2.0")
	env["SIGNET_GITLAB_PACKAGE_NAME"] = "app-signatures"

	if err := New(mapEnv(env)).Publish(context.Background(), res); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	files, releases, requests := f.Snapshot()
	want := map[string]string{
		"app.tar.gz.sig": res.Artifacts[0].SignaturePath, "app.sbom.json.sig": res.Artifacts[1].SignaturePath,
		"provenance.intoto.jsonl": res.ProvenancePath, "signer.pub": res.PublicKeyPath,
	}
	if len(files) != len(want) {
		t.Errorf("uploaded %d files, want %d: %v", len(files), len(want), requests)
	}
	for name, path := range want {
		local, _ := os.ReadFile(path)
		got, ok := files["app-signatures/v1.2.0/"+name]
		if !ok || string(got) != string(local) {
			t.Errorf("package file %s = %q (present %v), want %q", name, got, ok, local)
		}
	}
	links := releases["v1.2.0"]
	if len(links) != len(want) {
		t.Fatalf("release has %d links, want %d", len(links), len(want))
	}
	for _, l := range links {
		name := l["name"].(string)
		wantURL := f.APIURL() + "/projects/100/packages/generic/app-signatures/v1.2.0/" + name
		if l["url"] != wantURL || l["link_type"] != "other" {
			t.Errorf("link %s = %v, want url %s, link_type other", name, l, wantURL)
		}
	}
	for _, r := range requests {
		r, _ = url.PathUnescape(r)
		if !strings.HasPrefix(r, "PUT /api/v4/projects/100/packages/generic/app-signatures/v1.2.0/") &&
			r != "POST /api/v4/projects/100/releases/v1.2.0/assets/links" {
			t.Errorf("unexpected request %s", r)
		}
	}
}

func TestPublishBranchPipelineSkipsReleaseAndDefaultsVersion(t *testing.T) {
	f := newFakeGitLab(t)
	if err := New(mapEnv(publishEnv(f, ""))).Publish(context.Background(), outputs(t)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	files, releases, requests := f.Snapshot()
	if _, ok := files["signet/"+sha+"/signer.pub"]; !ok {
		t.Errorf("want signer.pub in package signet/%s, have %v", sha, requests)
	}
	if len(releases) != 0 || len(files) != 4 {
		t.Errorf("files=%d releases=%v, want 4 files and no release links", len(files), releases)
	}
}

func TestPublishOff(t *testing.T) {
	for _, v := range []string{"", "false", "0"} {
		f := newFakeGitLab(t)
		env := publishEnv(f, "v1")
		env["SIGNET_GITLAB_PUBLISH"] = v
		if err := New(mapEnv(env)).Publish(context.Background(), outputs(t)); err != nil {
			t.Fatalf("Publish with %q: %v", v, err)
		}
		if _, _, reqs := f.Snapshot(); len(reqs) != 0 {
			t.Errorf("SIGNET_GITLAB_PUBLISH=%q made requests %v", v, reqs)
		}
	}
}

func TestPublishErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(f *fakegitlab.Server, env map[string]string)
		tag     string
		errHas  []string
		uploads int // package files present afterwards
	}{
		{
			name:   "401 bad job token",
			setup:  func(f *fakegitlab.Server, env map[string]string) { env["CI_JOB_TOKEN"] = "expired" },
			errHas: []string{"HTTP 401", `"401 Unauthorized"`, "CI_JOB_TOKEN", "valid only while its job runs", "nothing was uploaded"},
		},
		{
			name:   "403 package registry disabled",
			setup:  func(f *fakegitlab.Server, env map[string]string) { f.RegistryEnabled = false },
			errHas: []string{"HTTP 403", "enable the package registry", "Developer role", "nothing was uploaded"},
		},
		{
			name:   "404 unknown project",
			setup:  func(f *fakegitlab.Server, env map[string]string) { env["CI_PROJECT_ID"] = "999" },
			errHas: []string{"HTTP 404", `"404 Project Not Found"`, "check CI_PROJECT_ID and CI_API_V4_URL"},
		},
		{
			name:    "409 conflict on the provenance",
			setup:   func(f *fakegitlab.Server, env map[string]string) { f.ConflictOn = "provenance.intoto.jsonl" },
			errHas:  []string{"HTTP 409", "already exists", "SIGNET_GITLAB_PACKAGE_VERSION", "already uploaded: app.tar.gz.sig, app.sbom.json.sig"},
			uploads: 2,
		},
		{
			name: "400 duplicate package not allowed",
			setup: func(f *fakegitlab.Server, env map[string]string) {
				f.AllowDuplicates = false
				f.Files["signet/"+sha+"/app.tar.gz.sig"] = []byte("old")
			},
			errHas:  []string{"HTTP 400", "Duplicate package is not allowed", "forbids duplicate", "new version"},
			uploads: 1,
		},
		{
			name:    "404 release missing",
			tag:     "v9.9.9",
			errHas:  []string{"HTTP 404", `no release for tag "v9.9.9"`, "create the release", "SIGNET_GITLAB_RELEASE_LINKS=false", "already uploaded: app.tar.gz.sig"},
			uploads: 4,
		},
		{
			name: "403 may not edit releases",
			tag:  "v1.0.0",
			setup: func(f *fakegitlab.Server, env map[string]string) {
				f.Releases["v1.0.0"] = nil
				f.CanRelease = false
			},
			errHas:  []string{"HTTP 403", "may not edit releases", "Maintainer for protected tags"},
			uploads: 4,
		},
		{
			name: "400 release link already taken",
			tag:  "v1.0.0",
			setup: func(f *fakegitlab.Server, env map[string]string) {
				f.Releases["v1.0.0"] = []map[string]any{{"id": 99, "name": "app.tar.gz.sig", "url": "https://old"}}
			},
			errHas:  []string{"HTTP 400", "has already been taken", "already has a link"},
			uploads: 4,
		},
		{
			name:   "missing CI_JOB_TOKEN",
			setup:  func(f *fakegitlab.Server, env map[string]string) { delete(env, "CI_JOB_TOKEN") },
			errHas: []string{"CI_JOB_TOKEN not set"},
		},
		{
			name:   "bad package version",
			setup:  func(f *fakegitlab.Server, env map[string]string) { env["SIGNET_GITLAB_PACKAGE_VERSION"] = "1.0 beta" },
			errHas: []string{`package version "1.0 beta" is not valid`},
		},
		{
			name:   "bad publish flag",
			setup:  func(f *fakegitlab.Server, env map[string]string) { env["SIGNET_GITLAB_PUBLISH"] = "maybe" },
			errHas: []string{`SIGNET_GITLAB_PUBLISH="maybe" is not a boolean`},
		},
		{
			name:   "GitLab unreachable",
			setup:  func(f *fakegitlab.Server, env map[string]string) { env["CI_API_V4_URL"] = "http://127.0.0.1:1/api/v4" },
			errHas: []string{"could not reach GitLab", "nothing was uploaded"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeGitLab(t)
			env := publishEnv(f, tc.tag)
			if tc.setup != nil {
				tc.setup(f, env)
			}
			res := outputs(t)
			err := New(mapEnv(env)).Publish(context.Background(), res)
			if err == nil {
				t.Fatal("Publish succeeded, want error")
			}
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q\nlacks %q", err, s)
				}
			}
			files, _, _ := f.Snapshot()
			if len(files) != tc.uploads {
				t.Errorf("%d package files after the failure, want %d", len(files), tc.uploads)
			}
			// Publishing never touches the local outputs.
			if _, err := os.Stat(res.ProvenancePath); err != nil {
				t.Errorf("local provenance gone: %v", err)
			}
		})
	}
}

func TestPublishChecksFilesFirst(t *testing.T) {
	tests := []struct {
		name   string
		sigs   []string
		errHas string
	}{
		{"same base name twice", []string{"linux/app.sig", "darwin/app.sig"}, `two outputs would be uploaded as "app.sig"`},
		{"space in name", []string{"my app.sig"}, `cannot publish "my app.sig"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeGitLab(t)
			err := New(mapEnv(publishEnv(f, ""))).Publish(context.Background(), outputs(t, tc.sigs...))
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want %q", err, tc.errHas)
			}
			if _, _, reqs := f.Snapshot(); len(reqs) != 0 {
				t.Errorf("requests were made before the check failed: %v", reqs)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		f := newFakeGitLab(t)
		res := outputs(t)
		os.Remove(res.PublicKeyPath)
		err := New(mapEnv(publishEnv(f, ""))).Publish(context.Background(), res)
		if err == nil || !strings.Contains(err.Error(), "signer.pub") {
			t.Fatalf("err = %v, want it to name signer.pub", err)
		}
		if _, _, reqs := f.Snapshot(); len(reqs) != 0 {
			t.Errorf("requests were made: %v", reqs)
		}
	})
}
