package core

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Benchmarks (never timed tests): hashing with core against coreutils
// sha256sum and `openssl dgst -sha256` on the same data in the same run.
// Reported metrics: MB/s of each, and the ratios signet/sha256sum and
// signet/openssl (higher is better for signet). Data lives in a temp dir and
// is read from the page cache (one warm-up pass before timing).
//
//	go test -run '^$' -bench Hash -benchtime 3x ./core/

const (
	largeFileSize = 1 << 30
	manyFiles     = 10_000
	manyFileSize  = 16 << 10
)

func writeRandomFile(b *testing.B, path string, size int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// timeCmd runs a baseline command in dir with output discarded and returns
// its wall time; it checks the first output line carries wantHex.
func timeCmd(b *testing.B, dir, wantHex string, name string, args ...string) time.Duration {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	r := bufio.NewReaderSize(stdout, 1<<20)
	first, _ := r.ReadString('\n')
	io.Copy(io.Discard, r)
	if err := cmd.Wait(); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	d := time.Since(start)
	if !strings.Contains(first, wantHex) {
		b.Fatalf("%s printed %q, want digest %s", name, first, wantHex)
	}
	return d
}

type hashRun struct {
	b        *testing.B
	dir      string
	files    []ArtifactFile
	args     []string // relative names for the baselines
	bytes    int64
	firstHex string
}

func (h *hashRun) signet() time.Duration {
	start := time.Now()
	ds, err := HashFiles(context.Background(), h.files, SHA256, 0, nil)
	if err != nil {
		h.b.Fatal(err)
	}
	d := time.Since(start)
	if ds[0].Hex() != h.firstHex {
		h.b.Fatalf("digest mismatch: %s vs %s", ds[0].Hex(), h.firstHex)
	}
	return d
}

func (h *hashRun) run() {
	b := h.b
	// Warm the page cache and learn the reference digest with sha256sum.
	out, err := exec.Command("sha256sum", filepath.Join(h.dir, h.args[0])).Output()
	if err != nil {
		b.Fatalf("sha256sum: %v", err)
	}
	h.firstHex = strings.Fields(string(out))[0]
	h.signet()
	var sig, sum, ossl time.Duration
	b.ReportAllocs() // B/op stays ~1 MiB per worker whatever the file size: memory is flat
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sig += h.signet()
		b.StopTimer()
		sum += timeCmd(b, h.dir, h.firstHex, "sha256sum", h.args...)
		ossl += timeCmd(b, h.dir, h.firstHex, "openssl", append([]string{"dgst", "-sha256", "-r"}, h.args...)...)
		b.StartTimer()
	}
	mbps := func(d time.Duration) float64 { return float64(h.bytes) * float64(b.N) / d.Seconds() / 1e6 }
	b.SetBytes(h.bytes)
	b.ReportMetric(mbps(sig), "signet-MB/s")
	b.ReportMetric(mbps(sum), "sha256sum-MB/s")
	b.ReportMetric(mbps(ossl), "openssl-MB/s")
	b.ReportMetric(sum.Seconds()/sig.Seconds(), "x-sha256sum")
	b.ReportMetric(ossl.Seconds()/sig.Seconds(), "x-openssl")
}

func BenchmarkHashLargeFile(b *testing.B) {
	dir := b.TempDir()
	p := filepath.Join(dir, "large.bin")
	writeRandomFile(b, p, largeFileSize)
	h := &hashRun{b: b, dir: dir, files: []ArtifactFile{{Name: "large.bin", Path: p}}, args: []string{"large.bin"}, bytes: largeFileSize}
	h.run()
}

func BenchmarkHashManyFiles(b *testing.B) {
	dir := b.TempDir()
	buf := make([]byte, manyFileSize)
	h := &hashRun{b: b, dir: dir, bytes: manyFiles * manyFileSize}
	for i := 0; i < manyFiles; i++ {
		rand.Read(buf)
		name := fmt.Sprintf("f%05d.bin", i)
		if err := os.WriteFile(filepath.Join(dir, name), buf, 0o644); err != nil {
			b.Fatal(err)
		}
		h.files = append(h.files, ArtifactFile{Name: name, Path: filepath.Join(dir, name)})
		h.args = append(h.args, name)
	}
	b.Logf("GOMAXPROCS=%d, %d files of %d bytes", runtime.GOMAXPROCS(0), manyFiles, manyFileSize)
	h.run()
}
