package core

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// HashAlgorithm names a digest algorithm as in-toto spells it.
type HashAlgorithm string

// Supported digest algorithms. SHA-256 is the default and the one every
// signature is made over.
const (
	SHA256 HashAlgorithm = "sha256"
	SHA384 HashAlgorithm = "sha384"
	SHA512 HashAlgorithm = "sha512"
)

// New returns a fresh hash for the algorithm.
func (a HashAlgorithm) New() (hash.Hash, error) {
	switch a {
	case SHA256, "":
		return sha256.New(), nil
	case SHA384:
		return sha512.New384(), nil
	case SHA512:
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("unsupported hash algorithm %q: want sha256, sha384 or sha512", string(a))
}

// ParseHashAlgorithm accepts sha256|sha384|sha512 (also SHA-256 spellings).
func ParseHashAlgorithm(s string) (HashAlgorithm, error) {
	a := HashAlgorithm(strings.ReplaceAll(strings.ToLower(s), "-", ""))
	if _, err := a.New(); err != nil {
		return "", err
	}
	if a == "" {
		a = SHA256
	}
	return a, nil
}

// ArtifactFile is a file to hash, with its stable subject name.
type ArtifactFile struct {
	Name string // slash-separated, relative to the base dir
	Path string // path to open
}

// ArtifactDigest is a hashed artifact.
type ArtifactDigest struct {
	ArtifactFile
	Algorithm HashAlgorithm
	Digest    []byte
	Size      int64
}

// Hex is the lower-case hex digest.
func (d ArtifactDigest) Hex() string { return hex.EncodeToString(d.Digest) }

// ResolveArtifacts expands files, directories (recursively, regular files
// only, sorted) and glob patterns into artifact files named relative to
// baseDir ("" = current directory). A name outside baseDir is its base name.
// It fails on a missing path, a glob that matches nothing, or two artifacts
// with the same subject name.
func ResolveArtifacts(baseDir string, patterns []string) ([]ArtifactFile, error) {
	if len(patterns) == 0 {
		return nil, errors.New("no artifacts given: name at least one file, directory or glob")
	}
	base := baseDir
	if base == "" {
		base = "."
	}
	absBase, err := filepath.Abs(base)
	if err != nil {
		return nil, fmt.Errorf("base dir %q: %w", base, err)
	}
	var out []ArtifactFile
	byName := map[string]string{}
	add := func(p string) error {
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("artifact %q: %w", p, err)
		}
		name, err := filepath.Rel(absBase, abs)
		if err != nil || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			name = filepath.Base(abs)
		}
		name = filepath.ToSlash(name)
		if prev, dup := byName[name]; dup {
			if prev == abs {
				return nil // the same file named twice (e.g. by a file and a glob)
			}
			return fmt.Errorf("duplicate subject name %q: %s and %s; give each artifact a distinct name relative to the base dir", name, prev, abs)
		}
		byName[name] = abs
		out = append(out, ArtifactFile{Name: name, Path: p})
		return nil
	}
	addPath := func(p string) error {
		fi, err := os.Stat(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("artifact %q does not exist", p)
			}
			return fmt.Errorf("artifact %q: %w", p, err)
		}
		if fi.Mode().IsRegular() {
			return add(p)
		}
		if !fi.IsDir() {
			return fmt.Errorf("artifact %q is not a regular file or directory", p)
		}
		var files []string
		err = filepath.WalkDir(p, func(fp string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("walk %q: %w", fp, err)
			}
			if d.Type().IsRegular() {
				files = append(files, fp)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(files) == 0 {
			return fmt.Errorf("directory %q contains no regular files", p)
		}
		sort.Strings(files)
		for _, f := range files {
			if err := add(f); err != nil {
				return err
			}
		}
		return nil
	}
	for _, pat := range patterns {
		if !hasGlobMeta(pat) {
			if err := addPath(pat); err != nil {
				return nil, err
			}
			continue
		}
		matches, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("glob %q: %w", pat, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("glob %q matches no files", pat)
		}
		sort.Strings(matches)
		for _, m := range matches {
			if err := addPath(m); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func hasGlobMeta(p string) bool { return strings.ContainsAny(p, "*?[") }

// hashBufSize is the read buffer per worker: memory stays flat in file size.
const hashBufSize = 1 << 20

// HashFile streams one file through the algorithm.
func HashFile(ctx context.Context, path string, alg HashAlgorithm) ([]byte, int64, error) {
	buf := make([]byte, hashBufSize)
	return hashFile(ctx, path, alg, buf)
}

func hashFile(ctx context.Context, path string, alg HashAlgorithm, buf []byte) ([]byte, int64, error) {
	h, err := alg.New()
	if err != nil {
		return nil, 0, err
	}
	f, err := openForHash(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open artifact: %w", err)
	}
	defer f.Close()
	n, err := io.CopyBuffer(h, ctxReader{ctx: ctx, r: f}, buf)
	if err != nil {
		return nil, n, fmt.Errorf("read artifact %q: %w", path, err)
	}
	return h.Sum(nil), n, nil
}

// ctxReader stops a long read when the context ends. It hides WriterTo so
// io.CopyBuffer uses our buffer.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// HashFiles hashes files in parallel (up to workers, default GOMAXPROCS)
// and returns the digests in the order of files. It stops at the first
// failure. progress, if not nil, is called after each file with the number
// done so far (from one goroutine at a time).
func HashFiles(ctx context.Context, files []ArtifactFile, alg HashAlgorithm, workers int, progress func(done int)) ([]ArtifactDigest, error) {
	out, errs, err := hashFiles(ctx, files, alg, workers, true, progress)
	if err != nil {
		return nil, err
	}
	if i := firstFailure(errs); i >= 0 {
		return nil, fmt.Errorf("hash %s: %w", files[i].Name, errs[i])
	}
	return out, nil
}

// firstFailure returns the index of the first error that is not a
// cancellation, else of the first error, else -1: when one failure cancels
// the other workers, the failure is what the user must see, not the
// cancellations it caused.
func firstFailure(errs []error) int {
	first := -1
	for i, e := range errs {
		if e == nil {
			continue
		}
		if !errors.Is(e, context.Canceled) {
			return i
		}
		if first < 0 {
			first = i
		}
	}
	return first
}

// HashFilesAll hashes every file it can, like sha256sum: errs[i] is the
// failure of files[i] (nil on success, then digests[i] is valid).
func HashFilesAll(ctx context.Context, files []ArtifactFile, alg HashAlgorithm, workers int) (digests []ArtifactDigest, errs []error, err error) {
	return hashFiles(ctx, files, alg, workers, false, nil)
}

func hashFiles(ctx context.Context, files []ArtifactFile, alg HashAlgorithm, workers int, failFast bool, progress func(done int)) ([]ArtifactDigest, []error, error) {
	if _, err := alg.New(); err != nil {
		return nil, nil, err
	}
	if alg == "" {
		alg = SHA256
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if workers > len(files) {
		workers = len(files)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make([]ArtifactDigest, len(files))
	errs := make([]error, len(files))
	var (
		next atomic.Int64 // workers claim files by index: no channel hand-off per file
		mu   sync.Mutex
		done int
		wg   sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, hashBufSize)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(files) || ctx.Err() != nil {
					return
				}
				sum, n, err := hashFile(ctx, files[i].Path, alg, buf)
				if err != nil {
					errs[i] = err
					if failFast {
						cancel()
					}
					continue
				}
				out[i] = ArtifactDigest{ArtifactFile: files[i], Algorithm: alg, Digest: sum, Size: n}
				if progress != nil {
					mu.Lock()
					done++
					progress(done)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if i := firstFailure(errs); failFast && i >= 0 && !errors.Is(errs[i], context.Canceled) {
		return out, errs, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("hashing interrupted: %w", err)
	}
	return out, errs, nil
}

// DigestTargets lists the files of one `signet digest` argument: a file is
// named exactly as given (like sha256sum), a directory is walked in lexical
// order and each file named by its walked path.
func DigestTargets(p string) ([]ArtifactFile, error) {
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: No such file or directory", p)
		}
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if !fi.IsDir() {
		return []ArtifactFile{{Name: p, Path: p}}, nil
	}
	var out []ArtifactFile
	err = filepath.WalkDir(p, func(fp string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", fp, err)
		}
		if d.Type().IsRegular() {
			out = append(out, ArtifactFile{Name: fp, Path: fp})
		}
		return nil
	})
	return out, err
}

// SumLine formats one sha256sum line: "HEX  NAME\n". As GNU coreutils does,
// a name containing a backslash, newline or carriage return is escaped and
// the line starts with a backslash.
func SumLine(hexDigest, name string) string {
	if strings.ContainsAny(name, "\\\n\r") {
		esc := strings.NewReplacer("\\", "\\\\", "\n", "\\n", "\r", "\\r").Replace(name)
		return "\\" + hexDigest + "  " + esc + "\n"
	}
	return hexDigest + "  " + name + "\n"
}

// HashReader streams r through the algorithm (`signet digest -`).
func HashReader(ctx context.Context, r io.Reader, alg HashAlgorithm) ([]byte, int64, error) {
	h, err := alg.New()
	if err != nil {
		return nil, 0, err
	}
	n, err := io.CopyBuffer(h, ctxReader{ctx: ctx, r: r}, make([]byte, hashBufSize))
	if err != nil {
		return nil, n, err
	}
	return h.Sum(nil), n, nil
}
