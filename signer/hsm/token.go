package hsm

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// PKCS#11 v3.0 constants for EdDSA, missing from miekg/pkcs11 v1.1.1.
const (
	ckkECEdwards           = 0x00000040
	ckmECEdwardsKeyPairGen = 0x00001055
	ckmEdDSA               = 0x00001057
)

// Options tune a Token connection.
type Options struct {
	// MaxSessions bounds the pooled sessions (per library: crypto11's pool and
	// the raw EdDSA pool each). Zero means GOMAXPROCS*2 (at least 4).
	MaxSessions int
	// LookupEnv resolves pin-source=env:VAR; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Token is a logged-in connection to one PKCS#11 token. It is safe for
// concurrent use. After a token error (session or device gone) the Token
// reconnects once and keys re-find their handles.
type Token struct {
	uri     URI
	module  string
	pin     string
	maxSess int

	mu      sync.RWMutex
	conn    *conn // nil while disconnected
	gen     uint64
	closed  bool
	lastTry time.Time
	lastErr error
}

// conn is one generation of the connection: a crypto11 context (which owns
// module initialization and the login) plus a raw miekg context on the same
// module for EdDSA and object lookups.
type conn struct {
	c11  *crypto11.Context
	raw  *pkcs11.Ctx
	slot uint
	sem  chan struct{}
	idle chan pkcs11.SessionHandle
	done chan struct{}
}

// Open connects to the token named by uri (token/serial/slot-id, module-path,
// PIN). Object and id of uri are ignored here.
func Open(uri *URI, opts Options) (*Token, error) {
	module, err := uri.Module()
	if err != nil {
		return nil, err
	}
	pin, err := uri.PIN(opts.LookupEnv)
	if err != nil {
		return nil, err
	}
	n := opts.MaxSessions
	if n <= 0 {
		n = runtime.GOMAXPROCS(0) * 2
		if n < 4 {
			n = 4
		}
	}
	t := &Token{uri: *uri, module: module, pin: pin, maxSess: n}
	c, err := t.connect()
	if err != nil {
		return nil, err
	}
	t.conn = c
	return t, nil
}

func (t *Token) describe() string {
	switch {
	case t.uri.Token != "":
		return fmt.Sprintf("token %q", t.uri.Token)
	case t.uri.Serial != "":
		return fmt.Sprintf("token serial %q", t.uri.Serial)
	default:
		return fmt.Sprintf("slot %d", *t.uri.SlotID)
	}
}

func (t *Token) connect() (*conn, error) {
	cfg := &crypto11.Config{
		Path:              t.module,
		Pin:               t.pin,
		MaxSessions:       t.maxSess + 1, // crypto11 keeps one persistent session
		LoginNotSupported: t.pin == "",
	}
	switch {
	case t.uri.Token != "":
		cfg.TokenLabel = t.uri.Token
	case t.uri.Serial != "":
		cfg.TokenSerial = t.uri.Serial
	default:
		cfg.SlotNumber = t.uri.SlotID
	}
	// crypto11 must initialize the module first: it treats
	// CKR_CRYPTOKI_ALREADY_INITIALIZED as fatal, we do not.
	c11, err := crypto11.Configure(cfg)
	if err != nil {
		return nil, fmt.Errorf("open %s in %s: %w", t.describe(), t.module, err)
	}
	raw := pkcs11.New(t.module)
	if raw == nil {
		_ = c11.Close()
		return nil, fmt.Errorf("load pkcs11 module %s", t.module)
	}
	if err := raw.Initialize(); err != nil && !isCode(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		raw.Destroy()
		_ = c11.Close()
		return nil, fmt.Errorf("initialize pkcs11 module %s: %w", t.module, err)
	}
	slot, err := findSlot(raw, &t.uri)
	if err != nil {
		raw.Destroy()
		_ = c11.Close()
		return nil, fmt.Errorf("open %s: %w", t.describe(), err)
	}
	return &conn{
		c11:  c11,
		raw:  raw,
		slot: slot,
		sem:  make(chan struct{}, t.maxSess),
		idle: make(chan pkcs11.SessionHandle, t.maxSess),
		done: make(chan struct{}),
	}, nil
}

func findSlot(raw *pkcs11.Ctx, u *URI) (uint, error) {
	slots, err := raw.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("list slots: %w", err)
	}
	for _, s := range slots {
		if u.SlotID != nil && uint(*u.SlotID) == s && u.Token == "" && u.Serial == "" {
			return s, nil
		}
		ti, err := raw.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if u.Token != "" && strings.TrimRight(ti.Label, " ") == u.Token {
			return s, nil
		}
		if u.Token == "" && u.Serial != "" && strings.TrimRight(ti.SerialNumber, " ") == u.Serial {
			return s, nil
		}
	}
	return 0, errors.New("token not found in any slot")
}

