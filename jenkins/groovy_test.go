package jenkins

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/signet-ci/signet/testbench"
)

// harnessConfig is the CONFIG of jenkins/test/harness.groovy.
type harnessConfig struct {
	Vars        string                       `json:"vars"`
	Step        string                       `json:"step"`
	Args        map[string]any               `json:"args"`
	Env         map[string]string            `json:"env"`
	Credentials map[string]harnessCredential `json:"credentials"`
	Exec        bool                         `json:"exec"`
	FakeOutputs any                          `json:"fakeOutputs,omitempty"`
}

type harnessCredential struct {
	Type     string `json:"type"` // string | file
	Secret   string `json:"secret"`
	FileName string `json:"fileName,omitempty"`
}

// harnessResult is the RESULT the harness writes.
type harnessResult struct {
	Calls      []harnessCall  `json:"calls"`
	Result     map[string]any `json:"result"`
	Error      string         `json:"error"`
	Unexpected bool           `json:"unexpected"`
	Leaks      []string       `json:"leaks"`
}

type harnessCall struct {
	Step     string            `json:"step"`
	Vars     []string          `json:"vars"`
	Bindings []map[string]any  `json:"bindings"`
	Script   string            `json:"script"`
	Label    string            `json:"label"`
	Env      map[string]string `json:"env"`
	Args     map[string]any    `json:"args"`
	Message  string            `json:"message"`
	Output   string            `json:"output"`
	ExitCode int               `json:"exitCode"`
}

func (r *harnessResult) find(step string) []harnessCall {
	var out []harnessCall
	for _, c := range r.Calls {
		if c.Step == step {
			out = append(out, c)
		}
	}
	return out
}

