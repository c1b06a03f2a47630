package rtspserver

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"

	"github.com/nestmtx/nestmtx/internal/netguard"
)

// Authenticator checks RTSP logins. nil serves every reader without a login.
type Authenticator interface {
	// Basic checks a username and password sent with Basic by remote (the
	// client's IP, no port). An error refuses the login; a *StatusError
	// among its wrapped errors chooses the status answered (503 when the
	// checker is busy, say), 401 otherwise.
	Basic(ctx context.Context, username, password, remote string) (Account, error)
	// DigestHA1 returns MD5(username:realm:password) for username, with
	// Options.Realm as the realm, and the account; ok is false when Digest
	// is not possible for that account (unknown, may not log in, no HA1
	// stored).
	DigestHA1(username string) (ha1 string, acct Account, ok bool)
	// Failed and Succeeded record a Digest login's outcome (for
	// throttling, which Basic does inside Basic); Blocked says whether
	// (username, remote) must be refused without checking, for now.
	Failed(username, remote string)
	Succeeded(username, remote string)
	Blocked(username, remote string) bool
}

// Account is who a connection logged in as.
type Account struct {
	Username string
}

// DefaultRealm is the realm of the challenges when Options.Realm is empty.
const DefaultRealm = "nestmtx"

// loginFailDelay is how long a wrong login waits for its 401: it slows a
// guesser down to one try a second per connection. It holds only that
// connection's goroutine, never another connection.
const loginFailDelay = time.Second

// basicTimeout bounds one Basic check (argon2id, behind the login gate).
const basicTimeout = 10 * time.Second

// connState is what the server knows of one RTSP connection.
type connState struct {
	id    string
	nonce string // this connection's Digest nonce
	// remote is the client's IP, without the port.
	remote string

	mu sync.Mutex
	// account is who the connection logged in as, nil before a login.
	account *Account
	// key is a hash of the Authorization header that logged account in:
	// the same header again is not checked again. A hash, since a Basic
	// header is the password itself.
	key [sha256.Size]byte
	// refusal, when set, is the status the next request that needs a
	// login is answered with (a busy login checker), instead of 401.
	refusal *StatusError
	// stale marks the last Digest as right but computed for another
	// nonce, so the challenge says stale="TRUE" and a client such as
	// ffmpeg retries with the new nonce instead of giving up.
	stale bool
}

func newConnState(id string, c net.Conn) *connState {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand never fails (Go 1.24+)
	st := &connState{id: id, nonce: hex.EncodeToString(b)}
	if c != nil {
		st.remote = netguard.ClientIP(c.RemoteAddr())
	}
	return st
}

func (s *Server) state(c *gortsplib.ServerConn) *connState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[c]
}

// realm is the realm of the challenges and of accepted Digest responses.
func (s *Server) realm() string {
	if s.opts.Realm != "" {
		return s.opts.Realm
	}
	return DefaultRealm
}

