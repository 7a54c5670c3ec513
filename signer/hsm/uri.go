// Package hsm talks to PKCS#11 tokens: RFC 7512 URIs, key generation and
// signing keys with pooled sessions. ECDSA and RSA go through crypto11; Ed25519
// (which crypto11 v1.5.0 lacks) goes through github.com/miekg/pkcs11 directly
// with CKM_EC_EDWARDS_KEY_PAIR_GEN / CKM_EDDSA on the same module.
package hsm

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// URI is a parsed RFC 7512 PKCS#11 URI. The PIN is never part of String().
type URI struct {
	// Path attributes (RFC 7512 section 2.3).
	Token        string // token label
	Manufacturer string
	Model        string
	Serial       string
	SlotID       *int
	Object       string // CKA_LABEL
	ID           []byte // CKA_ID
	Type         string // private | public | cert | secret-key | data

	// Query attributes.
	ModulePath string
	ModuleName string
	// PinSource is "file:/path", a plain path, or our extension "env:VAR".
	PinSource string
	pinValue  string
}

// ParseURI parses a "pkcs11:" URI. Unknown path attributes are an error (so a
// typo does not silently select another key); unknown query attributes are
// ignored as RFC 7512 allows ("vendor-specific").
func ParseURI(s string) (*URI, error) {
	const scheme = "pkcs11:"
	if !strings.HasPrefix(strings.ToLower(s), scheme) {
		return nil, fmt.Errorf("pkcs11 uri: must start with %q", scheme)
	}
	rest := s[len(scheme):]
	pathPart, queryPart, _ := strings.Cut(rest, "?")
	u := &URI{}
	path, err := attributes(pathPart, ";", "path")
	if err != nil {
		return nil, err
	}
	for _, a := range path {
		switch a.key {
		case "token":
			u.Token = a.val
		case "manufacturer":
			u.Manufacturer = a.val
		case "model":
			u.Model = a.val
		case "serial":
			u.Serial = a.val
		case "slot-id":
			n, err := strconv.Atoi(a.val)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("pkcs11 uri: slot-id %q is not a non-negative number", a.val)
			}
			u.SlotID = &n
		case "object":
			u.Object = a.val
		case "id":
			u.ID = []byte(a.val)
		case "type":
			u.Type = a.val
		case "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer":
			// informational; accepted and ignored
		default:
			return nil, fmt.Errorf("pkcs11 uri: unknown path attribute %q", a.key)
		}
	}
	query, err := attributes(queryPart, "&", "query")
	if err != nil {
		return nil, err
	}
	for _, a := range query {
		switch a.key {
		case "module-path":
			u.ModulePath = a.val
		case "module-name":
			u.ModuleName = a.val
		case "pin-source":
			u.PinSource = a.val
		case "pin-value":
			u.pinValue = a.val
		}
	}
	if u.Token == "" && u.Serial == "" && u.SlotID == nil {
		return nil, errors.New("pkcs11 uri: name the token with token=LABEL, serial= or slot-id=")
	}
	if u.PinSource != "" && u.pinValue != "" {
		return nil, errors.New("pkcs11 uri: give either pin-source or pin-value, not both")
	}
	return u, nil
}

type attribute struct{ key, val string }

// attributes splits the path (sep ";") or query (sep "&") part of a URI into
// key=value attributes: keys lower-cased, values percent-decoded, empty
// attributes skipped.
func attributes(part, sep, kind string) ([]attribute, error) {
	var out []attribute
	for _, attr := range strings.Split(part, sep) {
		if attr == "" {
			continue
		}
		k, v, ok := strings.Cut(attr, "=")
		if !ok {
			return nil, fmt.Errorf("pkcs11 uri: %s attribute %q has no '='", kind, attr)
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("pkcs11 uri: attribute %q: bad percent-encoding: %w", k, err)
		}
		out = append(out, attribute{strings.ToLower(k), val})
	}
	return out, nil
}

// Module returns the PKCS#11 module path: module-path, or module-name looked up
// in the usual library directories.
func (u *URI) Module() (string, error) {
	if u.ModulePath != "" {
		return u.ModulePath, nil
	}
	if u.ModuleName != "" {
		name := u.ModuleName
		if !strings.HasSuffix(name, ".so") {
			name += ".so"
		}
		for _, dir := range []string{"/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/softhsm", "/usr/lib/x86_64-linux-gnu/pkcs11", "/usr/lib/pkcs11"} {
			for _, cand := range []string{name, "lib" + name} {
				p := filepath.Join(dir, cand)
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
			}
		}
		return "", fmt.Errorf("pkcs11 uri: module-name %q not found in the library directories; use module-path", u.ModuleName)
	}
	return "", errors.New("pkcs11 uri: no module: add ?module-path=/path/to/module.so")
}

// PIN resolves the user PIN from pin-value, pin-source=file:... (or a plain
// path), or pin-source=env:VAR. lookupEnv may be nil (os.LookupEnv is used).
// Errors never contain the PIN.
func (u *URI) PIN(lookupEnv func(string) (string, bool)) (string, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	if u.pinValue != "" {
		return u.pinValue, nil
	}
	src := u.PinSource
	switch {
	case src == "":
		return "", nil
	case strings.HasPrefix(src, "env:"):
		name := strings.TrimPrefix(src, "env:")
		v, ok := lookupEnv(name)
		if !ok || v == "" {
			return "", fmt.Errorf("pkcs11 pin: environment variable %s (pin-source) is not set", name)
		}
		return v, nil
	default:
		path := src
		if strings.HasPrefix(src, "file:") {
			p, err := url.Parse(src)
			if err != nil {
				return "", fmt.Errorf("pkcs11 pin: pin-source %q is not a file URI: %w", src, err)
			}
			path = p.Path
			if path == "" {
				path = p.Opaque
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("pkcs11 pin: read pin-source file: %w", err)
		}
		pin := strings.TrimRight(string(b), "\r\n")
		if pin == "" {
			return "", fmt.Errorf("pkcs11 pin: pin-source file %s is empty", path)
		}
		return pin, nil
	}
}

// HasPIN reports whether the URI names a PIN at all.
func (u *URI) HasPIN() bool { return u.pinValue != "" || u.PinSource != "" }

// String renders the URI with pin-value redacted.
func (u *URI) String() string {
	var path []string
	add := func(k, v string) {
		if v != "" {
			path = append(path, k+"="+escape(v))
		}
	}
	add("token", u.Token)
	add("manufacturer", u.Manufacturer)
	add("model", u.Model)
	add("serial", u.Serial)
	if u.SlotID != nil {
		path = append(path, "slot-id="+strconv.Itoa(*u.SlotID))
	}
	add("object", u.Object)
	if len(u.ID) > 0 {
		var b strings.Builder
		for _, c := range u.ID {
			fmt.Fprintf(&b, "%%%02X", c)
		}
		path = append(path, "id="+b.String())
	}
	add("type", u.Type)
	var q []string
	if u.ModulePath != "" {
		q = append(q, "module-path="+escape(u.ModulePath))
	}
	if u.ModuleName != "" {
		q = append(q, "module-name="+escape(u.ModuleName))
	}
	if u.PinSource != "" {
		q = append(q, "pin-source="+escape(u.PinSource))
	}
	if u.pinValue != "" {
		q = append(q, "pin-value=REDACTED")
	}
	s := "pkcs11:" + strings.Join(path, ";")
	if len(q) > 0 {
		s += "?" + strings.Join(q, "&")
	}
	return s
}

// escape percent-encodes everything except RFC 7512 pchar-safe characters.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~:[]@!$'()*+,/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
