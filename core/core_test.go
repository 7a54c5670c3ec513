package core

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPAEKnownAnswers(t *testing.T) {
	tests := []struct {
		typ, body, want string
	}{
		// The worked example of the DSSE protocol spec.
		{"http://example.com/HelloWorld", "hello world", "DSSEv1 29 http://example.com/HelloWorld 11 hello world"},
		{"", "", "DSSEv1 0  0 "},
		// Lengths are bytes, not characters.
		{"t", "é", "DSSEv1 1 t 2 é"},
		{PayloadTypeInToto, "{}", "DSSEv1 28 application/vnd.in-toto+json 2 {}"},
	}
	for _, tt := range tests {
		if got := string(PAE(tt.typ, []byte(tt.body))); got != tt.want {
			t.Errorf("PAE(%q, %q) = %q, want %q", tt.typ, tt.body, got, tt.want)
		}
	}
}

func TestHashKnownAnswers(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content []byte
		alg     HashAlgorithm
		want    string
	}{
		{"empty", nil, SHA256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", []byte("abc"), SHA256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"million-a", bytes.Repeat([]byte("a"), 1_000_000), SHA256, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
		{"abc384", []byte("abc"), SHA384, "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"},
		{"abc512", []byte("abc"), SHA512, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"},
	}
	var files []ArtifactFile
	for _, tt := range tests {
		p := filepath.Join(dir, tt.name)
		if err := os.WriteFile(p, tt.content, 0o644); err != nil {
			t.Fatal(err)
		}
		got, n, err := HashFile(context.Background(), p, tt.alg)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(got) != tt.want || n != int64(len(tt.content)) {
			t.Errorf("%s: %s %x (%d bytes), want %s", tt.name, tt.alg, got, n, tt.want)
		}
		if tt.alg == SHA256 {
			files = append(files, ArtifactFile{Name: tt.name, Path: p})
		}
	}
	// The parallel path gives the same answers, in input order.
	ds, err := HashFiles(context.Background(), files, SHA256, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if d.Name != files[i].Name || d.Hex() != tests[i].want {
			t.Errorf("HashFiles[%d] = %s %s, want %s %s", i, d.Name, d.Hex(), files[i].Name, tests[i].want)
		}
	}
	if _, err := ParseHashAlgorithm("md5"); err == nil {
		t.Error("md5 accepted")
	}
	if a, err := ParseHashAlgorithm("SHA-384"); err != nil || a != SHA384 {
		t.Errorf("ParseHashAlgorithm(SHA-384) = %q, %v", a, err)
	}
}

func TestResolveArtifacts(t *testing.T) {
	dir := t.TempDir()
	mk := func(rel string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(rel), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"dist/a.tar.gz", "dist/b.tar.gz", "dist/sub/c.bin", "other/a.tar.gz", "x.txt"} {
		mk(f)
	}
	j := func(p string) string { return filepath.Join(dir, p) }
	tests := []struct {
		name     string
		patterns []string
		want     []string
		wantErr  string
	}{
		{"file", []string{j("x.txt")}, []string{"x.txt"}, ""},
		{"dir walks sorted", []string{j("dist")}, []string{"dist/a.tar.gz", "dist/b.tar.gz", "dist/sub/c.bin"}, ""},
		{"glob", []string{j("dist/*.tar.gz")}, []string{"dist/a.tar.gz", "dist/b.tar.gz"}, ""},
		{"same file twice is one subject", []string{j("x.txt"), j("*.txt")}, []string{"x.txt"}, ""},
		{"missing", []string{j("nope.bin")}, nil, "does not exist"},
		{"glob matches nothing", []string{j("dist/*.zip")}, nil, "matches no files"},
		{"bad glob", []string{j("dist/[")}, nil, "glob"},
		{"none", nil, nil, "no artifacts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveArtifacts(dir, tt.patterns)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, g := range got {
				names = append(names, g.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("names = %v, want %v", names, tt.want)
			}
		})
	}
	// Duplicate subject names: two files outside the base dir with one base name.
	_, err := ResolveArtifacts(dir, []string{j("other/a.tar.gz"), j("dist/a.tar.gz")})
	if err != nil {
		t.Fatalf("distinct names rejected: %v", err)
	}
	_, err = ResolveArtifacts(j("dist"), []string{j("other/a.tar.gz"), j("dist/a.tar.gz")})
	if err == nil || !strings.Contains(err.Error(), `duplicate subject name "a.tar.gz"`) {
		t.Fatalf("duplicate names: err = %v", err)
	}
}