// checkLogin runs in gortsplib's OnRequest, on the connection's own
// goroutine, before the request is handled: a login, slow by design
// (argon2id, then the delay of a wrong one), holds nobody else. The
// handlers then only read the outcome (authorize).
func (s *Server) checkLogin(c *gortsplib.ServerConn, req *base.Request) {
	if s.opts.Authenticator == nil || req.Method == base.Options {
		return
	}
	h, ok := req.Header["Authorization"]
	if !ok {
		return // a login made earlier on this connection applies
	}
	st := s.state(c)
	if st == nil {
		return
	}
	key := sha256.Sum256([]byte(strings.Join(h, "\n")))
	st.mu.Lock()
	same := st.account != nil && st.key == key
	st.mu.Unlock()
	if same {
		return
	}
	acct, username, method, err := s.verify(st, req, h)
	st.mu.Lock()
	st.account, st.key, st.refusal, st.stale = nil, [sha256.Size]byte{}, nil, false
	var se *StatusError
	var stale *staleNonceError
	switch {
	case err == nil:
		st.account, st.key = &acct, key
	case errors.As(err, &stale):
		st.stale = true
	case errors.As(err, &se):
		st.refusal = se
	}
	st.mu.Unlock()
	switch {
	case err == nil:
		s.log.Debug("rtsp login", "username", acct.Username, "remote", st.remote, "method", method)
		return
	case stale != nil:
		s.log.Debug("rtsp login with a stale nonce", "username", logSafe(username), "remote", st.remote)
		return
	case se != nil:
		// Not a wrong password (the checker is busy, say): no delay.
		s.log.Warn("rtsp login not checked", "username", logSafe(username), "remote", st.remote, "method", method, "reason", err.Error())
		return
	}
	s.log.Info("rtsp login failed", "username", logSafe(username), "remote", st.remote, "method", method, "reason", err.Error())
	t := time.NewTimer(loginFailDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// logSafe bounds what a client's username may put in the log.
func logSafe(v string) string {
	if len(v) > 128 {
		v = v[:128] + "…"
	}
	return v
}

// staleNonceError is a Digest response that is right for a nonce that is
// not this connection's (one from an earlier connection of the client).
type staleNonceError struct{}

func (*staleNonceError) Error() string { return "digest with a stale nonce" }

// verify checks the credentials of one request and returns the account,
// and the username the client gave and the scheme (for the log).
func (s *Server) verify(st *connState, req *base.Request, h base.HeaderValue) (acct Account, username, method string, err error) {
	if len(h) != 1 {
		return Account{}, "", "", errors.New("more than one Authorization header")
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h[0]), " ")
	switch {
	case strings.EqualFold(scheme, "Basic"):
		// Parsed here rather than with gortsplib's headers.Authorization,
		// which refuses a password containing ':' (RFC 7617 allows it).
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if err != nil {
			return Account{}, "", "basic", errors.New("malformed Basic credentials")
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok || user == "" {
			// Without its ':' the value may be a password: not logged.
			return Account{}, "", "basic", errors.New("malformed Basic credentials")
		}
		ctx, cancel := context.WithTimeout(s.ctx, basicTimeout)
		defer cancel()
		acct, err := s.opts.Authenticator.Basic(ctx, user, pass, st.remote)
		return acct, user, "basic", err
	case strings.EqualFold(scheme, "Digest"):
		var a headers.Authorization
		if err := a.Unmarshal(base.HeaderValue{"Digest " + rest}); err != nil {
			return Account{}, "", "digest", errors.New("malformed Digest credentials")
		}
		acct, err := s.verifyDigest(st, req, &a)
		return acct, a.Username, "digest", err
	default:
		return Account{}, "", "", errors.New("unsupported authorization scheme")
	}
}

var reControlAttribute = regexp.MustCompile("^(.+/)trackID=[0-9]+$")

// uriMatches compares the uri of a Digest response with the request's URL,
// as gortsplib's pkg/auth does: in SETUP, VLC signs the stream's URL
// instead of the track's.
func uriMatches(req *base.Request, uri string) bool {
	if req.URL == nil {
		return false
	}
	expected := req.URL.CloneWithoutCredentials().String()
	if uri == expected {
		return true
	}
	if req.Method == base.Setup {
		if m := reControlAttribute.FindStringSubmatch(expected); m != nil && uri == m[1] {
			return true
		}
	}
	return false
}

func md5Hex(v string) string {
	h := md5.Sum([]byte(v))
	return hex.EncodeToString(h[:])
}

// verifyDigest checks a Digest response against the HA1 the Authenticator
// keeps: response = MD5(HA1:nonce:MD5(method:uri)) (RFC 2069, which is what
// ffmpeg, VLC and gortsplib send to a challenge without qop).
func (s *Server) verifyDigest(st *connState, req *base.Request, a *headers.Authorization) (Account, error) {
	auth := s.opts.Authenticator
	if a.Username == "" {
		return Account{}, errors.New("digest without a username")
	}
	if a.Algorithm != nil && *a.Algorithm != headers.AuthAlgorithmMD5 {
		return Account{}, errors.New("digest algorithm other than MD5")
	}
	if a.Realm != s.realm() {
		return Account{}, errors.New("digest for another realm")
	}
	if !uriMatches(req, a.URI) {
		return Account{}, errors.New("digest for another URI")
	}
	if auth.Blocked(a.Username, st.remote) {
		return Account{}, errors.New("too many failed logins; refused without checking")
	}
	ha1, acct, ok := auth.DigestHA1(a.Username)
	if !ok {
		auth.Failed(a.Username, st.remote)
		return Account{}, errors.New("no Digest login for this username (unknown, disabled, or password set before Digest support: log in once with the password, by Basic, the API or MQTT)")
	}
	if a.Username != acct.Username {
		// The HA1 was computed with the name as stored; the client hashed
		// the name as typed. Not a wrong password, so not a failure.
		return Account{}, fmt.Errorf("digest needs the username exactly as stored (%s)", acct.Username)
	}
	want := md5Hex(ha1 + ":" + a.Nonce + ":" + md5Hex(string(req.Method)+":"+a.URI))
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(a.Response))) != 1 {
		auth.Failed(a.Username, st.remote)
		return Account{}, errors.New("wrong password")
	}
	// Right, but for a nonce that is not this connection's: replayed, or
	// sent ahead by a client that reconnected. Either way, no login, and no
	// failure either: the client is told the nonce is stale.
	if subtle.ConstantTimeCompare([]byte(a.Nonce), []byte(st.nonce)) != 1 {
		return Account{}, &staleNonceError{}
	}
	auth.Succeeded(a.Username, st.remote)
	return acct, nil
}

