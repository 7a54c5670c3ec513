package testbench

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/signet-ci/signet/signer/hsm"
)

// SoftHSM module locations searched by FindSoftHSM (Debian/Ubuntu, Fedora, Homebrew).
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/lib/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

// InstallHint says how to get SoftHSM2 when it is missing.
const InstallHint = "SoftHSM2 is required: run `make demo` (scripts/setup.sh installs it) or install it yourself: " +
	"Debian/Ubuntu `sudo apt-get install softhsm2`, Fedora `sudo dnf install softhsm`, macOS `brew install softhsm`"

// FindSoftHSM returns the SoftHSM2 PKCS#11 module and the softhsm2-util
// binary, or an error that says how to install them.
func FindSoftHSM() (module, util string, err error) {
	if m := os.Getenv("SIGNET_SOFTHSM_MODULE"); m != "" {
		module = m
	} else {
		for _, p := range softHSMModules {
			if _, err := os.Stat(p); err == nil {
				module = p
				break
			}
		}
	}
	util, uerr := exec.LookPath("softhsm2-util")
	switch {
	case module == "" && uerr != nil:
		return "", "", errors.New("libsofthsm2.so and softhsm2-util not found. " + InstallHint)
	case module == "":
		return "", "", errors.New("libsofthsm2.so not found (set SIGNET_SOFTHSM_MODULE to its path). " + InstallHint)
	case uerr != nil:
		return "", "", errors.New("softhsm2-util not found on PATH. " + InstallHint)
	}
	return module, util, nil
}

// SoftHSM is a SoftHSM2 instance private to one directory: its own
// SOFTHSM2_CONF, token directory and one initialised token.
type SoftHSM struct {
	Dir        string
	ConfPath   string // SOFTHSM2_CONF
	TokenDir   string // directories.tokendir
	Module     string // libsofthsm2.so
	TokenLabel string // "signet"
	PIN        string
	PINPath    string // file holding PIN (pin-source=file:...)
	util       string
}

// softHSMEnvMu serialises the in-process key generation, which must point
// the process's SOFTHSM2_CONF at the instance while the module initialises.
var softHSMEnvMu sync.Mutex

// NewSoftHSM writes dir/softhsm2.conf, creates dir/tokens and initialises a
// token labelled "signet" with softhsm2-util.
func NewSoftHSM(ctx context.Context, dir string) (*SoftHSM, error) {
	module, util, err := FindSoftHSM()
	if err != nil {
		return nil, err
	}
	h := &SoftHSM{
		Dir:        dir,
		ConfPath:   filepath.Join(dir, "softhsm2.conf"),
		TokenDir:   filepath.Join(dir, "tokens"),
		Module:     module,
		TokenLabel: "signet",
		PIN:        "1234",
		PINPath:    filepath.Join(dir, "pin"),
		util:       util,
	}
	if err := os.MkdirAll(h.TokenDir, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: create token dir: %w", err)
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", h.TokenDir)
	if err := writeFileAtomic(h.ConfPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	if err := writeFileAtomic(h.PINPath, []byte(h.PIN), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	cmd := exec.CommandContext(ctx, util, "--init-token", "--free", "--label", h.TokenLabel, "--pin", h.PIN, "--so-pin", "5678")
	cmd.Env = append(os.Environ(), h.Env()...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("softhsm: softhsm2-util --init-token: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return h, nil
}

// Env returns the environment entries a process needs to see this instance
// ("SOFTHSM2_CONF=...").
func (h *SoftHSM) Env() []string { return []string{"SOFTHSM2_CONF=" + h.ConfPath} }

// URI returns the RFC 7512 URI of the key labelled label (PIN from PINPath).
func (h *SoftHSM) URI(label string) string {
	return "pkcs11:token=" + h.TokenLabel + ";object=" + label +
		"?module-path=" + h.Module + "&pin-source=file:" + h.PINPath
}

// CreateKey generates a key pair (ecdsa-p256, ecdsa-p384, rsa-3072 or
// ed25519) labelled label in the token through signer/hsm.GenerateKey and
// returns its URI. It also writes the public key to dir/label.pub.
func (h *SoftHSM) CreateKey(label, algorithm string) (string, error) {
	uri := h.URI(label)
	softHSMEnvMu.Lock()
	prev, had := os.LookupEnv("SOFTHSM2_CONF")
	os.Setenv("SOFTHSM2_CONF", h.ConfPath)
	pub, err := hsm.GenerateKey(uri, algorithm)
	if had {
		os.Setenv("SOFTHSM2_CONF", prev)
	} else {
		os.Unsetenv("SOFTHSM2_CONF")
	}
	softHSMEnvMu.Unlock()
	if err != nil {
		return "", fmt.Errorf("softhsm: create %s key %q: %w", algorithm, label, err)
	}
	if err := writePublicKey(filepath.Join(h.Dir, label+".pub"), pub); err != nil {
		return "", err
	}
	return uri, nil
}

// PublicKeyPath is where CreateKey wrote the public key of label.
func (h *SoftHSM) PublicKeyPath(label string) string { return filepath.Join(h.Dir, label+".pub") }

// Unplug makes the token unavailable (its directory is renamed away), as when
// an HSM disappears; Replug puts it back.
func (h *SoftHSM) Unplug() error {
	if err := os.Rename(h.TokenDir, h.TokenDir+".unplugged"); err != nil {
		return fmt.Errorf("softhsm: unplug token: %w", err)
	}
	return nil
}

// Replug undoes Unplug.
func (h *SoftHSM) Replug() error {
	if err := os.Rename(h.TokenDir+".unplugged", h.TokenDir); err != nil {
		return fmt.Errorf("softhsm: replug token: %w", err)
	}
	return nil
}

func writePublicKey(path string, pub crypto.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("marshal public key: %w", err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}
