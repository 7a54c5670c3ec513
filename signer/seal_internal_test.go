package signer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/signet-ci/signet/core"
)

// sealRecord marshals once and splices the hash in; the line must be exactly
// the canonical form (json.Marshal of the sealed record) and the hash the
// SHA-256 of the record marshalled without it.
func TestSealRecordIsCanonical(t *testing.T) {
	recs := []*AuditRecord{
		{Seq: 1, Time: "2026-01-01T00:00:00Z", Decision: "deny", Operation: "sign", Prev: zeroHash},
		{Seq: 7, Time: "t", Decision: "allow", Operation: "attest", RequestID: "r", Remote: "127.0.0.1:1",
			Issuer: "https://iss", Subject: "repo:a/b:ref:refs/heads/main", Claims: map[string]string{"z": "1", "a": "<&>\"\\\u2028"},
			Key: "k", KeyID: "kid", Digests: []core.DigestRequest{{Name: "a b\u00e9", SHA256: zeroHash}}, Prev: zeroHash,
			Code: "c", Reason: "why \"quoted\"", Hash: "stale"},
	}
	for _, r := range recs {
		line, err := sealRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(r)
		if !bytes.Equal(line, want) {
			t.Fatalf("sealed line\n%s\nis not canonical\n%s", line, want)
		}
		// The writer's path: prepared on the caller's goroutine, spliced
		// and hashed by the writer. Same bytes, same hash.
		mid, err := prepareRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		got, hash, err := appendSealed([]byte("prefix"), r.Seq, r.Time, mid, r.Prev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[len("prefix"):], want) || hash != r.Hash {
			t.Fatalf("writer line\n%s\nis not canonical\n%s", got, want)
		}
		c := *r
		c.Hash = ""
		body, _ := json.Marshal(&c)
		sum := sha256.Sum256(body)
		if r.Hash != hex.EncodeToString(sum[:]) {
			t.Fatalf("hash %s is not SHA-256 of the record without hash", r.Hash)
		}
	}
}

func BenchmarkSealRecord(b *testing.B) {
	r := &AuditRecord{Seq: 7, Time: "2026-01-01T00:00:00.123456789Z", Decision: "allow", Operation: "sign", RequestID: "0123456789abcdef01234567",
		Remote: "127.0.0.1:54321", Issuer: "https://token.actions.githubusercontent.com", Subject: "repo:signet-ci/demo:ref:refs/heads/main",
		Claims: map[string]string{"repository": "signet-ci/demo", "repository_id": "123456", "ref": "refs/heads/main", "sha": zeroHash[:40], "run_id": "1"},
		Key:    "ecdsa-p256", KeyID: zeroHash, Digests: []core.DigestRequest{{Name: "app.tar.gz", SHA256: zeroHash}}, Prev: zeroHash}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sealRecord(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendSealed is the writer's serial share of sealing a record.
func BenchmarkAppendSealed(b *testing.B) {
	r := &AuditRecord{Decision: "allow", Operation: "sign", Claims: map[string]string{"repository": "signet-ci/demo"},
		Digests: []core.DigestRequest{{Name: "app.tar.gz", SHA256: zeroHash}}}
	mid, err := prepareRecord(r)
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _, _ = appendSealed(buf[:0], 7, "2026-01-01T00:00:00.123456789Z", mid, zeroHash)
	}
}