func (c *conn) close() {
	close(c.done)
	for i := 0; i < cap(c.sem); i++ { // wait for borrowed raw sessions
		c.sem <- struct{}{}
	}
	for {
		select {
		case s := <-c.idle:
			_ = c.raw.CloseSession(s)
			continue
		default:
		}
		break
	}
	// The raw context never finalizes: crypto11 owns module init/finalize.
	c.raw.Destroy()
	_ = c.c11.Close()
}

// session borrows a raw session from the bounded pool.
func (c *conn) session() (pkcs11.SessionHandle, error) {
	select {
	case c.sem <- struct{}{}:
	case <-c.done:
		return 0, errors.New("pkcs11 connection is closed")
	}
	select {
	case <-c.done:
		<-c.sem
		return 0, errors.New("pkcs11 connection is closed")
	default:
	}
	select {
	case s := <-c.idle:
		return s, nil
	default:
	}
	s, err := c.raw.OpenSession(c.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		<-c.sem
		return 0, err
	}
	return s, nil
}

// release returns a session; bad sessions are closed instead of pooled.
func (c *conn) release(s pkcs11.SessionHandle, bad bool) {
	if bad {
		_ = c.raw.CloseSession(s)
	} else {
		select {
		case c.idle <- s:
		default:
			_ = c.raw.CloseSession(s)
		}
	}
	<-c.sem
}

func (t *Token) current() (*conn, uint64, error) {
	t.mu.RLock()
	c, gen, closed := t.conn, t.gen, t.closed
	t.mu.RUnlock()
	if closed {
		return nil, 0, errors.New("pkcs11 token is closed")
	}
	if c != nil {
		return c, gen, nil
	}
	// Disconnected after a token error: try again (rate-limited).
	if err := t.reconnect(gen); err != nil {
		return nil, 0, err
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.conn == nil {
		return nil, 0, fmt.Errorf("%s unavailable: %w", t.describe(), t.lastErr)
	}
	return t.conn, t.gen, nil
}

// reconnectGap bounds reconnect attempts while a token stays unavailable.
const reconnectGap = time.Second

// reconnect replaces the connection of generation gen (no-op when another
// goroutine already did). The old connection is closed first so that, when it
// held the last reference, the module is finalized and re-initialized: SoftHSM
// and many HSM libraries only rediscover a token that came back on
// C_Initialize.
func (t *Token) reconnect(gen uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("pkcs11 token is closed")
	}
	if t.gen != gen {
		return nil
	}
	if t.conn == nil && time.Since(t.lastTry) < reconnectGap {
		return fmt.Errorf("%s unavailable: %w", t.describe(), t.lastErr)
	}
	t.lastTry = time.Now()
	if t.conn != nil {
		t.conn.close() // waits for in-flight operations to return their sessions
		t.conn = nil
	}
	t.gen++
	c, err := t.connect()
	if err != nil {
		t.lastErr = err
		return fmt.Errorf("reconnect: %w", err)
	}
	t.conn = c
	t.lastErr = nil
	return nil
}

// Ping checks that the token is reachable (for /readyz); after a failure it
// reconnects, so a token that comes back is picked up without a restart.
func (t *Token) Ping() error {
	c, gen, err := t.current()
	if err != nil {
		return err
	}
	if _, err := c.raw.GetTokenInfo(c.slot); err != nil {
		if rerr := t.reconnect(gen); rerr != nil {
			return fmt.Errorf("%s unreachable: %w", t.describe(), rerr)
		}
		c, _, err = t.current()
		if err != nil {
			return err
		}
		if _, err := c.raw.GetTokenInfo(c.slot); err != nil {
			return fmt.Errorf("%s unreachable: %w", t.describe(), err)
		}
	}
	return nil
}

// Close releases all sessions and the module reference.
func (t *Token) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if t.conn != nil {
		t.conn.close()
		t.conn = nil
	}
	return nil
}

func isCode(err error, code uint) bool {
	var pe pkcs11.Error
	return errors.As(err, &pe) && uint(pe) == code
}

// IsTokenError reports whether err means the session, login or device is gone
// so that reconnecting may help.
func IsTokenError(err error) bool {
	if err == nil {
		return false
	}
	var pe pkcs11.Error
	if errors.As(err, &pe) {
		switch uint(pe) {
		case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_DEVICE_REMOVED,
			pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
			pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
			pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_DEVICE_MEMORY:
			return true
		}
		return false
	}
	return strings.Contains(err.Error(), "context is closed")
}
