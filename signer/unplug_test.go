package signer_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-ci/signet/core"
)

// The token disappears (its directory renamed away, as testbench's Unplug
// does): /readyz turns 503, signing answers 503 hsm_unavailable (audited),
// and after it returns the signer recovers without a restart.
func TestHSMUnplugAndRecover(t *testing.T) {
	ts := fx.start(t, fx.baseConfig(t))
	tokens := filepath.Join(fx.hsm.Dir, "tokens")
	readyz := func() (int, string) {
		resp, err := http.Get(ts.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := readyz(); code != 200 {
		t.Fatalf("readyz before: %d %s", code, body)
	}
	if err := os.Rename(tokens, tokens+".unplugged"); err != nil {
		t.Fatal(err)
	}
	replugged := false
	replug := func() {
		if !replugged {
			replugged = true
			if err := os.Rename(tokens+".unplugged", tokens); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer replug()
	code, body := readyz()
	t.Logf("readyz while unplugged: %d %s", code, body)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while unplugged: %d %s", code, body)
	}
	c, apiErr := ts.call(t, "/v1/sign", mint(t, fx.gh, nil), signReq("ecdsa-p256", "a"), nil)
	if c != http.StatusServiceUnavailable || apiErr.Code != core.ErrCodeHSMUnavailable {
		t.Fatalf("sign while unplugged: %d %+v", c, apiErr)
	}
	replug()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body = readyz()
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz after replug: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, k := range []string{"ecdsa-p256", "ed25519", "rsa-3072"} {
		if c, apiErr := ts.call(t, "/v1/sign", mint(t, fx.gh, nil), signReq(k, "a"), nil); apiErr != nil {
			t.Fatalf("%s after replug: %d %+v", k, c, apiErr)
		}
	}
}