// authorize says whether the connection may read: nil if so, else the
// response to send (see login). Every account reads every path (both roles
// may play streams). It is called by every handler of a request that
// concerns a path, before the path is looked up, so that an outsider cannot
// tell a served path from an unknown one.
func (s *Server) authorize(c *gortsplib.ServerConn) *base.Response {
	_, res := s.login(c)
	return res
}

// loggedIn reports whether the connection may make requests that need a
// login: always without an Authenticator.
func (s *Server) loggedIn(c *gortsplib.ServerConn) bool {
	if s.opts.Authenticator == nil {
		return true
	}
	st := s.state(c)
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.account != nil
}

// login returns the account the connection logged in as, or the response
// to send if it has not: 401 with the challenges, or the status of a login
// that could not be checked. Without an Authenticator both are nil.
func (s *Server) login(c *gortsplib.ServerConn) (*Account, *base.Response) {
	if s.opts.Authenticator == nil {
		return nil, nil
	}
	st := s.state(c)
	if st == nil {
		return nil, &base.Response{StatusCode: base.StatusInternalServerError}
	}
	st.mu.Lock()
	acct, refusal, stale := st.account, st.refusal, st.stale
	st.refusal = nil
	st.mu.Unlock()
	switch {
	case acct != nil:
		return acct, nil
	case refusal != nil:
		return nil, &base.Response{StatusCode: refusal.Status, StatusMessage: refusal.Reason}
	default:
		return nil, s.challenge(st, stale)
	}
}

// challenge is a 401 offering Digest (which ffmpeg and gortsplib choose)
// and Basic (for clients that have only that, and for accounts without a
// Digest secret).
func (s *Server) challenge(st *connState, stale bool) *base.Response {
	digest := `Digest realm="` + s.realm() + `", nonce="` + st.nonce + `"`
	if stale {
		digest += `, stale="TRUE"`
	}
	return &base.Response{
		StatusCode: base.StatusUnauthorized,
		Header: base.Header{
			"WWW-Authenticate": base.HeaderValue{digest, `Basic realm="` + s.realm() + `"`},
		},
	}
}
