package core

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// DefaultProvenanceName is the default file name of the provenance.
const DefaultProvenanceName = "provenance.intoto.jsonl"

// PublicKeyFileName is the file `signet sign` writes the key's PEM to.
const PublicKeyFileName = "signer.pub"

// MaxSigFileBytes bounds a .sig file read for verification.
const MaxSigFileBytes = 16 << 10

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, fsync and rename: readers see the old file or the new one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	s := &Staging{}
	if err := s.Add(path, data, perm); err != nil {
		return err
	}
	return s.Commit()
}

// Staging collects outputs as temporary files and renames them all into
// place on Commit, so a failure before Commit leaves no partial outputs.
type Staging struct {
	items []stagedFile
}

type stagedFile struct{ tmp, final string }

// Add writes data to a temporary file beside path.
func (s *Staging) Add(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create output dir %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp, perm)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	s.items = append(s.items, stagedFile{tmp: tmp, final: path})
	return nil
}

// Commit makes the staged files durable (one syncfs per file system
// instead of one fsync per file, which matters for 10,000 signatures), then
// renames every one into place and syncs each directory once.
func (s *Staging) Commit() error {
	dirs := map[string]bool{}
	for _, it := range s.items {
		dirs[filepath.Dir(it.final)] = true
	}
	for d := range dirs {
		if err := syncFS(d); err != nil {
			s.Abort()
			return fmt.Errorf("flush outputs in %s to disk: %w", d, err)
		}
	}
	for i, it := range s.items {
		if err := os.Rename(it.tmp, it.final); err != nil {
			for _, rest := range s.items[i:] {
				os.Remove(rest.tmp)
			}
			s.items = nil
			return fmt.Errorf("move %s into place: %w", it.final, err)
		}
	}
	for d := range dirs {
		if f, err := os.Open(d); err == nil {
			_ = f.Sync()
			f.Close()
		}
	}
	s.items = nil
	return nil
}

// Abort removes the staged temporary files.
func (s *Staging) Abort() {
	for _, it := range s.items {
		os.Remove(it.tmp)
	}
	s.items = nil
}

// SigFileContent is the .sig file body: base64 of the signature and a newline
// (cosign reads it with surrounding whitespace trimmed).
func SigFileContent(sig []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(sig) + "\n")
}

// ReadSigFile reads a .sig file: base64 of a raw signature (cosign's format).
func ReadSigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("signature file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSigFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("signature file %s: %w", path, err)
	}
	if len(data) > MaxSigFileBytes {
		return nil, fmt.Errorf("signature file %s is over %d bytes: not a signature", path, MaxSigFileBytes)
	}
	sig, err := decodeB64(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("signature file %s is not base64: %w", path, err)
	}
	if len(sig) == 0 {
		return nil, fmt.Errorf("signature file %s is empty", path)
	}
	return sig, nil
}

// EnvelopesJSONL renders envelopes one per line.
func EnvelopesJSONL(envs []Envelope) ([]byte, error) {
	var buf bytes.Buffer
	for _, e := range envs {
		b, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode envelope: %w", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

// ParsedEnvelope is one envelope of a provenance file with its payload.
type ParsedEnvelope struct {
	Line     int
	Envelope *Envelope
	Payload  []byte
}

// ReadEnvelopes reads a provenance file: one DSSE envelope per line (blank
// lines skipped); a single pretty-printed envelope (as cosign writes it) is
// accepted too.
func ReadEnvelopes(path string) ([]ParsedEnvelope, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("provenance file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4*MaxEnvelopeBytes+1))
	if err != nil {
		return nil, fmt.Errorf("provenance file %s: %w", path, err)
	}
	if len(data) > 4*MaxEnvelopeBytes {
		return nil, fmt.Errorf("provenance file %s is over %d bytes", path, 4*MaxEnvelopeBytes)
	}
	return ParseEnvelopes(data)
}

// ParseEnvelopes parses JSON-lines DSSE envelopes (or one multi-line envelope).
func ParseEnvelopes(data []byte) ([]ParsedEnvelope, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("provenance file is empty")
	}
	// One JSON value spanning several lines (cosign attest-blob output)?
	if env, payload, err := ParseEnvelope(trimmed); err == nil {
		return []ParsedEnvelope{{Line: 1, Envelope: env, Payload: payload}}, nil
	}
	var out []ParsedEnvelope
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), MaxEnvelopeBytes+1)
	line := 0
	for sc.Scan() {
		line++
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		env, payload, err := ParseEnvelope(l)
		if err != nil {
			return nil, fmt.Errorf("provenance line %d: %w", line, err)
		}
		out = append(out, ParsedEnvelope{Line: line, Envelope: env, Payload: payload})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("provenance line %d: %w", line+1, err)
	}
	if len(out) == 0 {
		return nil, errors.New("provenance file holds no envelope")
	}
	return out, nil
}
