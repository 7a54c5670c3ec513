// Package fakegitlab is an in-memory GitLab REST API for tests: the generic
// package registry upload and release asset links, following GitLab's
// documented endpoints, authentication and error bodies. Nothing else.
package fakegitlab

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
)

// Server serves the two REST endpoints Publish uses, as documented:
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
type Server struct {
	srv *httptest.Server

	mu sync.Mutex
	// ProjectID and ProjectPath name the one project (either works as :id).
	ProjectID, ProjectPath string
	// JobToken is the CI_JOB_TOKEN the server accepts in the JOB-TOKEN header.
	JobToken string
	// RegistryEnabled false answers uploads 403 (package registry disabled).
	RegistryEnabled bool
	// CanRelease false answers release link creation 403.
	CanRelease bool
	// AllowDuplicates false answers an upload of an existing file 400.
	AllowDuplicates bool
	// ConflictOn is a file name whose upload answers 409.
	ConflictOn string
	// Files are the uploaded package files by "name/version/file".
	Files map[string][]byte
	// Releases are the existing releases by tag, with their links.
	Releases map[string][]map[string]any
	// Requests lists "METHOD escaped-path" of every request.
	Requests []string
	// Violations lists requests that broke the API contract (e.g. a
	// PRIVATE-TOKEN sent by a CI job).
	Violations []string
	nextLinkID int
}

// Start serves the fake on a loopback port until Close.
func Start(projectID, projectPath, jobToken string) *Server {
	f := &Server{
		ProjectID: projectID, ProjectPath: projectPath, JobToken: jobToken,
		RegistryEnabled: true, CanRelease: true, AllowDuplicates: true,
		Files: map[string][]byte{}, Releases: map[string][]map[string]any{}, nextLinkID: 1,
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

// Close stops the server.
func (f *Server) Close() { f.srv.Close() }

// APIURL is the CI_API_V4_URL of the fake.
func (f *Server) APIURL() string { return f.srv.URL + "/api/v4" }

// Lock and Unlock guard the exported fields while the server runs.
func (f *Server) Lock()   { f.mu.Lock() }
func (f *Server) Unlock() { f.mu.Unlock() }

func (f *Server) reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (f *Server) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	raw := r.URL.EscapedPath()
	f.Requests = append(f.Requests, r.Method+" "+raw)

	if r.Header.Get("PRIVATE-TOKEN") != "" || r.Header.Get("Authorization") != "" {
		f.Violations = append(f.Violations, r.Method+" "+raw+": sent a personal token; CI jobs authenticate with JOB-TOKEN")
	}
	parts := strings.Split(strings.TrimPrefix(raw, "/api/v4/"), "/")
	unesc := func(s string) string {
		u, err := url.PathUnescape(s)
		if err != nil {
			f.Violations = append(f.Violations, "bad escaping "+s)
		}
		return u
	}
	switch {
	case r.Method == http.MethodPut && len(parts) == 7 && parts[0] == "projects" && parts[2] == "packages" && parts[3] == "generic":
		if !f.authorized(w, r) || !f.project(w, unesc(parts[1])) {
			return
		}
		if !f.RegistryEnabled {
			f.reply(w, http.StatusForbidden, map[string]any{"message": "403 Forbidden"})
			return
		}
		name, version, file := unesc(parts[4]), unesc(parts[5]), unesc(parts[6])
		key := name + "/" + version + "/" + file
		if file == f.ConflictOn {
			f.reply(w, http.StatusConflict, map[string]any{"message": "409 Conflict: package file " + file + " is being processed"})
			return
		}
		if _, exists := f.Files[key]; exists && !f.AllowDuplicates {
			f.reply(w, http.StatusBadRequest, map[string]any{"message": "400 Bad request - Duplicate package is not allowed"})
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			f.reply(w, http.StatusBadRequest, map[string]any{"message": "400 Bad request - " + err.Error()})
			return
		}
		f.Files[key] = body
		f.reply(w, http.StatusCreated, map[string]any{"message": "201 Created"})

	case r.Method == http.MethodPost && len(parts) == 6 && parts[0] == "projects" && parts[2] == "releases" && parts[4] == "assets" && parts[5] == "links":
		if !f.authorized(w, r) || !f.project(w, unesc(parts[1])) {
			return
		}
		tag := unesc(parts[3])
		links, ok := f.Releases[tag]
		if !ok {
			f.reply(w, http.StatusNotFound, map[string]any{"message": "404 Not found"})
			return
		}
		if !f.CanRelease {
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
		f.Releases[tag] = append(links, link)
		f.reply(w, http.StatusCreated, link)

	default:
		f.reply(w, http.StatusNotFound, map[string]any{"error": "404 Not Found"})
	}
}

func (f *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("JOB-TOKEN") != f.JobToken {
		f.reply(w, http.StatusUnauthorized, map[string]any{"message": "401 Unauthorized"})
		return false
	}
	return true
}

func (f *Server) project(w http.ResponseWriter, id string) bool {
	if id != f.ProjectID && id != f.ProjectPath {
		f.reply(w, http.StatusNotFound, map[string]any{"message": "404 Project Not Found"})
		return false
	}
	return true
}

// Snapshot copies the server's state.
func (f *Server) Snapshot() (files map[string][]byte, releases map[string][]map[string]any, requests []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	files = map[string][]byte{}
	for k, v := range f.Files {
		files[k] = v
	}
	releases = map[string][]map[string]any{}
	for k, v := range f.Releases {
		releases[k] = append([]map[string]any(nil), v...)
	}
	return files, releases, append([]string(nil), f.Requests...)
}

func (f *Server) String() string { return fmt.Sprintf("fake GitLab at %s", f.srv.URL) }
