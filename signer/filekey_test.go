package signer_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signet-ci/signet/core"
	"github.com/signet-ci/signet/signer"
)

func TestFileKeyBackendWarns(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	p := filepath.Join(t.TempDir(), "dev.pem")
	os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	cfg := fx.baseConfig(t)
	cfg.Keys[0].URI = "file:" + p
	var logs bytes.Buffer
	s, err := signer.New(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.Contains(logs.String(), "DEVELOPMENT ONLY") {
		t.Fatalf("no development warning in logs:\n%s", logs.String())
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	ts := &testServer{Server: hs, srv: s, cfg: cfg}
	var sr core.SignResponse
	if _, apiErr := ts.call(t, "/v1/sign", mint(t, fx.gh, nil), signReq("ecdsa-p256", "a"), &sr); apiErr != nil {
		t.Fatal(apiErr)
	}
	sig, _ := base64.StdEncoding.DecodeString(sr.Signatures[0].Signature)
	d, _ := hex.DecodeString(sr.Signatures[0].SHA256)
	if err := core.VerifyDigest(&priv.PublicKey, d, sig); err != nil {
		t.Fatal(err)
	}
	// A wrong algorithm claim in the config is refused at start.
	cfg2 := fx.baseConfig(t)
	cfg2.Keys[0].Algorithm = "ed25519"
	if _, err := newServerErr(cfg2); err == nil || !strings.Contains(err.Error(), "keys[0] (ecdsa-p256).algorithm") {
		t.Fatalf("got %v", err)
	}
}
