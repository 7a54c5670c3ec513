package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/signet-ci/signet/signer/internal/testhsm"
)

var th *testhsm.HSM

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hsmtest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	th, err = testhsm.Setup(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestParseURI(t *testing.T) {
	t.Setenv("SIGNET_TEST_PIN", "9999")
	tests := []struct {
		name    string
		uri     string
		wantErr string
		check   func(t *testing.T, u *URI)
	}{
		{name: "full", uri: "pkcs11:token=signet;object=release;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
			check: func(t *testing.T, u *URI) {
				if u.Token != "signet" || u.Object != "release" || string(u.ID) != "\x01\x02" || u.ModulePath != "/usr/lib/softhsm/libsofthsm2.so" {
					t.Fatalf("parsed %+v", u)
				}
				pin, err := u.PIN(nil)
				if err != nil || pin != "1234" {
					t.Fatalf("pin %q %v", pin, err)
				}
				if strings.Contains(u.String(), "1234") {
					t.Fatalf("String() leaks the pin: %s", u)
				}
			}},
		{name: "percent encoded label", uri: "pkcs11:token=my%20token;object=a%3Bb", check: func(t *testing.T, u *URI) {
			if u.Token != "my token" || u.Object != "a;b" {
				t.Fatalf("parsed %+v", u)
			}
		}},
		{name: "pin from env", uri: "pkcs11:token=x?pin-source=env:SIGNET_TEST_PIN", check: func(t *testing.T, u *URI) {
			pin, err := u.PIN(nil)
			if err != nil || pin != "9999" {
				t.Fatalf("pin %q %v", pin, err)
			}
		}},
		{name: "pin env missing", uri: "pkcs11:token=x?pin-source=env:SIGNET_NOPE_PIN", check: func(t *testing.T, u *URI) {
			_, err := u.PIN(nil)
			if err == nil || !strings.Contains(err.Error(), "SIGNET_NOPE_PIN") {
				t.Fatalf("want error naming the variable, got %v", err)
			}
		}},
		{name: "pin from file uri", uri: "pkcs11:token=x?pin-source=file:" + th.PINFile, check: func(t *testing.T, u *URI) {
			pin, err := u.PIN(nil)
			if err != nil || pin != "1234" {
				t.Fatalf("pin %q %v", pin, err)
			}
		}},
		{name: "pin from file:/// uri", uri: "pkcs11:token=x?pin-source=file://" + th.PINFile, check: func(t *testing.T, u *URI) {
			pin, err := u.PIN(nil)
			if err != nil || pin != "1234" {
				t.Fatalf("pin %q %v", pin, err)
			}
		}},
		{name: "slot id", uri: "pkcs11:slot-id=3;object=k", check: func(t *testing.T, u *URI) {
			if u.SlotID == nil || *u.SlotID != 3 {
				t.Fatalf("slot %v", u.SlotID)
			}
		}},
		{name: "no scheme", uri: "token=x", wantErr: "must start with"},
		{name: "no token", uri: "pkcs11:object=x", wantErr: "name the token"},
		{name: "unknown attr", uri: "pkcs11:token=x;objekt=y", wantErr: "unknown path attribute"},
		{name: "both pins", uri: "pkcs11:token=x?pin-value=1&pin-source=env:A", wantErr: "not both"},
		{name: "bad escape", uri: "pkcs11:token=%zz", wantErr: "percent-encoding"},
		{name: "bad slot", uri: "pkcs11:slot-id=-1", wantErr: "slot-id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseURI(tc.uri)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, u)
		})
	}
}

