package actions

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
)

// mapEnv turns a map into a core.Env.
func mapEnv(m map[string]string) core.Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func testPlatform(env map[string]string) (*platform, *bytes.Buffer) {
	var out bytes.Buffer
	return newPlatform(mapEnv(env), &out, 2, time.Millisecond), &out
}

func TestNewReturnsGitHubPlatform(t *testing.T) {
	p := New(mapEnv(nil))
	if p.Name() != "github" {
		t.Fatalf("Name() = %q, want github", p.Name())
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{"GITHUB_ACTIONS": "true"}, true},
		{map[string]string{"GITHUB_ACTIONS": "false"}, false},
		{map[string]string{"GITHUB_ACTIONS": ""}, false},
		{map[string]string{"GITLAB_CI": "true", "CI": "true"}, false},
		{nil, false},
	} {
		p, _ := testPlatform(nil)
		if got := p.Detect(mapEnv(tc.env)); got != tc.want {
			t.Errorf("Detect(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

// baseEnv is what a runner sets for a push to main of octo-org/app.
func baseEnv(t *testing.T, event string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	ev := filepath.Join(dir, "event.json")
	if err := os.WriteFile(ev, []byte(event), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"GITHUB_ACTIONS":             "true",
		"GITHUB_SERVER_URL":          "https://github.example.com/",
		"GITHUB_REPOSITORY":          "octo-org/app",
		"GITHUB_REPOSITORY_ID":       "1296269",
		"GITHUB_REPOSITORY_OWNER_ID": "9919",
		"GITHUB_WORKFLOW_REF":        "octo-org/app/.github/workflows/release.yml@refs/tags/v1.2.3@rc",
		"GITHUB_EVENT_NAME":          "push",
		"GITHUB_EVENT_PATH":          ev,
		"GITHUB_REF":                 "refs/tags/v1.2.3@rc",
		"GITHUB_SHA":                 "ffac537e6cbbf934b08745a378932722df287a53",
		"GITHUB_ACTOR":               "octocat",
		"GITHUB_WORKFLOW":            "release",
		"GITHUB_JOB":                 "build",
		"GITHUB_RUN_ID":              "77",
		"GITHUB_RUN_NUMBER":          "12",
		"GITHUB_RUN_ATTEMPT":         "2",
		"RUNNER_ENVIRONMENT":         "github-hosted",
		"RUNNER_OS":                  "Linux",
	}
}

func TestBuildContext(t *testing.T) {
	push := `{"head_commit":{"id":"ffac537e6cbbf934b08745a378932722df287a53"},"sender":{"login":"octocat"}}`
	dispatch := `{"inputs":{"channel":"beta","dry":false},"sender":{"login":"hubot"}}`
	for _, tc := range []struct {
		name     string
		event    string
		override map[string]string
		wantExt  map[string]any
		wantAss  map[string]string // subset
	}{
		{
			name:  "push with a tag ref containing @",
			event: push,
			wantExt: map[string]any{"workflow": map[string]any{
				"ref": "refs/tags/v1.2.3@rc", "repository": "https://github.example.com/octo-org/app", "path": ".github/workflows/release.yml",
			}},
			wantAss: map[string]string{"github.actor": "octocat", "event.head_commit.id": "ffac537e6cbbf934b08745a378932722df287a53", "github.run_number": "12", "event.sender": "octocat"},
		},
		{
			name:     "workflow_dispatch carries inputs",
			event:    dispatch,
			override: map[string]string{"GITHUB_EVENT_NAME": "workflow_dispatch"},
			wantExt: map[string]any{
				"workflow": map[string]any{"ref": "refs/tags/v1.2.3@rc", "repository": "https://github.example.com/octo-org/app", "path": ".github/workflows/release.yml"},
				"inputs":   map[string]any{"channel": "beta", "dry": false},
			},
			wantAss: map[string]string{"event.sender": "hubot"},
		},
		{
			name:     "no GITHUB_WORKFLOW_REF falls back to GITHUB_REF",
			event:    `{}`,
			override: map[string]string{"GITHUB_WORKFLOW_REF": "", "GITHUB_REF": "refs/heads/main"},
			wantExt:  map[string]any{"workflow": map[string]any{"ref": "refs/heads/main", "repository": "https://github.example.com/octo-org/app"}},
			wantAss:  map[string]string{"github.ref": "refs/heads/main"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := baseEnv(t, tc.event)
			for k, v := range tc.override {
				env[k] = v
			}
			p, _ := testPlatform(env)
			bc, err := p.BuildContext(context.Background(), nil)
			if err != nil {
				t.Fatalf("BuildContext: %v", err)
			}
			if bc.Platform != "github" || bc.BuildType != "https://actions.github.io/buildtypes/workflow/v1" {
				t.Errorf("platform/buildType = %q/%q", bc.Platform, bc.BuildType)
			}
			if bc.ServerURL != "https://github.example.com" {
				t.Errorf("ServerURL = %q, want trailing slash trimmed", bc.ServerURL)
			}
			if !reflect.DeepEqual(bc.ExternalParameters, tc.wantExt) {
				t.Errorf("ExternalParameters =\n%#v\nwant\n%#v", bc.ExternalParameters, tc.wantExt)
			}
			if len(bc.InternalParameters) != 0 {
				t.Errorf("InternalParameters = %v; core fills internalParameters.github from the token", bc.InternalParameters)
			}
			for k, v := range tc.wantAss {
				if bc.Asserted[k] != v {
					t.Errorf("Asserted[%q] = %q, want %q", k, bc.Asserted[k], v)
				}
			}
		})
	}
}

func TestBuildContextErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		event    string
		override map[string]string
		want     string
	}{
		{"malformed event payload", `{"x":`, nil, "GITHUB_EVENT_PATH"},
		{"workflow ref of another repository", `{}`, map[string]string{"GITHUB_WORKFLOW_REF": "evil/app/.github/workflows/x.yml@refs/heads/main"}, "does not start with GITHUB_REPOSITORY"},
		{"workflow ref without @", `{}`, map[string]string{"GITHUB_WORKFLOW_REF": "octo-org/app/.github/workflows/x.yml"}, "OWNER/REPO/PATH@REF"},
		{"no repository", `{}`, map[string]string{"GITHUB_REPOSITORY": ""}, "GITHUB_REPOSITORY is not set"},
		{"bad run number", `{}`, map[string]string{"GITHUB_RUN_NUMBER": "twelve"}, "GITHUB_*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := baseEnv(t, tc.event)
			for k, v := range tc.override {
				env[k] = v
			}
			p, _ := testPlatform(env)
			_, err := p.BuildContext(context.Background(), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("BuildContext error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// tokenServer is the runner's ID-token endpoint: bearer required, audience
// honoured, {"value": ...} answered. failFirst answers 503 that many times.
type tokenServer struct {
	*httptest.Server
	bearer    string
	failFirst int32
	calls     atomic.Int32
	gotAud    atomic.Value
	gotQuery  atomic.Value
	value     string
}

func newTokenServer(t *testing.T, failFirst int32, value string) *tokenServer {
	ts := &tokenServer{bearer: "runtime-secret-123", failFirst: failFirst, value: value}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := ts.calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+ts.bearer {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"message":"The user is not authorized to request an OIDC token"}`)
			return
		}
		if n <= ts.failFirst {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		ts.gotAud.Store(r.URL.Query().Get("audience"))
		ts.gotQuery.Store(r.URL.RawQuery)
		json.NewEncoder(w).Encode(map[string]any{"count": len(ts.value), "value": ts.value})
	}))
	t.Cleanup(ts.Close)
	return ts
}

func TestIDToken(t *testing.T) {
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln"
	aud := "https://signer.example.com/a b?x=1&y"
	for _, tc := range []struct {
		name      string
		failFirst int32
		bearer    string
		value     string
		wantErr   string
		wantCalls int32
	}{
		{name: "ok", bearer: "runtime-secret-123", value: jwt, wantCalls: 1},
		{name: "retries 5xx then succeeds", failFirst: 2, bearer: "runtime-secret-123", value: jwt, wantCalls: 3},
		{name: "gives up after retries", failFirst: 100, bearer: "runtime-secret-123", value: jwt, wantErr: "giving up", wantCalls: 3},
		{name: "wrong bearer is not retried", bearer: "nope", value: jwt, wantErr: "not authorized", wantCalls: 1},
		{name: "empty value", bearer: "runtime-secret-123", value: "", wantErr: "without a token", wantCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTokenServer(t, tc.failFirst, tc.value)
			p, out := testPlatform(map[string]string{
				"ACTIONS_ID_TOKEN_REQUEST_URL":   ts.URL + "/idtoken?api-version=2.0",
				"ACTIONS_ID_TOKEN_REQUEST_TOKEN": tc.bearer,
			})
			tok, err := p.IDToken(context.Background(), aud)
			if got := ts.calls.Load(); got != tc.wantCalls {
				t.Errorf("endpoint called %d times, want %d", got, tc.wantCalls)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("IDToken error = %v, want one containing %q", err, tc.wantErr)
				}
				if !strings.Contains(out.String(), "::error title=signet::") {
					t.Errorf("no ::error annotation in %q", out.String())
				}
				if tok != "" {
					t.Errorf("token %q returned with an error", tok)
				}
				return
			}
			if err != nil {
				t.Fatalf("IDToken: %v", err)
			}
			if tok != jwt {
				t.Errorf("token = %q, want %q", tok, jwt)
			}
			if got := ts.gotAud.Load(); got != aud {
				t.Errorf("endpoint saw audience %q, want %q", got, aud)
			}
			q, _ := ts.gotQuery.Load().(string)
			if !strings.Contains(q, "api-version=2.0") || strings.Contains(q, " ") {
				t.Errorf("query %q lost the runtime's parameters or is not URL-encoded", q)
			}
			if !strings.Contains(out.String(), "::add-mask::"+jwt+"\n") {
				t.Errorf("token not masked; stdout = %q", out.String())
			}
		})
	}
}

func TestIDTokenMissingPermission(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "x"},
		{"ACTIONS_ID_TOKEN_REQUEST_URL": "http://127.0.0.1:1/idtoken"},
		{"ACTIONS_ID_TOKEN_REQUEST_URL": "", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": ""},
	} {
		p, out := testPlatform(env)
		_, err := p.IDToken(context.Background(), "https://signer.example.com")
		if !errors.Is(err, errNoIDTokenPermission) {
			t.Errorf("env %v: error = %v, want the missing-permission error", env, err)
		}
		want := "::error title=signet::this job lacks `permissions: id-token: write`"
		if !strings.Contains(out.String(), want) {
			t.Errorf("env %v: stdout %q lacks %q", env, out.String(), want)
		}
	}
}

func TestIDTokenNeedsAudience(t *testing.T) {
	p, out := testPlatform(map[string]string{"ACTIONS_ID_TOKEN_REQUEST_URL": "http://x", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "y"})
	if _, err := p.IDToken(context.Background(), " "); err == nil || !strings.Contains(err.Error(), "`audience` input") {
		t.Fatalf("error = %v, want one naming the audience input", err)
	}
	if !strings.Contains(out.String(), "::error") {
		t.Errorf("no annotation: %q", out.String())
	}
}

// parseOutputFile reads GITHUB_OUTPUT in the runner's heredoc format.
func parseOutputFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		if lines[i] == "" {
			continue
		}
		name, delim, ok := strings.Cut(lines[i], "<<")
		if !ok {
			t.Fatalf("GITHUB_OUTPUT line %q is not NAME<<DELIM", lines[i])
		}
		var val []string
		for i++; i < len(lines) && lines[i] != delim; i++ {
			val = append(val, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("output %q: delimiter %q never closed", name, delim)
		}
		out[name] = strings.Join(val, "\n")
	}
	return out
}

func sampleResult() *core.Result {
	return &core.Result{
		Key: core.KeyInfo{Name: "release", Algorithm: "ecdsa-p256", KeyID: "ab12"},
		Artifacts: []core.ArtifactResult{
			{Name: "dist/app.tar.gz", Path: "/w/dist/app.tar.gz", SHA256: strings.Repeat("a", 64), SignaturePath: "/w/dist/app.tar.gz.sig"},
			{Name: "dist/a|b.bin", Path: "/w/dist/a|b.bin", SHA256: strings.Repeat("b", 64), SignaturePath: "/w/dist/a|b.bin.sig"},
		},
		ProvenancePath: "/w/dist/provenance.intoto.jsonl",
		PublicKeyPath:  "/w/dist/signer.pub",
		AuditSeq:       41,
	}
}

func TestPublish(t *testing.T) {
	dir := t.TempDir()
	outFile, sumFile := filepath.Join(dir, "output"), filepath.Join(dir, "summary.md")
	if err := os.WriteFile(sumFile, []byte("# earlier step\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _ := testPlatform(map[string]string{"GITHUB_OUTPUT": outFile, "GITHUB_STEP_SUMMARY": sumFile})
	if err := p.Publish(context.Background(), sampleResult()); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := parseOutputFile(t, outFile)
	if got["signatures"] != "/w/dist/app.tar.gz.sig\n/w/dist/a|b.bin.sig" {
		t.Errorf("signatures = %q", got["signatures"])
	}
	if got["provenance"] != "/w/dist/provenance.intoto.jsonl" || got["audit-seq"] != "41" || got["public-key"] != "/w/dist/signer.pub" {
		t.Errorf("outputs = %v", got)
	}
	var digests []digestOutput
	if err := json.Unmarshal([]byte(got["digests"]), &digests); err != nil {
		t.Fatalf("digests output is not JSON: %v: %q", err, got["digests"])
	}
	want := []digestOutput{
		{Name: "dist/app.tar.gz", Path: "/w/dist/app.tar.gz", SHA256: strings.Repeat("a", 64), Signature: "/w/dist/app.tar.gz.sig"},
		{Name: "dist/a|b.bin", Path: "/w/dist/a|b.bin", SHA256: strings.Repeat("b", 64), Signature: "/w/dist/a|b.bin.sig"},
	}
	if !reflect.DeepEqual(digests, want) {
		t.Errorf("digests = %+v, want %+v", digests, want)
	}

	sum, err := os.ReadFile(sumFile)
	if err != nil {
		t.Fatal(err)
	}
	s := string(sum)
	for _, w := range []string{
		"# earlier step\n", // appended, not replaced
		"| artifact | sha256 | signature file | key | audit sequence |",
		"| dist/app.tar.gz | `" + strings.Repeat("a", 64) + "` | /w/dist/app.tar.gz.sig | release (ecdsa-p256) | 41 |",
		`| dist/a\|b.bin | ` + "`" + strings.Repeat("b", 64) + "`" + ` | /w/dist/a\|b.bin.sig | release (ecdsa-p256) | 41 |`,
		"/w/dist/provenance.intoto.jsonl",
		"`ab12`",
	} {
		if !strings.Contains(s, w) {
			t.Errorf("summary lacks %q:\n%s", w, s)
		}
	}
}

func TestPublishErrors(t *testing.T) {
	dir := t.TempDir()
	t.Run("unwritable output file", func(t *testing.T) {
		p, _ := testPlatform(map[string]string{"GITHUB_OUTPUT": filepath.Join(dir, "missing-dir", "out")})
		err := p.Publish(context.Background(), sampleResult())
		if err == nil || !strings.Contains(err.Error(), "GITHUB_OUTPUT") {
			t.Fatalf("error = %v, want one naming GITHUB_OUTPUT", err)
		}
	})
	t.Run("reserved delimiter in a path", func(t *testing.T) {
		out := filepath.Join(dir, "out2")
		p, _ := testPlatform(map[string]string{"GITHUB_OUTPUT": out})
		res := sampleResult()
		res.ProvenancePath = "/w/" + fileCommandDelimiter
		if err := p.Publish(context.Background(), res); err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Fatalf("error = %v, want the reserved-delimiter refusal", err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("GITHUB_OUTPUT written despite the refusal (stat err %v)", err)
		}
	})
	t.Run("no runner files is not an error", func(t *testing.T) {
		p, _ := testPlatform(map[string]string{})
		if err := p.Publish(context.Background(), sampleResult()); err != nil {
			t.Fatalf("Publish without GITHUB_OUTPUT: %v", err)
		}
	})
}

func TestReportError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want []string
	}{
		{
			name: "policy refusal carries the signer's reason",
			err: fmt.Errorf("sign: %w", &core.APIError{Code: core.ErrCodePolicyDenied,
				Message: "no allow rule of key \"release\" matches repository octo-org/app ref refs/heads/dev", RequestID: "r-1"}),
			want: []string{"::error title=signet::the signer refused the request (policy_denied): no allow rule of key \"release\" matches repository octo-org/app ref refs/heads/dev (request id r-1)", "ask the signer's operator"},
		},
		{
			name: "other failure",
			err:  errors.New("write signed/x.sig: disk full"),
			want: []string{"::error title=signet::signing failed: write signed/x.sig: disk full"},
		},
		{
			name: "unreachable signer names the input to check",
			err: fmt.Errorf("look up key: signer unreachable: %w", &url.Error{Op: "Get", URL: "https://signer.example.com/v1/keys/release",
				Err: errors.New("dial tcp: connection refused")}),
			want: []string{"connection refused", "The signer https://signer.example.com could not be reached", "`signer-url`"},
		},
		{
			name: "untrusted TLS certificate points at ca-cert",
			err: fmt.Errorf("look up key: %w", &url.Error{Op: "Get", URL: "https://signer.example.com/v1/keys/release",
				Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}),
			want: []string{"not trusted", "`ca-cert`"},
		},
		{
			name: "usage error points at the inputs",
			err:  &core.UsageError{Msg: `glob "dist/*.zip" matches no files`},
			want: []string{`glob "dist/*.zip" matches no files`, "`artifacts`"},
		},
		{
			name: "multi-line message stays one annotation",
			err:  errors.New("line one\nline two"),
			want: []string{"line one%0Aline two"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, out := testPlatform(map[string]string{"SIGNET_SIGNER": "https://signer.example.com"})
			p.ReportError(context.Background(), tc.err)
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("annotation %q lacks %q", out.String(), w)
				}
			}
			if strings.Count(out.String(), "\n") != 1 {
				t.Errorf("want exactly one annotation line, got %q", out.String())
			}
		})
	}
}

func TestReportErrorDoesNotRepeatTokenAnnotation(t *testing.T) {
	p, out := testPlatform(map[string]string{})
	_, err := p.IDToken(context.Background(), "https://signer.example.com")
	wrapped := fmt.Errorf("get the github OIDC token: %w", err)
	p.ReportError(context.Background(), wrapped)
	if n := strings.Count(out.String(), "::error"); n != 1 {
		t.Fatalf("want one annotation for the missing permission, got %d: %q", n, out.String())
	}
	p.ReportError(context.Background(), errors.New("something else"))
	if n := strings.Count(out.String(), "::error"); n != 2 {
		t.Fatalf("a different error must still be annotated; got %q", out.String())
	}
}
