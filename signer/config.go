// Package signer is signetd, the remote HSM signer: OIDC identity, claim
// policy, key backends (PKCS#11, file), a hash-chained audit log and the HTTP
// API of DESIGN.md.
package signer

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/signet-ci/signet/signer/hsm"
)

// Config is signer.yaml (DESIGN.md "Signer configuration" plus extensions).
type Config struct {
	Listen   string         `yaml:"listen"`
	TLS      *TLSConfig     `yaml:"tls"`
	Audience string         `yaml:"audience"`
	Issuers  []IssuerConfig `yaml:"issuers"`
	Keys     []KeyConfig    `yaml:"keys"`
	Audit    AuditConfig    `yaml:"audit"`
	Limits   Limits         `yaml:"limits"`
	PKCS11   PKCS11Config   `yaml:"pkcs11"`
	// ShutdownTimeout bounds the graceful drain of in-flight requests.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	dir string // directory of the config file; relative paths resolve here
}

// TLSConfig names the server certificate and key (PEM).
type TLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// IssuerConfig is one trusted OIDC issuer.
type IssuerConfig struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// Platform is github|gitlab|jenkins; defaults to Name.
	Platform string `yaml:"platform"`
	// ServerURL is {server} of the identity mapping (GitHub default
	// https://github.com; GitLab default = iss).
	ServerURL string `yaml:"server_url"`
	// Algorithms accepted for this issuer's tokens (default [RS256]).
	Algorithms []string `yaml:"algorithms"`
	// CA is a PEM file of extra roots for discovery/JWKS over TLS.
	CA string `yaml:"ca"`
}

// KeyConfig is one signing key.
type KeyConfig struct {
	Name    string `yaml:"name"`
	Purpose string `yaml:"purpose"` // code | firmware
	URI     string `yaml:"uri"`     // pkcs11:... or file:...
	// Algorithm is optional; it must agree with the key. For RSA it selects
	// PKCS#1 v1.5 (rsa-3072, the default) or PSS (rsa-3072-pss).
	Algorithm   string `yaml:"algorithm"`
	Certificate string `yaml:"certificate"`
	// ExpiryWarningDays: /readyz reports a warning (and the metric shows the
	// days left) when the certificate expires within this many days (default 30).
	ExpiryWarningDays int    `yaml:"expiry_warning_days"`
	Allow             []Rule `yaml:"allow"`
}

// Rule allows an identity to use a key. All listed conditions must match.
type Rule struct {
	Issuer string `yaml:"issuer"`
	// Purpose, when set, restricts the rule to keys of that purpose.
	Purpose string `yaml:"purpose"`
	// Claims: claim name -> exact value or path.Match glob.
	Claims map[string]string `yaml:"claims"`
}

// AuditConfig locates the audit log.
type AuditConfig struct {
	Path string `yaml:"path"`
}

// Limits bound requests and tokens.
type Limits struct {
	MaxBodyBytes  int64         `yaml:"max_body_bytes"`  // default 4 MiB
	MaxDigests    int           `yaml:"max_digests"`     // default 1000
	MaxTokenBytes int           `yaml:"max_token_bytes"` // default 16 KiB
	MaxTokenAge   time.Duration `yaml:"max_token_age"`   // default 1h (now - iat)
	JTIUses       int           `yaml:"jti_uses"`        // default 100 uses per jti
	Leeway        time.Duration `yaml:"leeway"`          // default 60s for exp/nbf/iat
	// RatePerSecond / RateBurst: per identity (issuer + sub). Defaults 50 / 200.
	RatePerSecond float64 `yaml:"rate_per_second"`
	RateBurst     int     `yaml:"rate_burst"`
	// UnauthRatePerSecond / UnauthBurst: authentication failures allowed per
	// remote address (host of the TCP peer). Once the bucket is empty, further
	// requests from that address whose token is not already verified are
	// refused with 429 before verification (audited). Defaults 1 / 30.
	UnauthRatePerSecond float64 `yaml:"unauth_rate_per_second"`
	UnauthBurst         int     `yaml:"unauth_burst"`
	// JWKSRefreshInterval is the minimum time between JWKS refreshes caused
	// by unknown kids (default 30s).
	JWKSRefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
}

// PKCS11Config tunes the PKCS#11 backend.
type PKCS11Config struct {
	// MaxSessions per token (default GOMAXPROCS*2, at least 4).
	MaxSessions int `yaml:"max_sessions"`
}

