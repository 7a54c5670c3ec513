package testbench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/signet-ci/signet/signer"
)

// Binaries are the paths of the built command-line tools.
type Binaries struct {
	Signet  string
	Signetd string
}

// ModuleRoot finds the directory of the github.com/signet-ci/signet module:
// upwards from the working directory, then from this source file.
func ModuleRoot() (string, error) {
	try := func(dir string) (string, bool) {
		for d := dir; ; d = filepath.Dir(d) {
			b, err := os.ReadFile(filepath.Join(d, "go.mod"))
			if err == nil && bytes.Contains(b, []byte("module github.com/signet-ci/signet\n")) {
				return d, true
			}
			if filepath.Dir(d) == d {
				return "", false
			}
		}
	}
	if wd, err := os.Getwd(); err == nil {
		if d, ok := try(wd); ok {
			return d, nil
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		if d, ok := try(filepath.Dir(file)); ok {
			return d, nil
		}
	}
	return "", errors.New("cannot find the github.com/signet-ci/signet module (run from inside the repository)")
}

// BuildBinaries builds cmd/signet and cmd/signetd into dir (one go build,
// so shared packages compile once).
func BuildBinaries(ctx context.Context, dir string) (Binaries, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Binaries{}, fmt.Errorf("build binaries: %w", err)
	}
	b := Binaries{Signet: filepath.Join(dir, "signet"), Signetd: filepath.Join(dir, "signetd")}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/signet", "./cmd/signetd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("go build ./cmd/signet ./cmd/signetd: %w\n%s", err, out)
	}
	return b, nil
}

// The signer.yaml schema is the signer's own (signer.Config); these aliases
// keep the bench's names. Zero values are the signer's defaults.
type (
	SignerConfig = signer.Config
	SignerTLS    = signer.TLSConfig
	SignerIssuer = signer.IssuerConfig
	SignerKey    = signer.KeyConfig
	AllowRule    = signer.Rule
	SignerAudit  = signer.AuditConfig
	SignerLimits = signer.Limits
)

// IssuerEntry returns the signer.yaml entry trusting is under name (its CA
// included).
func IssuerEntry(name string, is *Issuer) SignerIssuer {
	return SignerIssuer{Name: name, URL: is.URL, Platform: is.Platform, Algorithms: []string{is.Alg}, CA: is.CAPath}
}

// WriteConfig writes cfg as YAML to path (atomically).
func WriteConfig(path string, cfg SignerConfig) error {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode signer config: %w", err)
	}
	return writeFileAtomic(path, b, 0o600)
}

// FreePort returns a free loopback TCP address (127.0.0.1:PORT).
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}

// SignerOptions configure StartSigner.
type SignerOptions struct {
	// Signetd is the signetd binary (from BuildBinaries).
	Signetd string
	// Dir holds signer.yaml, the TLS files, the audit log and signetd.log.
	Dir string
	// CA issues the signer's TLS certificate; nil serves plain HTTP on loopback.
	CA *CA
	// Config is written to Dir/signer.yaml. Listen is set to a free port and
	// TLS to a CA certificate when empty; Audit.Path defaults to Dir/audit.jsonl.
	Config SignerConfig
	// Env is added to the process environment (e.g. SoftHSM.Env()).
	Env []string
	// ReadyTimeout bounds the wait for /readyz (default 30 s).
	ReadyTimeout time.Duration
	// Wrapper runs signetd under another program (e.g. strace ... --).
	Wrapper []string
}

// Signer is a running signetd process.
type Signer struct {
	// URL is the base URL (https://127.0.0.1:PORT).
	URL string
	// Addr is 127.0.0.1:PORT.
	Addr string
	// AuditPath is the audit log.
	AuditPath string
	// ConfigPath is signer.yaml.
	ConfigPath string
	// LogPath collects signetd's stdout and stderr (all runs).
	LogPath string
	// CAPath is the PEM root to trust for URL ("" for plain HTTP).
	CAPath string

	opts   SignerOptions
	client *http.Client
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	exit   error
}

