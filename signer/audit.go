package signer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/signet-ci/signet/core"
)

// AuditRecord is one line of the audit log. Hash is the SHA-256 of the record
// serialised with Hash empty; Prev is the Hash of the previous record (64
// zeros for the first), which chains the records.
type AuditRecord struct {
	Seq       uint64               `json:"seq"`
	Time      string               `json:"time"`
	Decision  string               `json:"decision"` // allow | deny
	Code      string               `json:"code,omitempty"`
	Reason    string               `json:"reason,omitempty"`
	Operation string               `json:"operation"` // sign | attest
	RequestID string               `json:"request_id,omitempty"`
	Remote    string               `json:"remote,omitempty"`
	Issuer    string               `json:"issuer,omitempty"`
	Subject   string               `json:"subject,omitempty"`
	Claims    map[string]string    `json:"claims,omitempty"`
	Key       string               `json:"key,omitempty"`
	KeyID     string               `json:"key_id,omitempty"`
	Digests   []core.DigestRequest `json:"digests,omitempty"`
	Prev      string               `json:"prev"`
	Hash      string               `json:"hash,omitempty"`
}

var zeroHash = strings.Repeat("0", 64)

// identifyingClaims are copied from the token into the audit record.
var identifyingClaims = []string{
	"repository", "repository_id", "repository_owner", "repository_owner_id", "ref", "ref_type", "sha",
	"workflow_ref", "job_workflow_ref", "run_id", "run_attempt", "event_name", "environment", "runner_environment",
	"project_path", "project_id", "namespace_id", "pipeline_id", "job_id", "ci_config_ref_uri", "user_login",
	"git_url", "git_commit", "branch", "build_number", "jti",
}