// Defaults.
const (
	DefaultMaxBodyBytes  = 4 << 20
	DefaultMaxDigests    = 1000
	DefaultMaxTokenBytes = 16 << 10
	DefaultMaxTokenAge   = time.Hour
	DefaultJTIUses       = 100
	DefaultLeeway        = time.Minute
)

// LoadConfig reads and validates a config file. Unknown fields are errors.
func LoadConfig(file string) (*Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(b, filepath.Dir(file))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	return cfg, nil
}

// ParseConfig parses YAML; relative paths resolve against dir.
func ParseConfig(b []byte, dir string) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	cfg.dir = dir
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

var validPlatforms = map[string]bool{"github": true, "gitlab": true, "jenkins": true}
var validJWSAlgs = map[string]bool{"RS256": true, "RS384": true, "RS512": true, "ES256": true, "ES384": true, "ES512": true, "PS256": true, "PS384": true, "PS512": true, "EdDSA": true}

func (c *Config) validate() error {
	var errs []error
	fail := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	orDefault(&c.Listen, "127.0.0.1:8443")
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		fail("listen", "%q is not host:port: %v", c.Listen, err)
	}
	if c.TLS == nil {
		if !isLoopbackHost(host) {
			fail("tls", "required when listen (%s) is not a loopback address; plain HTTP is only allowed on loopback", c.Listen)
		}
	} else {
		if c.TLS.Cert == "" {
			fail("tls.cert", "missing")
		}
		if c.TLS.Key == "" {
			fail("tls.key", "missing")
		}
		c.TLS.Cert, c.TLS.Key = c.resolve(c.TLS.Cert), c.resolve(c.TLS.Key)
	}
	if c.Audience == "" {
		fail("audience", "missing: the aud every token must carry, e.g. https://signer.example.com")
	}
	if len(c.Issuers) == 0 {
		fail("issuers", "at least one issuer is required")
	}
	names := map[string]bool{}
	urls := map[string]bool{}
	for i := range c.Issuers {
		is := &c.Issuers[i]
		f := fmt.Sprintf("issuers[%d]", i)
		if is.Name == "" {
			fail(f+".name", "missing")
		} else if names[is.Name] {
			fail(f+".name", "duplicate issuer name %q", is.Name)
		}
		names[is.Name] = true
		u, err := url.Parse(is.URL)
		switch {
		case is.URL == "":
			fail(f+".url", "missing")
		case err != nil || u.Host == "":
			fail(f+".url", "%q is not an absolute URL", is.URL)
		case u.Scheme != "https":
			fail(f+".url", "%q must use https", is.URL)
		case urls[is.URL]:
			fail(f+".url", "duplicate issuer url %q", is.URL)
		}
		urls[is.URL] = true
		orDefault(&is.Platform, is.Name)
		if !validPlatforms[is.Platform] {
			fail(f+".platform", "%q: want github, gitlab or jenkins (defaults to the issuer name)", is.Platform)
		}
		if len(is.Algorithms) == 0 {
			is.Algorithms = []string{"RS256"}
		}
		for _, a := range is.Algorithms {
			if !validJWSAlgs[a] {
				fail(f+".algorithms", "%q is not an allowed asymmetric JWS algorithm (RS256, ES256, PS256, EdDSA, ...)", a)
			}
		}
		if is.ServerURL != "" {
			if su, err := url.Parse(is.ServerURL); err != nil || su.Host == "" {
				fail(f+".server_url", "%q is not an absolute URL", is.ServerURL)
			}
		}
		if is.CA != "" {
			is.CA = c.resolve(is.CA)
			if _, err := os.Stat(is.CA); err != nil {
				fail(f+".ca", "%v", err)
			}
		}
	}
	if len(c.Keys) == 0 {
		fail("keys", "at least one key is required")
	}
	keyNames := map[string]bool{}
	for i := range c.Keys {
		k := &c.Keys[i]
		f := fmt.Sprintf("keys[%d]", i)
		if k.Name == "" {
			fail(f+".name", "missing")
		} else if keyNames[k.Name] {
			fail(f+".name", "duplicate key name %q", k.Name)
		} else if strings.ContainsAny(k.Name, "/ \t\n") {
			fail(f+".name", "%q must not contain '/' or spaces", k.Name)
		}
		keyNames[k.Name] = true
		if k.Purpose != "code" && k.Purpose != "firmware" {
			fail(f+".purpose", "%q: want code or firmware", k.Purpose)
		}
		switch {
		case strings.HasPrefix(k.URI, "pkcs11:"), strings.HasPrefix(k.URI, "file:"):
		case k.URI == "":
			fail(f+".uri", "missing: pkcs11:token=...;object=...?module-path=...&pin-source=file:... (or file:key.pem for development)")
		default:
			fail(f+".uri", "must start with pkcs11: or file:")
		}
		if k.Algorithm != "" && !slices.Contains(hsm.Algorithms, k.Algorithm) {
			fail(f+".algorithm", "%q: want one of %s", k.Algorithm, strings.Join(hsm.Algorithms, ", "))
		}
		if k.Certificate != "" {
			k.Certificate = c.resolve(k.Certificate)
		}
		orDefault(&k.ExpiryWarningDays, 30)
		if len(k.Allow) == 0 {
			// Deny by default is fine, but a key nobody may use is likely a mistake.
			fail(f+".allow", "no rules: nobody could use key %q (deny by default); add at least one rule", k.Name)
		}
		for j, r := range k.Allow {
			rf := fmt.Sprintf("%s.allow[%d]", f, j)
			if r.Issuer == "" {
				fail(rf+".issuer", "missing")
			} else if !names[r.Issuer] {
				fail(rf+".issuer", "%q is not a configured issuer name", r.Issuer)
			}
			if r.Purpose != "" && r.Purpose != "code" && r.Purpose != "firmware" {
				fail(rf+".purpose", "%q: want code or firmware", r.Purpose)
			}
			if len(r.Claims) == 0 {
				fail(rf+".claims", "a rule must name at least one claim (e.g. repository_id); matching every token of an issuer is never what you want")
			}
			for name, pat := range r.Claims {
				if _, err := path.Match(pat, ""); err != nil {
					fail(rf+".claims."+name, "bad glob %q: %v", pat, err)
				}
			}
		}
	}
	if c.Audit.Path == "" {
		fail("audit.path", "missing: where the hash-chained audit log is written")
	} else {
		c.Audit.Path = c.resolve(c.Audit.Path)
	}
	l := &c.Limits
	orDefault(&l.MaxBodyBytes, DefaultMaxBodyBytes)
	orDefault(&l.MaxDigests, DefaultMaxDigests)
	orDefault(&l.MaxTokenBytes, DefaultMaxTokenBytes)
	orDefault(&l.MaxTokenAge, DefaultMaxTokenAge)
	orDefault(&l.JTIUses, DefaultJTIUses)
	orDefault(&l.Leeway, DefaultLeeway)
	orDefault(&l.RatePerSecond, 50)
	orDefault(&l.RateBurst, 200)
	orDefault(&l.UnauthRatePerSecond, 1)
	orDefault(&l.UnauthBurst, 30)
	orDefault(&l.JWKSRefreshInterval, 30*time.Second)
	for _, chk := range []struct {
		field string
		bad   bool
		want  string
	}{
		{"limits.max_body_bytes", l.MaxBodyBytes < 1024, "at least 1024"},
		{"limits.max_digests", l.MaxDigests < 1, "at least 1"},
		{"limits.max_token_bytes", l.MaxTokenBytes < 512, "at least 512"},
		{"limits.max_token_age", l.MaxTokenAge < 0, "a positive duration (0 = default 1h)"},
		{"limits.jti_uses", l.JTIUses < 1, "at least 1"},
		{"limits.leeway", l.Leeway < 0 || l.Leeway > 5*time.Minute, "between 0 and 5m (0 = default 60s)"},
		{"limits.rate_per_second", l.RatePerSecond < 0, "a positive rate (0 = default 50)"},
		{"limits.rate_burst", l.RateBurst < 1, "at least 1"},
		{"limits.unauth_rate_per_second", l.UnauthRatePerSecond < 0, "a positive rate (0 = default 1)"},
		{"limits.unauth_burst", l.UnauthBurst < 1, "at least 1"},
	} {
		if chk.bad {
			fail(chk.field, "out of range: want %s", chk.want)
		}
	}
	orDefault(&c.ShutdownTimeout, 30*time.Second)
	return errors.Join(errs...)
}

// orDefault sets *p to def when it holds the zero value (the field was not
// configured).
func orDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
