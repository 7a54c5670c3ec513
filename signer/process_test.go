package signer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer"
	"github.com/signet-ci/signet/testbench"
)

// syncBuffer is a bytes.Buffer safe to read while a child process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runSignetd runs the built binary and returns combined output and exit code.
func runSignetd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(fx.signetd, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

func freePort(t *testing.T) string {
	t.Helper()
	addr, err := testbench.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// writeProcessConfig writes a signer.yaml for a real signetd process.
func writeProcessConfig(t *testing.T, dir, listen, auditPath string) string {
	t.Helper()
	y := fmt.Sprintf(`listen: %s
audience: %s
issuers:
  - {name: github, url: %s, ca: %s}
keys:
  - name: release
    purpose: code
    uri: %q
    allow:
      - issuer: github
        claims: {repository_id: %q}
  - name: firmware
    purpose: firmware
    uri: %q
    allow:
      - issuer: github
        claims: {repository_id: %q}
audit: {path: %s}
limits: {rate_per_second: 100000, rate_burst: 100000}
`, listen, testbench.DefaultAudience, fx.gh.URL, fx.ca.CAPath, fx.hsm.URI("ecdsa-p256"), testbench.GitHubRepositoryID,
		fx.hsm.URI("ed25519"), testbench.GitHubRepositoryID, auditPath)
	p := filepath.Join(dir, "signer.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startProcess(t *testing.T, cfgPath, addr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(fx.signetd, "serve", "--config", cfgPath)
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("signetd did not become ready:\n%s", logs.String())
	return nil
}

type received struct {
	ref    core.AuditRef
	digest string
}

// kill -9 during concurrent signing: the log verifies and holds every
// signature a client received; a restart continues the chain.
func TestKill9DuringConcurrentSigning(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	auditPath := filepath.Join(dir, "audit.jsonl")
	cfgPath := writeProcessConfig(t, dir, addr, auditPath)
	cmd := startProcess(t, cfgPath, addr)
	url := "http://" + addr

	var mu sync.Mutex
	var got []received
	var wg sync.WaitGroup
	stop := make(chan struct{})
	client := &http.Client{Timeout: 10 * time.Second}
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			tok, err := fx.gh.Mint(map[string]any{"jti": nil})
			if err != nil {
				return
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("g%d-%d", g, i)
				body, _ := json.Marshal(signReq("release", name))
				req, _ := http.NewRequest(http.MethodPost, url+"/v1/sign", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				if err != nil {
					return // the server is gone
				}
				var sr core.SignResponse
				derr := json.NewDecoder(resp.Body).Decode(&sr)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && derr == nil && len(sr.Signatures) == 1 {
					mu.Lock()
					got = append(got, received{ref: sr.Audit, digest: sr.Signatures[0].SHA256})
					mu.Unlock()
				}
			}
		})
	}
	// Let the clients run, then kill -9 while they are mid-flight.
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d signatures received in 60s; the signer is not answering", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	_ = cmd.Wait()

	n, err := signer.VerifyAuditLog(auditPath)
	if err != nil {
		t.Fatalf("audit log after kill -9: %v", err)
	}
	recs := map[uint64]signer.AuditRecord{}
	for _, line := range readLines(t, auditPath) {
		var r signer.AuditRecord
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		recs[r.Seq] = r
	}
	for _, g := range got {
		r, ok := recs[g.ref.Seq]
		if !ok || r.Hash != g.ref.Hash || r.Decision != "allow" || len(r.Digests) != 1 || r.Digests[0].SHA256 != g.digest {
			t.Fatalf("signature with audit %+v not in the log (record %+v)", g.ref, r)
		}
	}
	t.Logf("kill -9 after %d client-received signatures; log holds %d records", len(got), n)

	// Restart on the same log: the chain continues.
	cmd2 := startProcess(t, cfgPath, addr)
	tok := mint(t, fx.gh, nil)
	body, _ := json.Marshal(signReq("firmware", "after-restart"))
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/sign", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var sr core.SignResponse
	json.NewDecoder(resp.Body).Decode(&sr)
	resp.Body.Close()
	if sr.Audit.Seq != n+1 {
		t.Fatalf("after restart seq %d, want %d", sr.Audit.Seq, n+1)
	}
	// SIGTERM: graceful stop, exit 0.
	if err := cmd2.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd2.Wait(); err != nil {
		t.Fatalf("graceful exit: %v", err)
	}
	if n2, err := signer.VerifyAuditLog(auditPath); err != nil || n2 != n+1 {
		t.Fatalf("final log: %d %v", n2, err)
	}
}

func TestKeysCLI(t *testing.T) {
	uri := fx.hsm.URI("cli-key")
	out, code := runSignetd(t, "keys", "create", "--uri", uri, "--algorithm", "ecdsa-p384")
	if code != 0 || !strings.HasPrefix(out, "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("keys create: %d %s", code, out)
	}
	if _, err := core.ParseVerificationKey([]byte(out)); err != nil {
		t.Fatal(err)
	}
	out, code = runSignetd(t, "keys", "create", "--uri", uri, "--algorithm", "ecdsa-p384")
	if code != 1 || !strings.Contains(out, "already exists") {
		t.Fatalf("duplicate create: %d %s", code, out)
	}
	out, code = runSignetd(t, "keys", "create", "--uri", fx.hsm.URI("cli-x"), "--algorithm", "dsa")
	if code != 1 || !strings.Contains(out, "unknown algorithm") {
		t.Fatalf("bad algorithm: %d %s", code, out)
	}
	if _, code = runSignetd(t, "keys", "create", "--uri", uri); code != 2 {
		t.Fatalf("missing flag: exit %d, want 2", code)
	}
	pinURI := strings.Replace(fx.hsm.URI("cli-y"), "pin-source=file:"+fx.hsm.PINFile, "pin-value=1234", 1)
	out, _ = runSignetd(t, "keys", "create", "--uri", pinURI+"x", "--algorithm", "ed25519")
	if strings.Contains(out, "1234") {
		t.Fatalf("output leaks the PIN: %s", out)
	}
	dir := t.TempDir()
	cfgPath := writeProcessConfig(t, dir, "127.0.0.1:0", filepath.Join(dir, "audit.jsonl"))
	out, code = runSignetd(t, "keys", "list", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "release") || !strings.Contains(out, "ecdsa-p256") || !strings.Contains(out, "firmware") || !strings.Contains(out, "ed25519") {
		t.Fatalf("keys list: %d %s", code, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("audience: x\nkeys: []\n"), 0o600)
	out, code = runSignetd(t, "serve", "--config", bad)
	if code != 1 || !strings.Contains(out, "issuers") || !strings.Contains(out, "audit.path") {
		t.Fatalf("invalid config: %d %s", code, out)
	}
}

// A real signetd process serving TLS: readyz answers over TLS, plain HTTP
// gets no API answer and nothing warns about plain HTTP.
func TestServeTLSProcess(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	cert, key, err := fx.ca.WriteServerCert(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := writeProcessConfig(t, dir, addr, filepath.Join(dir, "audit.jsonl"))
	b, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, append(b, []byte(fmt.Sprintf("tls: {cert: %s, key: %s}\n", cert, key))...), 0o600)
	cmd := exec.Command(fx.signetd, "serve", "--config", cfgPath)
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: fx.ca.TLSClientConfig()}}
	var resp *http.Response
	for i := 0; i < 200; i++ {
		if resp, err = client.Get("https://" + addr + "/readyz"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz over TLS: %v %v\n%s", resp, err, logs.String())
	}
	resp.Body.Close()
	// Plain HTTP to the TLS port does not get an API answer.
	if r, err := http.Get("http://" + addr + "/readyz"); err == nil && r.StatusCode == http.StatusOK {
		t.Fatal("plain HTTP served on a TLS listener")
	}
	if strings.Contains(logs.String(), "plain HTTP") {
		t.Fatalf("TLS server warned about plain HTTP:\n%s", logs.String())
	}
}
