package gitlab

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// fakeGitLab serves the two REST endpoints Publish uses, as documented:
//
//	PUT  /api/v4/projects/:id/packages/generic/:package_name/:package_version/:file_name
//	     (docs/user/packages/generic_packages; lib/api/generic_packages.rb)
//	POST /api/v4/projects/:id/releases/:tag_name/assets/links
//	     (docs/api/releases/links.md; lib/api/release/links.rb)
//
// Auth is the JOB-TOKEN header. Errors are GitLab's JSON bodies:
// {"message":"401 Unauthorized"}, {"message":"403 Forbidden"},
// {"message":"404 Project Not Found"}, {"message":"400 Bad request - Duplicate
// package is not allowed"}, Grape validation errors {"error":"name is missing"}.
type fakeGitLab struct {
	t   *testing.T
	srv *httptest.Server

	mu              sync.Mutex
	projectID       string
	projectPath     string
	jobToken        string
	registryEnabled bool
	canRelease      bool
	allowDuplicates bool
	conflictOn      string // file name whose upload answers 409
	files           map[string][]byte
	releases        map[string][]map[string]any
	requests        []string // "METHOD path"
	nextLinkID      int
}

func newFakeGitLab(t *testing.T) *fakeGitLab {
	f := &fakeGitLab{
		t: t, projectID: "100", projectPath: parentPath, jobToken: "job-token-secret",
		registryEnabled: true, canRelease: true, allowDuplicates: true,
		files: map[string][]byte{}, releases: map[string][]map[string]any{}, nextLinkID: 1,
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeGitLab) apiURL() string { return f.srv.URL + "/api/v4" }

func (f *fakeGitLab) reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (f *fakeGitLab) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	raw := r.URL.EscapedPath()
	f.requests = append(f.requests, r.Method+" "+raw)

	if r.Header.Get("PRIVATE-TOKEN") != "" || r.Header.Get("Authorization") != "" {
		f.t.Errorf("%s %s: sent a personal token; CI jobs authenticate with JOB-TOKEN", r.Method, raw)
	}
	parts := strings.Split(strings.TrimPrefix(raw, "/api/v4/"), "/")
	unesc := func(s string) string {
		u, err := url.PathUnescape(s)
		if err != nil {
			f.t.Errorf("bad escaping %q", s)
		}
		return u
	}
	switch {
	case r.Method == http.MethodPut && len(parts) == 7 && parts[0] == "projects" && parts[2] == "packages" && parts[3] == "generic":
		if !f.authorized(w, r) || !f.project(w, unesc(parts[1])) {
			return
		}
		if !f.registryEnabled {
			f.reply(w, http.StatusForbidden, map[string]any{"message": "403 Forbidden"})
			return
		}
		name, version, file := unesc(parts[4]), unesc(parts[5]), unesc(parts[6])
		key := name + "/" + version + "/" + file
		if file == f.conflictOn {
			f.reply(w, http.StatusConflict, map[string]any{"message": "409 Conflict: package file " + file + " is being processed"})
			return
		}
		if _, exists := f.files[key]; exists && !f.allowDuplicates {
			f.reply(w, http.StatusBadRequest, map[string]any{"message": "400 Bad request - Duplicate package is not allowed"})
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			f.reply(w, http.StatusBadRequest, map[string]any{"message": "400 Bad request - " + err.Error()})
			return
		}
		f.files[key] = body
		f.reply(w, http.StatusCreated, map[string]any{"message": "201 Created"})

	case r.Method == http.MethodPost && len(parts) == 6 && parts[0] == "projects" && parts[2] == "releases" && parts[4] == "assets" && parts[5] == "links":
		if !f.authorized(w, r) || !f.project(w, unesc(parts[1])) {
			return
		}
		tag := unesc(parts[3])
		links, ok := f.releases[tag]
		if !ok {
			f.reply(w, http.StatusNotFound, map[string]any{"message": "404 Not found"})
			return
		}
		if !f.canRelease {
			f.reply(w, http.StatusForbidden, map[string]any{"message": "403 Forbidden"})
			return
		}
		var in map[string]any
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			f.reply(w, http.StatusBadRequest, map[string]any{"error": "body is not JSON"})
			return
		}
		for _, req := range []string{"name", "url"} {
			if s, _ := in[req].(string); s == "" {
				f.reply(w, http.StatusBadRequest, map[string]any{"error": req + " is missing"})
				return
			}
		}
		lt, _ := in["link_type"].(string)
		switch lt {
		case "":
			lt = "other"
		case "other", "runbook", "image", "package":
		default:
			f.reply(w, http.StatusBadRequest, map[string]any{"error": "link_type does not have a valid value"})
			return
		}
		for _, l := range links {
			if l["name"] == in["name"] || l["url"] == in["url"] {
				f.reply(w, http.StatusBadRequest, map[string]any{"message": map[string]any{"name": []string{"has already been taken"}}})
				return
			}
		}
		link := map[string]any{"id": f.nextLinkID, "name": in["name"], "url": in["url"], "link_type": lt,
			"direct_asset_url": in["url"], "external": true}
		f.nextLinkID++
		f.releases[tag] = append(links, link)
		f.reply(w, http.StatusCreated, link)

	default:
		f.reply(w, http.StatusNotFound, map[string]any{"error": "404 Not Found"})
	}
}

func (f *fakeGitLab) authorized(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("JOB-TOKEN") != f.jobToken {
		f.reply(w, http.StatusUnauthorized, map[string]any{"message": "401 Unauthorized"})
		return false
	}
	return true
}

func (f *fakeGitLab) project(w http.ResponseWriter, id string) bool {
	if id != f.projectID && id != f.projectPath {
		f.reply(w, http.StatusNotFound, map[string]any{"message": "404 Project Not Found"})
		return false
	}
	return true
}

func (f *fakeGitLab) snapshot() (files map[string][]byte, releases map[string][]map[string]any, requests []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	files = map[string][]byte{}
	for k, v := range f.files {
		files[k] = v
	}
	releases = map[string][]map[string]any{}
	for k, v := range f.releases {
		releases[k] = append([]map[string]any(nil), v...)
	}
	return files, releases, append([]string(nil), f.requests...)
}

func (f *fakeGitLab) String() string { return fmt.Sprintf("fake GitLab at %s", f.srv.URL) }