func signAndVerify(t *testing.T, k crypto.Signer, alg string) {
	t.Helper()
	msg := []byte("signet test message " + alg)
	d := sha256.Sum256(msg)
	switch alg {
	case "ecdsa-p256", "ecdsa-p384":
		sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
			t.Fatalf("%s signature does not verify", alg)
		}
	case "rsa-3072":
		sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(k.Public().(*rsa.PublicKey), crypto.SHA256, d[:], sig); err != nil {
			t.Fatal(err)
		}
		if n := k.Public().(*rsa.PublicKey).N.BitLen(); n != 3072 {
			t.Fatalf("rsa key has %d bits", n)
		}
	case "rsa-3072-pss":
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		sig, err := k.Sign(rand.Reader, d[:], opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPSS(k.Public().(*rsa.PublicKey), crypto.SHA256, d[:], sig, opts); err != nil {
			t.Fatal(err)
		}
	case "ed25519":
		sig, err := k.Sign(rand.Reader, msg, crypto.Hash(0))
		if err != nil {
			t.Fatal(err)
		}
		if !ed25519.Verify(k.Public().(ed25519.PublicKey), msg, sig) {
			t.Fatal("ed25519 signature does not verify")
		}
	}
}

func TestGenerateAndSignEveryAlgorithm(t *testing.T) {
	for _, alg := range Algorithms {
		t.Run(alg, func(t *testing.T) {
			label := "gen-" + alg
			pub, err := GenerateKey(th.URI(label), alg)
			if err != nil {
				t.Fatal(err)
			}
			if pub == nil {
				t.Fatal("nil public key")
			}
			_, k := openKey(t, label, Options{})
			if !publicEqual(k.Public(), pub) {
				t.Fatal("found key's public key differs from the generated one")
			}
			signAndVerify(t, k, alg)
		})
	}
}

// openKey opens the test token with opts and finds the key labelled label;
// the token is closed when the test ends.
func openKey(tb testing.TB, label string, opts Options) (*Token, *Key) {
	tb.Helper()
	u, err := ParseURI(th.URI(label))
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := Open(u, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tok.Close() })
	k, err := tok.FindKey(label, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return tok, k
}

func publicEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	x, ok := a.(eq)
	return ok && x.Equal(b)
}

func TestGenerateRefusesDuplicateAndBadInput(t *testing.T) {
	if _, err := GenerateKey(th.URI("dup"), "ecdsa-p256"); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, uri, alg, want string }{
		{"duplicate label", th.URI("dup"), "ecdsa-p256", "already exists"},
		{"unknown algorithm", th.URI("x1"), "dsa-1024", "unknown algorithm"},
		{"no object", "pkcs11:token=signet?module-path=" + testhsm.Module + "&pin-value=1234", "ecdsa-p256", "object="},
		{"wrong pin", "pkcs11:token=signet;object=x2?module-path=" + testhsm.Module + "&pin-value=0000", "ecdsa-p256", "PIN"},
		{"unknown token", "pkcs11:token=nope;object=x3?module-path=" + testhsm.Module + "&pin-value=1234", "ecdsa-p256", "token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := GenerateKey(tc.uri, tc.alg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
			if strings.Contains(fmt.Sprint(err), "0000") {
				t.Fatalf("error leaks the pin: %v", err)
			}
		})
	}
}

func TestConcurrentSigningAndReconnect(t *testing.T) {
	for _, alg := range []string{"ecdsa-p256", "ed25519"} {
		t.Run(alg, func(t *testing.T) {
			label := "conc-" + alg
			if _, err := GenerateKey(th.URI(label), alg); err != nil {
				t.Fatal(err)
			}
			tok, k := openKey(t, label, Options{MaxSessions: 4})
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for i := 0; i < 16; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < 10; j++ {
						d := sha256.Sum256([]byte{byte(j)})
						var err error
						if alg == "ed25519" {
							_, err = k.Sign(nil, d[:], crypto.Hash(0))
						} else {
							_, err = k.Sign(nil, d[:], crypto.SHA256)
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// Break the connection underneath the key: the next Sign must
			// reconnect, re-find the handle and succeed.
			tok.mu.RLock()
			c := tok.conn
			tok.mu.RUnlock()
			if err := c.raw.CloseAllSessions(c.slot); err != nil {
				t.Fatal(err)
			}
			signAndVerify(t, k, alg)
			tok.mu.RLock()
			gen := tok.gen
			tok.mu.RUnlock()
			if gen == 0 {
				t.Fatal("expected a reconnect")
			}
		})
	}
}
