// Package testhsm provisions a throw-away SoftHSM2 token for tests: its own
// SOFTHSM2_CONF and token directory, a token labelled "signet" with user PIN
// 1234. It is used only from _test.go files.
package testhsm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Module is the SoftHSM2 PKCS#11 module.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// HSM is one provisioned SoftHSM2 configuration.
type HSM struct {
	Dir     string
	Conf    string
	Label   string
	PIN     string
	PINFile string
}

// Setup creates dir/tokens, dir/softhsm2.conf, sets SOFTHSM2_CONF in the
// process environment (tests call it once, from TestMain, before any module
// load) and initialises a token.
func Setup(dir string) (*HSM, error) {
	if _, err := os.Stat(Module); err != nil {
		return nil, fmt.Errorf("SoftHSM2 module missing (apt-get install softhsm2): %w", err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, err
	}
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return nil, err
	}
	h := &HSM{Dir: dir, Conf: conf, Label: "signet", PIN: "1234", PINFile: filepath.Join(dir, "pin")}
	if err := os.WriteFile(h.PINFile, []byte(h.PIN+"\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", h.Label, "--pin", h.PIN, "--so-pin", "5678")
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("softhsm2-util --init-token: %w: %s", err, out)
	}
	return h, nil
}

// URI is the pkcs11 URI of object label in the token, PIN from the pin file.
func (h *HSM) URI(label string) string {
	return fmt.Sprintf("pkcs11:token=%s;object=%s?module-path=%s&pin-source=file:%s", h.Label, label, Module, h.PINFile)
}