// groovyCommand returns Debian's groovy with a JAVA_HOME that works: the
// Debian launcher wants /usr/lib/jvm/default-java unless JAVA_HOME is set.
func groovyCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	groovy, err := testbench.FindTool("groovy")
	if err != nil {
		t.Fatalf("%v (Debian package groovy: apt-get install groovy)", err)
	}
	cmd := exec.Command(groovy, args...)
	env := os.Environ()
	if jh := os.Getenv("JAVA_HOME"); jh == "" || !isFile(filepath.Join(jh, "bin", "java")) {
		java, err := exec.LookPath("java")
		if err != nil {
			t.Fatalf("no Java for groovy: set JAVA_HOME or put java on PATH: %v", err)
		}
		real, err := filepath.EvalSymlinks(java)
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "JAVA_HOME="+filepath.Dir(filepath.Dir(real)))
	}
	cmd.Env = env
	return cmd
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// runHarness runs vars/<step>.groovy under the pipeline harness.
func runHarness(t *testing.T, cfg harnessConfig) *harnessResult {
	t.Helper()
	dir := t.TempDir()
	vars, err := filepath.Abs("vars")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Vars = vars
	if cfg.Step == "" {
		cfg.Step = "signetSign"
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath, resPath := filepath.Join(dir, "config.json"), filepath.Join(dir, "result.json")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	harness, err := filepath.Abs(filepath.Join("test", "harness.groovy"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := groovyCommand(t, harness, cfgPath, resPath)
	if ws := cfg.Env["WORKSPACE"]; ws != "" {
		cmd.Dir = ws
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run groovy: %v\n%s", err, out)
	}
	rb, rerr := os.ReadFile(resPath)
	if rerr != nil {
		t.Fatalf("the harness wrote no result (%v): %v\n%s", err, rerr, out)
	}
	var res harnessResult
	if err := json.Unmarshal(rb, &res); err != nil {
		t.Fatalf("harness result: %v\n%s", err, rb)
	}
	if len(res.Leaks) > 0 {
		t.Fatalf("the token leaked into: %q", res.Leaks)
	}
	if res.Unexpected {
		t.Fatalf("the step failed unexpectedly: %s\n%s", res.Error, out)
	}
	if err != nil {
		t.Fatalf("harness exit: %v\n%s", err, out)
	}
	return &res
}

// fakeOutputs is what signet's adapter writes to SIGNET_OUTPUTS (outputs.go).
func fakeOutputs(ws string) map[string]any {
	return map[string]any{
		"key":        map[string]any{"name": "release", "algorithm": "ecdsa-p256", "purpose": "code", "key_id": "k1"},
		"public_key": filepath.Join(ws, "signer.pub"),
		"provenance": "provenance.intoto.jsonl",
		"signatures": []string{"dist/app.tar.gz.sig"},
		"artifacts":  []map[string]any{{"name": "app.tar.gz", "path": "dist/app.tar.gz", "sha256": strings.Repeat("c", 64), "signature": "dist/app.tar.gz.sig"}},
		"audit_seq":  12,
	}
}

func workspace(t *testing.T) string {
	t.Helper()
	ws := filepath.Join(t.TempDir(), "workspace", "team_app_main")
	for _, f := range []string{"dist/app.tar.gz", "dist/app.tar.gz.sig", "provenance.intoto.jsonl", "signer.pub"} {
		p := filepath.Join(ws, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ws
}

const fakeToken = "eyJhbGciOiJSUzI1NiIsImtpZCI6InNpZ25ldC1vaWRjIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

var outputsPattern = regexp.MustCompile(`^SIGNET_OUTPUTS=(.+)@tmp/signet-outputs-[0-9a-f-]{36}\.json$`)

// TestSignetSignStep runs vars/signetSign.groovy under Debian's groovy with
// the pipeline harness and checks the exact command, the credential
// binding, the environment, archiving and the returned map.
func TestSignetSignStep(t *testing.T) {
	type want struct {
		script   string
		vars     []string // withEnv entries except SIGNET_OUTPUTS (checked by pattern)
		binding  map[string]any
		tokenVar string // variable holding the token (or its file path) in sh's env
		archive  string // archiveArtifacts pattern list; "" = not archived
		err      string // substring of the step's error; then nothing else is checked
	}
	tests := []struct {
		name  string
		args  map[string]any
		env   map[string]string
		creds map[string]harnessCredential
		noOut bool // signet writes no outputs file
		want  want
	}{
		{
			name: "defaults with signer from environment {}",
			args: map[string]any{"key": "release", "artifacts": "dist/*"},
			env:  map[string]string{"SIGNET_SIGNER": "https://signer.example.com", "SIGNET_AUDIENCE": "https://signer.example.com/aud"},
			want: want{
				script: `"$SIGNET_CLI" sign --platform jenkins --signer "$SIGNET_SIGNER" --audience "$SIGNET_AUDIENCE" --key "$SIGNET_KEY" --provenance="$SIGNET_PROVENANCE" -- "$SIGNET_ARTIFACT_1"`,
				vars: []string{"SIGNET_CLI=signet", "SIGNET_SIGNER=https://signer.example.com", "SIGNET_AUDIENCE=https://signer.example.com/aud",
					"SIGNET_KEY=release", "SIGNET_PROVENANCE=true", "SIGNET_ARTIFACT_1=dist/*"},
				binding:  map[string]any{"binding": "string", "credentialsId": "signet-oidc", "variable": "SIGNET_ID_TOKEN"},
				tokenVar: "SIGNET_ID_TOKEN",
				archive:  "dist/app.tar.gz.sig,provenance.intoto.jsonl,signer.pub",
			},
		},
		{
			name: "every option, file credential",
			args: map[string]any{
				"key": "firmware", "artifacts": []string{"dist/*.bin", " build/boot.img "}, "credentialsId": "fw-oidc",
				"credentialsType": "file", "signerUrl": "https://fw-signer.example.com", "audience": "fw",
				"provenance": "false", "provenancePath": "out/fw.intoto.jsonl", "outputDir": "out",
				"caCert": "/etc/ssl/signer-ca.pem", "archive": false, "signet": "/opt/signet/bin/signet",
			},
			creds: map[string]harnessCredential{"fw-oidc": {Type: "file", Secret: fakeToken, FileName: "id_token.txt"}},
			want: want{
				script: `"$SIGNET_CLI" sign --platform jenkins --signer "$SIGNET_SIGNER" --audience "$SIGNET_AUDIENCE" --key "$SIGNET_KEY" --provenance="$SIGNET_PROVENANCE"` +
					` --output-dir "$SIGNET_OUTPUT_DIR" --provenance-path "$SIGNET_PROVENANCE_PATH" --ca-cert "$SIGNET_CA_CERT" -- "$SIGNET_ARTIFACT_1" "$SIGNET_ARTIFACT_2"`,
				vars: []string{"SIGNET_CLI=/opt/signet/bin/signet", "SIGNET_SIGNER=https://fw-signer.example.com", "SIGNET_AUDIENCE=fw",
					"SIGNET_KEY=firmware", "SIGNET_PROVENANCE=false", "SIGNET_OUTPUT_DIR=out", "SIGNET_PROVENANCE_PATH=out/fw.intoto.jsonl",
					"SIGNET_CA_CERT=/etc/ssl/signer-ca.pem", "SIGNET_ARTIFACT_1=dist/*.bin", "SIGNET_ARTIFACT_2=build/boot.img"},
				binding:  map[string]any{"binding": "file", "credentialsId": "fw-oidc", "variable": "SIGNET_ID_TOKEN_FILE"},
				tokenVar: "SIGNET_ID_TOKEN_FILE",
			},
		},
		{
			name: "hostile artifact names stay out of the command",
			args: map[string]any{"key": "release", "artifacts": `dist/$(touch pwned)";rm -rf ~`, "signerUrl": "https://s", "audience": "a`id`"},
			want: want{
				script: `"$SIGNET_CLI" sign --platform jenkins --signer "$SIGNET_SIGNER" --audience "$SIGNET_AUDIENCE" --key "$SIGNET_KEY" --provenance="$SIGNET_PROVENANCE" -- "$SIGNET_ARTIFACT_1"`,
				vars: []string{"SIGNET_CLI=signet", "SIGNET_SIGNER=https://s", "SIGNET_AUDIENCE=a`id`",
					"SIGNET_KEY=release", "SIGNET_PROVENANCE=true", `SIGNET_ARTIFACT_1=dist/$(touch pwned)";rm -rf ~`},
				binding:  map[string]any{"binding": "string", "credentialsId": "signet-oidc", "variable": "SIGNET_ID_TOKEN"},
				tokenVar: "SIGNET_ID_TOKEN",
				archive:  "dist/app.tar.gz.sig,provenance.intoto.jsonl,signer.pub",
			},
		},
		{name: "key missing", args: map[string]any{"artifacts": "dist/*", "signerUrl": "https://s", "audience": "a"},
			want: want{err: "signetSign: 'key' is required"}},
		{name: "artifacts missing", args: map[string]any{"key": "release", "artifacts": " , ", "signerUrl": "https://s", "audience": "a"},
			want: want{err: "signetSign: 'artifacts' is required"}},
		{name: "typo in an argument", args: map[string]any{"key": "release", "artifacts": "dist/*", "credentialId": "x"},
			want: want{err: "signetSign: unknown argument 'credentialId'"}},
		{name: "no signer", args: map[string]any{"key": "release", "artifacts": "dist/*", "audience": "a"},
			want: want{err: "'signerUrl' is required"}},
		{name: "no audience", args: map[string]any{"key": "release", "artifacts": "dist/*", "signerUrl": "https://s"},
			want: want{err: "'audience' is required"}},
		{name: "bad credentialsType", args: map[string]any{"key": "release", "artifacts": "dist/*", "signerUrl": "https://s", "audience": "a", "credentialsType": "text"},
			want: want{err: "credentialsType must be 'string'"}},
		{name: "unknown credential id", args: map[string]any{"key": "release", "artifacts": "dist/*", "signerUrl": "https://s", "audience": "a", "credentialsId": "nope"},
			want: want{err: "Could not find credentials entry with ID 'nope'"}},
		{name: "file credential bound as string",
			args:  map[string]any{"key": "release", "artifacts": "dist/*", "signerUrl": "https://s", "audience": "a"},
			creds: map[string]harnessCredential{"signet-oidc": {Type: "file", Secret: fakeToken}},
			want:  want{err: "is of type 'OpenID Connect id token as file' where 'org.jenkinsci.plugins.plaincredentials.StringCredentials' was expected"}},
		{name: "signet wrote no outputs", noOut: true,
			args: map[string]any{"key": "release", "artifacts": "dist/*", "signerUrl": "https://s", "audience": "a"},
			want: want{err: "did not write its outputs file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ws := workspace(t)
			env := map[string]string{"WORKSPACE": ws, "BUILD_NUMBER": "42", "JENKINS_URL": testJenkins, "PATH": "/usr/bin:/bin"}
			for k, v := range tt.env {
				env[k] = v
			}
			creds := tt.creds
			if creds == nil {
				creds = map[string]harnessCredential{"signet-oidc": {Type: "string", Secret: fakeToken}}
			}
			cfg := harnessConfig{Args: tt.args, Env: env, Credentials: creds}
			if !tt.noOut {
				cfg.FakeOutputs = fakeOutputs(ws)
			}
			res := runHarness(t, cfg)
			if tt.want.err != "" {
				if !strings.Contains(res.Error, tt.want.err) {
					t.Fatalf("error = %q, want it to contain %q", res.Error, tt.want.err)
				}
				for _, c := range res.find("sh") {
					if strings.Contains(tt.want.err, "signetSign: ") && !strings.Contains(tt.want.err, "outputs") {
						t.Fatalf("argument errors must stop the step before sh, but it ran %q", c.Script)
					}
				}
				return
			}
			if res.Error != "" {
				t.Fatalf("step failed: %s", res.Error)
			}

			// withEnv then withCredentials then sh, in that nesting.
			order := []string{}
			for _, c := range res.Calls {
				order = append(order, c.Step)
			}
			wantOrder := "withEnv withCredentials sh fileExists readFile"
			if tt.want.archive != "" {
				wantOrder += " archiveArtifacts"
			}
			if got := strings.Join(order, " "); got != wantOrder {
				t.Fatalf("steps = %q, want %q", got, wantOrder)
			}

			we := res.find("withEnv")[0]
			var vars []string
			outputs := ""
			for _, v := range we.Vars {
				if m := outputsPattern.FindStringSubmatch(v); m != nil {
					if m[1] != ws {
						t.Errorf("outputs file %q not under %s@tmp", v, ws)
					}
					outputs = strings.TrimPrefix(v, "SIGNET_OUTPUTS=")
					continue
				}
				vars = append(vars, v)
			}
			if outputs == "" {
				t.Errorf("withEnv has no SIGNET_OUTPUTS=${WORKSPACE}@tmp/signet-outputs-<uuid>.json: %q", we.Vars)
			}
			assertJSONEqual(t, "withEnv", vars, tt.want.vars)

			wc := res.find("withCredentials")[0]
			if len(wc.Bindings) != 1 {
				t.Fatalf("bindings = %v, want exactly one", wc.Bindings)
			}
			assertJSONEqual(t, "binding", wc.Bindings[0], tt.want.binding)

			sh := res.find("sh")[0]
			if sh.Script != tt.want.script {
				t.Errorf("sh script:\n got %s\nwant %s", sh.Script, tt.want.script)
			}
			if sh.Label != "signet sign" {
				t.Errorf("sh label = %q", sh.Label)
			}
			if strings.Contains(sh.Script, fakeToken) || strings.Contains(sh.Script, "eyJ") {
				t.Errorf("the token is on the command line: %s", sh.Script)
			}
			// The token reaches signet only through the bound variable.
			bound := sh.Env[tt.want.tokenVar]
			switch tt.want.tokenVar {
			case "SIGNET_ID_TOKEN":
				if bound != fakeToken {
					t.Errorf("sh ran with %s=%q, want the credential's token", tt.want.tokenVar, bound)
				}
			case "SIGNET_ID_TOKEN_FILE":
				if !strings.HasPrefix(bound, ws+"@tmp/secretFiles/") {
					t.Errorf("sh ran with %s=%q, want a secret file under %s@tmp", tt.want.tokenVar, bound, ws)
				}
			}
			for k, v := range sh.Env {
				if k != tt.want.tokenVar && strings.Contains(v, fakeToken) {
					t.Errorf("the token is also in $%s", k)
				}
			}

			if tt.want.archive != "" {
				aa := res.find("archiveArtifacts")[0]
				assertJSONEqual(t, "archiveArtifacts", aa.Args, map[string]any{"artifacts": tt.want.archive, "fingerprint": true, "allowEmptyArchive": false})
			}
			wantRes := map[string]any{
				"key": "release", "algorithm": "ecdsa-p256", "keyId": "k1",
				"publicKey": filepath.Join(ws, "signer.pub"), "provenance": "provenance.intoto.jsonl",
				"signatures": []any{"dist/app.tar.gz.sig"},
				"artifacts":  []any{map[string]any{"name": "app.tar.gz", "path": "dist/app.tar.gz", "sha256": strings.Repeat("c", 64), "signature": "dist/app.tar.gz.sig"}},
				"auditSeq":   float64(12), "outputsFile": outputs,
			}
			if tt.want.archive != "" {
				wantRes["archived"] = strings.Split(tt.want.archive, ",")
			}
			assertJSONEqual(t, "returned map", res.Result, wantRes)
		})
	}
}

// TestSignetSignStepArchiveOutsideWorkspace: archiving an output outside the
// workspace fails with a message saying what to do.
func TestSignetSignStepArchiveOutsideWorkspace(t *testing.T) {
	ws := workspace(t)
	out := fakeOutputs(ws)
	out["public_key"] = "/etc/signet/signer.pub"
	res := runHarness(t, harnessConfig{
		Args:        map[string]any{"key": "release", "artifacts": "dist/*", "signerUrl": "https://s", "audience": "a"},
		Env:         map[string]string{"WORKSPACE": ws, "PATH": "/usr/bin:/bin"},
		Credentials: map[string]harnessCredential{"signet-oidc": {Type: "string", Secret: fakeToken}},
		FakeOutputs: out,
	})
	if !strings.Contains(res.Error, "cannot archive /etc/signet/signer.pub: it is outside the workspace") || !strings.Contains(res.Error, "archive: false") {
		t.Fatalf("error = %q", res.Error)
	}
	if len(res.find("archiveArtifacts")) != 0 {
		t.Fatal("archiveArtifacts ran with a path outside the workspace")
	}
}
