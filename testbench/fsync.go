package testbench

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/signet-ci/signet/core"
)

// fsyncCheck runs a dedicated signetd under strace and sends a few signing
// requests one after another. For every write to the audit log, an fsync
// (or fdatasync) of that file must complete before signetd starts writing
// the answer to the client's socket — unless the log is opened O_SYNC/O_DSYNC.
// This is the row that turns red when the audit fsync is removed: a kill -9
// alone cannot show it, because the page cache survives a process crash.
func (b *Bench) fsyncCheck(ctx context.Context) (string, string) {
	strace, err := FindTool("strace")
	if err != nil {
		return "strace not installed", err.Error() + " to check audit fsync ordering"
	}
	const name = "signer-strace"
	trace := filepath.Join(b.Dir, name, "strace.out")
	s, err := b.startAuxSigner(ctx, name,
		strace, "-f", "-qq", "-o", trace, "-e", "trace=openat,close,write,writev,pwrite64,fsync,fdatasync,sync_file_range", "--")
	if err != nil {
		return "setup error", err.Error()
	}
	const requests = 4
	for i := 0; i < requests; i++ {
		tok, err := b.GitHub.Mint(nil)
		if err != nil {
			s.Stop() //nolint:errcheck
			return "mint error", err.Error()
		}
		c, err := core.NewClient(core.ClientOptions{BaseURL: s.URL, Token: tok, CACertFile: b.CA.CAPath, RetryMax: -1})
		if err == nil {
			_, err = c.Sign(ctx, "p256", []core.DigestRequest{randomDigest()})
		}
		if err != nil {
			s.Stop() //nolint:errcheck
			return "sign failed", err.Error()
		}
	}
	s.Stop() //nolint:errcheck
	return analyseStrace(trace, s.AuditPath, requests)
}

var (
	straceLine    = regexp.MustCompile(`^(\d+)\s+(.*)$`)
	straceCall    = regexp.MustCompile(`^([a-z0-9_]+)\((\d+|AT_FDCWD)?`)
	straceResumed = regexp.MustCompile(`^<\.\.\. ([a-z0-9_]+) resumed>`)
)

type straceEvent struct {
	call  string
	fd    int
	text  string
	start int // line index where the call began
	end   int // line index where it returned
}

// analyseStrace checks the fsync-before-answer order in an strace -f log.
func analyseStrace(path, auditPath string, requests int) (string, string) {
	f, err := os.Open(path)
	if err != nil {
		return "strace log unreadable", err.Error()
	}
	defer f.Close()
	pending := map[string]*straceEvent{}
	var events []*straceEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for i := 0; sc.Scan(); i++ {
		m := straceLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		pid, rest := m[1], m[2]
		if rm := straceResumed.FindStringSubmatch(rest); rm != nil {
			if ev := pending[pid]; ev != nil {
				ev.text += rest
				ev.end = i
				delete(pending, pid)
			}
			continue
		}
		cm := straceCall.FindStringSubmatch(rest)
		if cm == nil {
			continue
		}
		ev := &straceEvent{call: cm[1], fd: -1, text: rest, start: i, end: i}
		if n, err := strconv.Atoi(cm[2]); err == nil {
			ev.fd = n
		}
		events = append(events, ev)
		if strings.HasSuffix(rest, "<unfinished ...>") {
			pending[pid] = ev
		}
	}
	// Which events touch the audit log: an fd belongs to it from the openat
	// of its path until it is closed (fd numbers are reused).
	auditFDs := map[int]bool{}
	seenFDs := map[int]bool{}
	onAudit := make([]bool, len(events))
	syncOpen := false
	for i, ev := range events {
		switch {
		case ev.call == "openat" && strings.Contains(ev.text, `"`+auditPath+`"`):
			if j := strings.LastIndex(ev.text, "= "); j >= 0 {
				if f := strings.Fields(ev.text[j+2:]); len(f) > 0 {
					if fd, err := strconv.Atoi(f[0]); err == nil && fd >= 0 {
						auditFDs[fd] = true
						seenFDs[fd] = true
						if strings.Contains(ev.text, "O_SYNC") || strings.Contains(ev.text, "O_DSYNC") {
							syncOpen = true
						}
					}
				}
			}
		case ev.call == "close":
			onAudit[i] = auditFDs[ev.fd]
			delete(auditFDs, ev.fd)
		default:
			onAudit[i] = auditFDs[ev.fd]
		}
	}
	if len(seenFDs) == 0 {
		return "audit log open not seen", "no openat of " + auditPath + " in the strace log"
	}
	// isAnswer: a TLS application-data record written to a socket.
	isAnswer := func(i int) bool {
		e := events[i]
		return (e.call == "write" || e.call == "writev") && !onAudit[i] && e.fd > 2 && strings.Contains(e.text, `"\27\3\3`)
	}
	isWrite := func(c string) bool { return c == "write" || c == "writev" || c == "pwrite64" }
	isSync := func(c string) bool { return c == "fsync" || c == "fdatasync" || c == "sync_file_range" }
	auditWrites, unsynced := 0, 0
	var firstBad string
	for i, w := range events {
		if !isWrite(w.call) || !onAudit[i] {
			continue
		}
		auditWrites++
		if syncOpen {
			continue
		}
		// The answer: the first TLS record written to a socket that starts
		// after this audit write returned.
		answer := -1
		for j := i + 1; j < len(events); j++ {
			if events[j].start > w.end && isAnswer(j) {
				answer = j
				break
			}
		}
		if answer < 0 {
			continue
		}
		synced := false
		for j := i + 1; j < answer; j++ {
			e := events[j]
			if isSync(e.call) && onAudit[j] && e.start > w.end && e.end < events[answer].start {
				synced = true
				break
			}
		}
		if !synced {
			unsynced++
			if firstBad == "" {
				firstBad = w.text
			}
		}
	}
	detail := fmt.Sprintf("%d requests, %d audit writes, audit fds %v", requests, auditWrites, slices.Sorted(maps.Keys(seenFDs)))
	if syncOpen {
		detail += ", log opened O_SYNC/O_DSYNC"
	}
	switch {
	case auditWrites < requests:
		return "audit writes missing", detail
	case unsynced > 0:
		return fmt.Sprintf("%d answers before fsync", unsynced), detail + "; first unsynced write: " + firstBad
	}
	return "fsync precedes every answer", detail
}