// StartSigner writes signer.yaml and runs the real signetd (`signetd serve
// --config`) on a free loopback port, waiting until /readyz answers 200.
func StartSigner(ctx context.Context, opts SignerOptions) (*Signer, error) {
	if opts.Signetd == "" {
		return nil, errors.New("start signer: SignerOptions.Signetd is empty (use BuildBinaries)")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start signer: %w", err)
	}
	cfg := opts.Config
	if cfg.Listen == "" {
		addr, err := FreePort()
		if err != nil {
			return nil, err
		}
		cfg.Listen = addr
	}
	scheme := "http"
	tr := &http.Transport{}
	s := &Signer{Addr: cfg.Listen, ConfigPath: filepath.Join(opts.Dir, "signer.yaml"), LogPath: filepath.Join(opts.Dir, "signetd.log")}
	if opts.CA != nil {
		scheme = "https"
		if cfg.TLS == nil {
			certPath, keyPath, err := opts.CA.WriteServerCert(opts.Dir, "signer")
			if err != nil {
				return nil, err
			}
			cfg.TLS = &SignerTLS{Cert: certPath, Key: keyPath}
		}
		tr.TLSClientConfig = opts.CA.TLSClientConfig()
		s.CAPath = opts.CA.CAPath
	}
	if cfg.Audit.Path == "" {
		cfg.Audit.Path = filepath.Join(opts.Dir, "audit.jsonl")
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	opts.Config = cfg
	s.opts = opts
	s.URL = scheme + "://" + cfg.Listen
	s.AuditPath = cfg.Audit.Path
	s.client = &http.Client{Transport: tr, Timeout: 2 * time.Second}
	if err := WriteConfig(s.ConfigPath, cfg); err != nil {
		return nil, err
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Signer) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start signer: open log: %w", err)
	}
	// Not CommandContext: the process outlives the start call; Stop/Kill end it.
	argv := append(append([]string{}, s.opts.Wrapper...), s.opts.Signetd, "serve", "--config", s.ConfigPath)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), s.opts.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = s.opts.Dir
	// Own process group: Stop/Kill reach signetd even under a Wrapper.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start signetd: %w", err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done, s.exit = cmd, done, nil
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		s.mu.Lock()
		s.exit = err
		s.mu.Unlock()
		close(done)
	}()
	timeout := s.opts.ReadyTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if err := s.WaitReady(ctx, timeout); err != nil {
		s.Kill()
		return err
	}
	return nil
}

// WaitReady polls /readyz until 200, the process exits, or timeout.
func (s *Signer) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		select {
		case <-done:
			return fmt.Errorf("signetd exited before ready (%v); log %s:\n%s", s.exitErr(), s.LogPath, s.LogTail(20))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		code, body, err := s.Readyz(ctx)
		if err == nil && code == http.StatusOK {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("status %d: %s", code, body)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("signetd not ready after %s (last /readyz: %s); log %s:\n%s", timeout, last, s.LogPath, s.LogTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Readyz calls GET /readyz once.
func (s *Signer) Readyz(ctx context.Context) (int, string, error) {
	return s.get(ctx, "/readyz")
}

func (s *Signer) get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body) //nolint:errcheck
	return resp.StatusCode, strings.TrimSpace(b.String()), nil
}

// Client returns an HTTP client trusting the signer's TLS certificate.
func (s *Signer) Client() *http.Client { return s.client }

func (s *Signer) exitErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exit
}

// Running reports whether the process is alive.
func (s *Signer) Running() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

func (s *Signer) signal(sig syscall.Signal, wait time.Duration) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal signetd: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(wait):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck
		<-done
		return fmt.Errorf("signetd did not exit within %s of %v; killed", wait, sig)
	}
}

// Stop sends SIGTERM and waits (up to 10 s, then SIGKILL).
func (s *Signer) Stop() error { return s.signal(syscall.SIGTERM, 10*time.Second) }

// Kill sends SIGKILL (a crash) and waits for the process to go.
func (s *Signer) Kill() error { return s.signal(syscall.SIGKILL, 10*time.Second) }

// Restart starts signetd again with the same config (after Stop or Kill).
func (s *Signer) Restart(ctx context.Context) error {
	if s.Running() {
		if err := s.Stop(); err != nil {
			return err
		}
	}
	return s.start(ctx)
}

// LogTail returns the last n lines of signetd's log.
func (s *Signer) LogTail(n int) string {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// AuditRecords reads the audit log as generic JSON objects.
func AuditRecords(path string) ([]map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer f.Close()
	var recs []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r map[string]any
		d := json.NewDecoder(bytes.NewReader(line))
		d.UseNumber()
		if err := d.Decode(&r); err != nil {
			return recs, fmt.Errorf("audit log %s line %d: %w", path, n, err)
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}

// AuditVerify runs `signetd audit verify --log path` and returns its output.
func AuditVerify(ctx context.Context, signetd, path string) (string, error) {
	out, err := exec.CommandContext(ctx, signetd, "audit", "verify", "--log", path).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("signetd audit verify --log %s: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