func TestSumLine(t *testing.T) {
	tests := []struct{ name, want string }{
		{"a.txt", "abc  a.txt\n"},
		{`x\y`, `\abc  x\\y` + "\n"},
		{"n\nl", `\abc  n\nl` + "\n"},
		{"c\rr", `\abc  c\rr` + "\n"},
	}
	for _, tt := range tests {
		if got := SumLine("abc", tt.name); got != tt.want {
			t.Errorf("SumLine(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func testBuildContext() *BuildContext {
	return &BuildContext{
		Platform:  "github",
		BuildType: BuildTypeGitHub,
		ServerURL: "https://github.com",
		ExternalParameters: map[string]any{
			"workflow": map[string]any{"ref": "refs/heads/main", "repository": "https://github.com/octo-org/octo-repo", "path": ".github/workflows/release.yml"},
		},
		InternalParameters: map[string]any{"github": map[string]any{"forged": "yes"}, "runner": "ubuntu <24.04> & more"},
		Asserted:           map[string]string{"toolchain": "go1.26"},
		StartedOn:          time.Date(2026, 11, 21, 8, 0, 0, 123, time.UTC),
	}
}

func TestStatementRoundTripAndIdentity(t *testing.T) {
	for _, tc := range []struct {
		platform string
		claims   map[string]any
		server   string
	}{
		{"github", githubClaims(), "https://github.com"},
		{"github", githubClaims(), "https://ghe.corp.example"},
		{"gitlab", gitlabClaims(), ""},
		{"gitlab", with(gitlabClaims(), "ref_type", "tag", "ref", "v1@2%3"), ""},
		{"jenkins", jenkinsClaims(), ""},
		{"jenkins", map[string]any{"sub": "https://j.example/job/x/", "build_number": "3"}, ""},
		{"jenkins", map[string]any{"sub": "https://j.example/job/x/", "git_url": "git@git.example.com:o/r.git"}, ""},
	} {
		t.Run(tc.platform+"/"+tc.server, func(t *testing.T) {
			id, err := IdentityFromClaims(tc.platform, tc.server, tc.claims)
			if err != nil {
				t.Fatal(err)
			}
			bc := testBuildContext()
			bc.Platform = tc.platform
			st, err := BuildStatement([]Subject{
				{Name: "dist/app.tar.gz", Digest: map[string]string{"sha256": strings.Repeat("ab", 32)}},
				{Name: "dist/<odd>&name", Digest: map[string]string{"sha256": strings.Repeat("cd", 32)}},
			}, id, bc)
			if err != nil {
				t.Fatal(err)
			}
			// Byte-stable: canonicalizing again, and parsing + re-marshalling
			// through the in-toto bindings, gives identical bytes.
			again, err := CanonicalJSON(st)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, st) {
				t.Fatalf("statement not byte-stable:\n%s\n%s", st, again)
			}
			var generic any
			if err := json.Unmarshal(st, &generic); err != nil {
				t.Fatal(err)
			}
			re, _ := json.Marshal(generic)
			if re2, _ := CanonicalJSON(re); !bytes.Equal(re2, st) {
				t.Fatalf("generic round trip differs:\n%s\n%s", st, re2)
			}
			got, err := IdentityFromStatement(st)
			if err != nil {
				t.Fatalf("IdentityFromStatement: %v\n%s", err, st)
			}
			if err := id.Diff(got); err != nil {
				t.Fatalf("identity did not survive the statement: %v\n%s", err, st)
			}
			s := string(st)
			for _, want := range []string{
				`"_type":"https://in-toto.io/Statement/v1"`,
				`"predicateType":"https://slsa.dev/provenance/v1"`,
				`"buildAsserted":{"toolchain":"go1.26"}`,
				`"startedOn":"2026-11-21T08:00:00Z"`,
				`"builder":{"id":"` + id.BuilderID + `"}`,
				`"ubuntu <24.04> & more"`,
			} {
				if !strings.Contains(s, want) {
					t.Errorf("statement lacks %s:\n%s", want, s)
				}
			}
			if strings.Contains(s, "forged") {
				t.Errorf("adapter value leaked into the reserved internalParameters.%s:\n%s", tc.platform, s)
			}
		})
	}
}

func TestIdentityFromStatementRefusals(t *testing.T) {
	id, err := IdentityFromClaims("github", "", githubClaims())
	if err != nil {
		t.Fatal(err)
	}
	st, err := BuildStatement([]Subject{{Name: "a", Digest: map[string]string{"sha256": strings.Repeat("00", 32)}}}, id, testBuildContext())
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(st, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	bd := func(m map[string]any) map[string]any {
		return m["predicate"].(map[string]any)["buildDefinition"].(map[string]any)
	}
	tests := []struct {
		name    string
		stmt    []byte
		wantErr string
	}{
		{"not json", []byte("{"), "not a valid in-toto statement"},
		{"empty", nil, "empty"},
		{"old type", edit(func(m map[string]any) { m["_type"] = "https://in-toto.io/Statement/v0.1" }), "_type"},
		{"other predicate", edit(func(m map[string]any) { m["predicateType"] = "https://example.com/x" }), "predicateType"},
		{"unknown top-level field", edit(func(m map[string]any) { m["extra"] = 1 }), "not a valid in-toto statement"},
		{"no subjects", edit(func(m map[string]any) { delete(m, "subject") }), "subject"},
		{"two platform keys", edit(func(m map[string]any) {
			bd(m)["internalParameters"].(map[string]any)["gitlab"] = map[string]any{}
		}), "exactly one of"},
		{"unvouched key in identity area", edit(func(m map[string]any) {
			bd(m)["internalParameters"].(map[string]any)["github"].(map[string]any)["workflow"] = "x"
		}), "internalParameters.github.workflow is not a token-derived field"},
		{"bad source uri", edit(func(m map[string]any) {
			bd(m)["resolvedDependencies"].([]any)[0].(map[string]any)["uri"] = "https://x"
		}), `does not start with "git+"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := IdentityFromStatement(tt.stmt)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	// A changed identity value parses but Diff names it.
	forged := edit(func(m map[string]any) {
		bd(m)["resolvedDependencies"].([]any)[0].(map[string]any)["uri"] = "git+https://github.com/evil/repo@refs/heads/main"
	})
	got, err := IdentityFromStatement(forged)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Diff(got); err == nil || !strings.HasPrefix(err.Error(), "source_repo:") {
		t.Fatalf("Diff = %v, want source_repo mismatch", err)
	}
	// buildAsserted is ignored by the identity.
	asserted := edit(func(m map[string]any) {
		bd(m)["externalParameters"].(map[string]any)["buildAsserted"] = map[string]any{"source_repo": "https://evil"}
	})
	if got, err := IdentityFromStatement(asserted); err != nil || id.Diff(got) != nil {
		t.Fatalf("buildAsserted changed the identity: %v %v", err, id.Diff(got))
	}
}

func TestBuildStatementChunksSplits(t *testing.T) {
	id, err := IdentityFromClaims("gitlab", "", gitlabClaims())
	if err != nil {
		t.Fatal(err)
	}
	var subjects []Subject
	for i := 0; i < 3000; i++ {
		subjects = append(subjects, Subject{Name: fmt.Sprintf("dist/file-%05d.bin", i), Digest: map[string]string{"sha256": fmt.Sprintf("%064x", i)}})
	}
	chunks, err := buildStatementChunks(subjects, id, nil, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) < 4 {
		t.Fatalf("got %d statements, want several under 64 KiB", len(chunks))
	}
	n := 0
	for i, c := range chunks {
		st := c.statement
		if len(st) > 64<<10 {
			t.Errorf("statement %d is %d bytes", i, len(st))
		}
		ps, err := ParseStatement(st)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps.Subjects()) != len(c.subjects) {
			t.Fatalf("statement %d lists %d subjects, its chunk %d (the 413 re-split works on the chunk)", i, len(ps.Subjects()), len(c.subjects))
		}
		for _, s := range ps.Subjects() {
			if s.Name != subjects[n].Name {
				t.Fatalf("subject %d is %s, want %s", n, s.Name, subjects[n].Name)
			}
			n++
		}
	}
	if n != len(subjects) {
		t.Fatalf("statements cover %d subjects, want %d", n, len(subjects))
	}
	if _, err := BuildStatement([]Subject{{Name: "a", Digest: map[string]string{"sha256": "00"}}, {Name: "a", Digest: map[string]string{"sha256": "01"}}}, id, nil); err == nil || !strings.Contains(err.Error(), "duplicate subject") {
		t.Fatalf("duplicate subjects: %v", err)
	}
}

// testKeys returns one local signer per supported algorithm.
func testKeys(t testing.TB) map[string]*LocalSigner {
	t.Helper()
	out := map[string]*LocalSigner{}
	add := func(name string, k crypto.Signer, pss bool) {
		s, err := NewLocalSigner(k, pss)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = s
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	add("ecdsa-p256", p256, false)
	add("ecdsa-p384", p384, false)
	add("rsa-pkcs1v15", rsaKey, false)
	add("rsa-pss", rsaKey, true)
	add("ed25519", ed, false)
	return out
}

func TestDSSESignVerifyAllAlgorithms(t *testing.T) {
	ctx := context.Background()
	payload := []byte(`{"_type":"https://in-toto.io/Statement/v1"}`)
	keys := testKeys(t)
	for name, s := range keys {
		t.Run(name, func(t *testing.T) {
			env, err := SignEnvelope(ctx, s, PayloadTypeInToto, payload)
			if err != nil {
				t.Fatal(err)
			}
			got, err := VerifyEnvelope(env, s.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("payload changed")
			}
			line, _ := EnvelopesJSONL([]Envelope{*env})
			if _, _, err := ParseEnvelope(line); err != nil {
				t.Fatalf("own envelope refused: %v", err)
			}
			// Tampered payload.
			bad := *env
			bad.Payload = base64.StdEncoding.EncodeToString(append([]byte{}, append(payload, ' ')...))
			if _, err := VerifyEnvelope(&bad, s.Public()); err == nil || !strings.Contains(err.Error(), "dsse signature") {
				t.Fatalf("tampered payload: %v", err)
			}
			// Tampered payload type.
			bad = *env
			bad.PayloadType = "text/plain"
			if _, err := VerifyEnvelope(&bad, s.Public()); err == nil {
				t.Fatal("changed payloadType accepted")
			}
			// Wrong key.
			other := keys["ecdsa-p256"]
			if name == "ecdsa-p256" {
				other = keys["ed25519"]
			}
			if _, err := VerifyEnvelope(env, other.Public()); err == nil {
				t.Fatal("verified with another key")
			}
			// .sig over a digest.
			d := make([]byte, 32)
			rand.Read(d)
			sig, err := s.SignDigest(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyDigest(s.Public(), d, sig); err != nil {
				t.Fatalf("VerifyDigest: %v", err)
			}
			d[0] ^= 1
			if err := VerifyDigest(s.Public(), d, sig); err == nil {
				t.Fatal("changed digest verified")
			}
		})
	}
}

func TestParseEnvelopeDefensive(t *testing.T) {
	good := `{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"k","sig":"AAAA"}]}`
	tests := []struct {
		name, in, wantErr string
	}{
		{"good", good, ""},
		{"url-safe unpadded base64 accepted", `{"payloadType":"x","payload":"e30","signatures":[{"sig":"_-8"}]}`, ""},
		{"empty", "", "empty"},
		{"not json", "nope", "not valid DSSE JSON"},
		{"unknown field", `{"payloadType":"x","payload":"e30=","signatures":[{"sig":"AAAA"}],"extra":1}`, "unknown field"},
		{"unknown signature field", `{"payloadType":"x","payload":"e30=","signatures":[{"sig":"AAAA","cert":"x"}]}`, "unknown field"},
		{"trailing data", good + ` {}`, "trailing data"},
		{"no payload type", `{"payload":"e30=","signatures":[{"sig":"AAAA"}]}`, "no payloadType"},
		{"no signatures", `{"payloadType":"x","payload":"e30=","signatures":[]}`, "no signatures"},
		{"bad payload base64", `{"payloadType":"x","payload":"%%%","signatures":[{"sig":"AAAA"}]}`, "payload is not base64"},
		{"bad sig base64", `{"payloadType":"x","payload":"e30=","signatures":[{"sig":"!!"}]}`, "signature 0 is not base64"},
		{"huge sig", `{"payloadType":"x","payload":"e30=","signatures":[{"sig":"` + strings.Repeat("A", MaxSignatureB64+4) + `"}]}`, "over the limit"},
		{"too many signatures", `{"payloadType":"x","payload":"e30=","signatures":[` + strings.TrimSuffix(strings.Repeat(`{"sig":"AAAA"},`, MaxEnvelopeSignatures+1), ",") + `]}`, "signatures, over the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseEnvelope([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	big := bytes.Repeat([]byte(" "), MaxEnvelopeBytes+1)
	big[0] = '{'
	if _, _, err := ParseEnvelope(append(big, '}')); err == nil || !strings.Contains(err.Error(), "byte limit") {
		t.Fatalf("oversized envelope: %v", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out", "a.sig")
	if err := WriteFileAtomic(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Fatalf("content %q", b)
	}
	// An aborted staging leaves neither outputs nor temp files.
	var s Staging
	if err := s.Add(filepath.Join(dir, "out", "b.sig"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Abort()
	entries, _ := os.ReadDir(filepath.Join(dir, "out"))
	if len(entries) != 1 || entries[0].Name() != "a.sig" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only a.sig", names)
	}
}

func FuzzParseEnvelope(f *testing.F) {
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"k","sig":"AAAA"}]}`))
	f.Add([]byte(`{"payloadType":"x","payload":"","signatures":[{"sig":""}]}`))
	f.Add([]byte(`{"payloadType":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("{\"payloadType\":\"x\",\"payload\":\"e30=\",\"signatures\":[{\"sig\":\"AAAA\"}]}\n{\"x\":1}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, payload, err := ParseEnvelope(data)
		if err != nil {
			return
		}
		if env.PayloadType == "" || len(env.Signatures) == 0 {
			t.Fatalf("accepted an envelope without type or signatures: %q", data)
		}
		// What was accepted re-encodes and parses to the same payload.
		line, err := EnvelopesJSONL([]Envelope{*env})
		if err != nil {
			t.Fatal(err)
		}
		_, p2, err := ParseEnvelope(line)
		if err != nil || !bytes.Equal(p2, payload) {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

func FuzzParseStatement(f *testing.F) {
	id, _ := IdentityFromClaims("github", "", githubClaims())
	st, _ := BuildStatement([]Subject{{Name: "a", Digest: map[string]string{"sha256": strings.Repeat("00", 32)}}}, id, testBuildContext())
	f.Add(st)
	jid, _ := IdentityFromClaims("jenkins", "", jenkinsClaims())
	st2, _ := BuildStatement([]Subject{{Name: "b", Digest: map[string]string{"sha256": "11"}}}, jid, nil)
	f.Add(st2)
	f.Add([]byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"00"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := ParseStatement(data)
		if err != nil {
			return
		}
		if len(ps.Subjects()) == 0 {
			t.Fatal("accepted a statement without subjects")
		}
		id, err := ps.Identity()
		if err != nil {
			return
		}
		if id.Platform == "" {
			t.Fatal("identity without platform")
		}
		if c, err := CanonicalJSON(data); err == nil {
			if c2, err := CanonicalJSON(c); err != nil || !bytes.Equal(c, c2) {
				t.Fatalf("canonical JSON not idempotent: %v", err)
			}
		}
	})
}

func TestHashFilesErrors(t *testing.T) {
	dir := t.TempDir()
	var files []ArtifactFile
	for i := 0; i < 50; i++ {
		p := filepath.Join(dir, fmt.Sprintf("f%02d", i))
		writeFile(t, p, []byte(p))
		files = append(files, ArtifactFile{Name: filepath.Base(p), Path: p})
	}
	files[30].Path = filepath.Join(dir, "vanished")
	_, err := HashFiles(context.Background(), files, SHA256, 2, nil)
	if err == nil || !strings.Contains(err.Error(), "hash f30") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v, want the vanished file named", err)
	}
	ds, errs, err := HashFilesAll(context.Background(), files, SHA256, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range files {
		if (errs[i] != nil) != (i == 30) || (i != 30 && ds[i].Name != files[i].Name) {
			t.Fatalf("file %d: err %v digest %+v", i, errs[i], ds[i])
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := HashFiles(ctx, files[:3], SHA256, 1, nil); err == nil {
		t.Fatal("cancelled context hashed anyway")
	}
}