func auditClaims(c map[string]any) map[string]string {
	out := map[string]string{}
	for _, n := range identifyingClaims {
		if s, ok := claimAsString(c[n]); ok {
			out[n] = s
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// sealRecord sets Hash and returns the line (without newline). It marshals
// once: Hash is the last field and omitted when empty, so the sealed line is
// the hashed body with `,"hash":"<hex>"` spliced before its closing brace,
// byte for byte what json.Marshal of the sealed record gives (the canonical
// form verifyAudit checks).
func sealRecord(r *AuditRecord) ([]byte, error) {
	r.Hash = ""
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(body) < 2 || body[len(body)-1] != '}' {
		return nil, fmt.Errorf("audit record marshals to %q: not a JSON object", body)
	}
	sum := sha256.Sum256(body)
	const suffix = `,"hash":""}`
	line := make([]byte, 0, len(body)+len(suffix)+2*len(sum))
	line = append(line, body[:len(body)-1]...)
	line = append(line, `,"hash":"`...)
	line = hex.AppendEncode(line, sum[:])
	line = append(line, `"}`...)
	r.Hash = string(line[len(line)-2-2*len(sum) : len(line)-2])
	return line, nil
}

// AuditLog is the append-only, hash-chained, fsync'd audit log with group
// commit: concurrent Append calls are written with one write and one fsync.
type AuditLog struct {
	f     *os.File
	log   *slog.Logger
	reqs  chan *auditReq
	done  chan struct{}
	fsync func(time.Duration, int) // metrics hook: fsync latency, batch size

	// Owned by run: bytes of complete records, last sequence number and hash.
	size int64
	seq  uint64
	last string

	closeMu sync.RWMutex // guards closed against Append sending on reqs
	closed  bool
}

type auditReq struct {
	rec  *AuditRecord
	mid  []byte // the record's JSON between "time" and "prev" (see prepareRecord)
	resp chan auditResp
}

// The JSON of a record with Seq 0 and Time and Prev empty starts with
// recordHead and ends with recordTail (field order of AuditRecord; Hash is
// omitted when empty).
const (
	recordHead = `{"seq":0,"time":""`
	recordTail = `,"prev":""}`
)

// prepareRecord marshals everything of r but seq, time, prev and hash. It
// runs on the caller's goroutine, so the costly part of sealing happens in
// parallel and the single log writer only splices, hashes and writes.
func prepareRecord(r *AuditRecord) ([]byte, error) {
	c := *r
	c.Seq, c.Time, c.Prev, c.Hash = 0, "", "", ""
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(b, []byte(recordHead)) || !bytes.HasSuffix(b, []byte(recordTail)) {
		return nil, fmt.Errorf("audit record marshals to an unexpected layout: %.80q", b)
	}
	return b[len(recordHead) : len(b)-len(recordTail)], nil
}

// appendSealed appends the canonical line of the record (seq, time, mid,
// prev) with its hash to dst, without the newline, and returns the hash.
// The line is byte for byte json.Marshal of the sealed record, as
// sealRecord produces and verifyAudit checks.
func appendSealed(dst []byte, seq uint64, tm string, mid []byte, prev string) ([]byte, string, error) {
	start := len(dst)
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"time":`...)
	q, err := json.Marshal(tm) // escaping exactly as encoding/json does
	if err != nil {
		return nil, "", err
	}
	dst = append(dst, q...)
	dst = append(dst, mid...)
	dst = append(dst, `,"prev":`...)
	q, err = json.Marshal(prev)
	if err != nil {
		return nil, "", err
	}
	dst = append(dst, q...)
	dst = append(dst, '}')
	sum := sha256.Sum256(dst[start:])
	dst = append(dst[:len(dst)-1], `,"hash":"`...)
	dst = hex.AppendEncode(dst, sum[:])
	hash := string(dst[len(dst)-2*len(sum):])
	dst = append(dst, `"}`...)
	return dst, hash, nil
}

type auditResp struct {
	ref core.AuditRef
	err error
}

// OpenAuditLog opens (or creates) the log, verifies the existing chain and
// continues it. A torn last line (a write cut by a crash, never acknowledged)
// is truncated with a warning; any other break refuses to start.
func OpenAuditLog(path string, log *slog.Logger, fsyncHook func(time.Duration, int)) (*AuditLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	res, err := verifyAudit(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	if res.tornAt >= 0 {
		log.Warn("audit log ends with an incomplete record (unacknowledged write cut by a crash); truncating it", "path", path, "offset", res.tornAt)
		if err := f.Truncate(res.tornAt); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate torn audit record: %w", err)
		}
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, err
	}
	if fsyncHook == nil {
		fsyncHook = func(time.Duration, int) {}
	}
	a := &AuditLog{f: f, log: log, reqs: make(chan *auditReq, 4096), done: make(chan struct{}),
		fsync: fsyncHook, seq: res.count, last: res.last, size: size}
	go a.run()
	return a, nil
}

// Append writes r (Seq, Prev, Hash and Time are set here) and returns after
// the record is on disk.
func (a *AuditLog) Append(r *AuditRecord) (core.AuditRef, error) {
	a.closeMu.RLock()
	if a.closed {
		a.closeMu.RUnlock()
		return core.AuditRef{}, errors.New("audit log is closed")
	}
	mid, err := prepareRecord(r)
	if err != nil {
		a.closeMu.RUnlock()
		return core.AuditRef{}, fmt.Errorf("audit record: %w", err)
	}
	req := &auditReq{rec: r, mid: mid, resp: make(chan auditResp, 1)}
	a.reqs <- req
	a.closeMu.RUnlock()
	res := <-req.resp
	return res.ref, res.err
}

func (a *AuditLog) run() {
	defer close(a.done)
	var buf []byte
	for first := range a.reqs {
		batch := []*auditReq{first}
	drain:
		for len(batch) < 1024 {
			select {
			case r, ok := <-a.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		buf = buf[:0]
		seq, last := a.seq, a.last
		refs := make([]core.AuditRef, len(batch))
		var err error
		for i, req := range batch {
			seq++
			req.rec.Seq = seq
			req.rec.Prev = last
			if req.rec.Time == "" {
				req.rec.Time = time.Now().UTC().Format(time.RFC3339Nano)
			}
			buf, last, err = appendSealed(buf, seq, req.rec.Time, req.mid, last)
			if err != nil {
				break
			}
			buf = append(buf, '\n')
			req.rec.Hash = last
			refs[i] = core.AuditRef{Seq: seq, Hash: last}
		}
		if err == nil {
			// One write per batch: a kill -9 cannot tear it.
			_, err = a.f.Write(buf)
		}
		if err == nil {
			start := time.Now()
			err = syncData(a.f)
			a.fsync(time.Since(start), len(batch))
		}
		if err != nil {
			a.log.Error("audit write failed; refusing to answer", "err", err)
			// Do not advance the chain; cut any partial bytes so the next
			// batch continues from the last complete record.
			if terr := a.f.Truncate(a.size); terr == nil {
				_, _ = a.f.Seek(a.size, io.SeekStart)
			}
			for _, req := range batch {
				req.resp <- auditResp{err: fmt.Errorf("audit log write: %w", err)}
			}
			continue
		}
		a.size += int64(len(buf))
		a.seq, a.last = seq, last
		for i, req := range batch {
			req.resp <- auditResp{ref: refs[i]}
		}
	}
}

// Close flushes pending records and closes the file.
func (a *AuditLog) Close() error {
	a.closeMu.Lock()
	if a.closed {
		a.closeMu.Unlock()
		return nil
	}
	a.closed = true
	close(a.reqs)
	a.closeMu.Unlock()
	<-a.done
	return a.f.Close()
}

type verifyResult struct {
	count  uint64
	last   string
	tornAt int64 // offset of an incomplete final line, -1 if none
}

// AuditBreak describes the first broken record.
type AuditBreak struct {
	Line   int
	Reason string
}

func (b *AuditBreak) Error() string {
	return fmt.Sprintf("audit log broken at line %d: %s", b.Line, b.Reason)
}

// VerifyAuditLog checks the whole chain of the log at path and returns the
// number of records, or an *AuditBreak naming the first broken record.
func VerifyAuditLog(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	res, err := verifyAudit(f)
	if err != nil {
		return 0, err
	}
	if res.tornAt >= 0 {
		return res.count, &AuditBreak{Line: int(res.count) + 1, Reason: "incomplete last record (no newline): a write was cut off"}
	}
	return res.count, nil
}

func verifyAudit(r io.Reader) (verifyResult, error) {
	res := verifyResult{last: zeroHash, tornAt: -1}
	br := bufio.NewReaderSize(r, 1<<20)
	var off int64
	lineNo := 0
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] != '\n' {
			// final line without newline
			res.tornAt = off
			return res, nil
		}
		if len(line) > 0 {
			lineNo++
			off += int64(len(line))
			body := line[:len(line)-1]
			var rec AuditRecord
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if derr := dec.Decode(&rec); derr != nil {
				return res, &AuditBreak{Line: lineNo, Reason: "not a valid record: " + derr.Error()}
			}
			canon, merr := json.Marshal(&rec)
			if merr != nil || !bytes.Equal(canon, body) {
				return res, &AuditBreak{Line: lineNo, Reason: "record is not in canonical form (edited?)"}
			}
			if rec.Seq != res.count+1 {
				return res, &AuditBreak{Line: lineNo, Reason: fmt.Sprintf("seq is %d, want %d (record deleted or reordered)", rec.Seq, res.count+1)}
			}
			if rec.Prev != res.last {
				return res, &AuditBreak{Line: lineNo, Reason: "prev does not match the previous record's hash (record deleted, reordered or edited)"}
			}
			// Reseal the record: sealRecord recomputes Hash from the content.
			h := rec.Hash
			if _, err := sealRecord(&rec); err != nil || rec.Hash != h {
				return res, &AuditBreak{Line: lineNo, Reason: "hash does not match the record's content (record edited)"}
			}
			res.count++
			res.last = h
		}
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return res, err
		}
	}
}
