package rtspserver

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
)

var hexNonce = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Without credentials a request about a path gets 401 with a Digest and a
// Basic challenge, the nonce is the connection's own, and the connection
// stays open for the retry.
func TestNoCredentialsGetBothChallenges(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newTestAuth(map[string]string{"alice": "pw-alice"}), nil)
	c := dialRaw(t, ts.addr)
	if res := c.do(base.Options, ts.url("", "", "cam"), nil); res.StatusCode != base.StatusOK {
		t.Fatalf("OPTIONS: %d, want 200 without a login", res.StatusCode)
	}
	res := c.do(base.Describe, ts.url("", "", "cam"), nil)
	digest, basic := challenges(t, res)
	if digest.Realm != "nestmtx" || !hexNonce.MatchString(digest.Nonce) || digest.Algorithm != nil {
		t.Fatalf("Digest challenge %q", res.Header["WWW-Authenticate"][0])
	}
	if want := `Digest realm="nestmtx", nonce="` + digest.Nonce + `"`; res.Header["WWW-Authenticate"][0] != want {
		t.Fatalf("Digest challenge %q, want %q", res.Header["WWW-Authenticate"][0], want)
	}
	if basic != `Basic realm="nestmtx"` {
		t.Fatalf("Basic challenge %q", basic)
	}
	// The same connection answers again, with the same nonce.
	again, _ := challenges(t, c.do(base.Describe, ts.url("", "", "cam"), nil))
	if again.Nonce != digest.Nonce {
		t.Fatalf("nonce changed within a connection: %s then %s", digest.Nonce, again.Nonce)
	}
	// Another connection has its own.
	other, _ := challenges(t, dialRaw(t, ts.addr).do(base.Describe, ts.url("", "", "cam"), nil))
	if other.Nonce == digest.Nonce {
		t.Fatal("two connections share a nonce")
	}
	// Every request about a path needs the login, not only DESCRIBE.
	for _, m := range []base.Method{base.Setup, base.GetParameter} {
		h := base.Header{}
		if m == base.Setup {
			h["Transport"] = base.HeaderValue{"RTP/AVP/TCP;unicast;interleaved=0-1"}
		}
		if res := c.do(m, ts.url("", "", "cam/trackID=0"), h); res.StatusCode != base.StatusUnauthorized {
			t.Fatalf("%s without a login: %d, want 401", m, res.StatusCode)
		}
	}
	if b, d, _ := ts.auth.counts(); b != 0 || d != 0 {
		t.Fatalf("the authenticator was asked %d+%d times with no credentials sent", b, d)
	}
}

// An outsider cannot tell a served path from an unknown one: both are 401
// until the login; then the unknown one is 404.
func TestUnknownPathIs401BeforeLogin(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newTestAuth(map[string]string{"alice": "pw-alice"}), nil)
	c := dialRaw(t, ts.addr)
	known := c.do(base.Describe, ts.url("", "", "cam"), nil)
	unknown := c.do(base.Describe, ts.url("", "", "no-such-path"), nil)
	if known.StatusCode != base.StatusUnauthorized || unknown.StatusCode != base.StatusUnauthorized {
		t.Fatalf("known path %d, unknown path %d; want 401 for both", known.StatusCode, unknown.StatusCode)
	}
	if len(known.Header["WWW-Authenticate"]) != len(unknown.Header["WWW-Authenticate"]) || len(known.Body) != len(unknown.Body) {
		t.Fatalf("the answers differ: %v / %v", known, unknown)
	}
	setup := base.Header{"Transport": base.HeaderValue{"RTP/AVP/TCP;unicast;interleaved=0-1"}}
	if res := dialRaw(t, ts.addr).do(base.Setup, ts.url("", "", "no-such-path/trackID=0"), setup); res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("SETUP of an unknown path without a login: %d, want 401", res.StatusCode)
	}
	login := basicHeader("alice", "pw-alice")
	if res := c.do(base.Describe, ts.url("", "", "no-such-path"), login); res.StatusCode != base.StatusNotFound {
		t.Fatalf("unknown path after the login: %d, want 404", res.StatusCode)
	}
	if res := c.do(base.Describe, ts.url("", "", "cam"), login); res.StatusCode != base.StatusOK {
		t.Fatalf("known path after the login: %d, want 200", res.StatusCode)
	}
}

// Basic with the right password is 200, checked once per connection;
// different credentials later are checked again and a wrong one undoes
// the login.
func TestBasicLogin(t *testing.T) {
	t.Parallel()
	// RFC 7617 allows ':' in the password (gortsplib's parser does not).
	ts := startServer(t, newTestAuth(map[string]string{"alice": "pw:alice x"}), nil)
	c := dialRaw(t, ts.addr)
	if res := c.do(base.Describe, ts.url("", "", "cam"), basicHeader("alice", "pw:alice x")); res.StatusCode != base.StatusOK {
		t.Fatalf("DESCRIBE with Basic: %d, want 200", res.StatusCode)
	}
	if res := c.do(base.Describe, ts.url("", "", "cam"), basicHeader("alice", "pw:alice x")); res.StatusCode != base.StatusOK {
		t.Fatalf("second DESCRIBE: %d", res.StatusCode)
	}
	if res := c.do(base.Describe, ts.url("", "", "cam"), nil); res.StatusCode != base.StatusOK {
		t.Fatalf("DESCRIBE without credentials after the login: %d, want 200 (remembered)", res.StatusCode)
	}
	if b, _, _ := ts.auth.counts(); b != 1 {
		t.Fatalf("the password was checked %d times for one connection, want 1", b)
	}
	if res := c.do(base.Describe, ts.url("", "", "cam"), basicHeader("alice", "wrong")); res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("DESCRIBE with a wrong password after a login: %d, want 401", res.StatusCode)
	}
	if res := c.do(base.Describe, ts.url("", "", "cam"), nil); res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("after a failed login the connection is still logged in: %d", res.StatusCode)
	}
}

// gortsplib's own client chooses Digest when it is offered, and plays.
func TestDigestLoginPlays(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newTestAuth(map[string]string{"alice": "pw-alice"}), nil)
	p, err := play(t, ts.url("alice", "pw-alice", "cam"))
	if err != nil {
		t.Fatal(err)
	}
	p.next(t, 10)
	b, d, failed := ts.auth.counts()
	if b != 0 || d == 0 || len(failed) != 0 {
		t.Fatalf("Basic checks %d, Digest checks %d, failures %v; want Digest only", b, d, failed)
	}
}

// A wrong password waits about a second for its 401, logs once without
// the password, counts a failure, and holds no other connection meanwhile.
func TestWrongPasswordIsSlowAndAlone(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newTestAuth(map[string]string{"alice": "pw-alice"}), nil)
	type result struct {
		res  *base.Response
		err  error
		took time.Duration
	}
	bad := make(chan result, 1)
	go func() {
		c := gortsplib.Client{}
		u, _ := base.ParseURL(ts.url("alice", "secret-guess", "cam"))
		start := time.Now()
		if err := c.Start(u.Scheme, u.Host); err != nil {
			bad <- result{err: err}
			return
		}
		defer c.Close()
		_, res, err := c.Describe(u)
		bad <- result{res, err, time.Since(start)}
	}()
	var rec map[string]string
	select {
	case r := <-ts.log.failed:
		rec = attrs(r)
	case r := <-bad:
		t.Fatalf("the wrong login was answered (%v, %v) before it was logged", r.res, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("no \"rtsp login failed\" log line")
	}
	// The wrong login is now waiting out its delay: another connection
	// logs in and reads meanwhile.
	start := time.Now()
	p, err := play(t, ts.url("alice", "pw-alice", "cam"))
	if err != nil {
		t.Fatal(err)
	}
	p.next(t, 1)
	select {
	case r := <-bad:
		t.Fatalf("the wrong login was answered after %s, before the good one was served (%s); want about 1 s", r.took, time.Since(start))
	default:
	}
	r := <-bad
	var bs liberrors.ErrClientBadStatusCode
	if !errors.As(r.err, &bs) || bs.Code != base.StatusUnauthorized {
		t.Fatalf("wrong password: %v, want 401", r.err)
	}
	if r.took < 900*time.Millisecond {
		t.Fatalf("wrong password answered after %s, want about 1 s", r.took)
	}
	if rec["username"] != "alice" || rec["remote"] != "127.0.0.1" {
		t.Fatalf("log line attributes %v, want username alice and remote 127.0.0.1", rec)
	}
	for _, l := range ts.log.all() {
		for k, v := range attrs(l) {
			if strings.Contains(v, "secret-guess") || strings.Contains(v, md5Hex("alice:nestmtx:secret-guess")) {
				t.Fatalf("log %q has the password or its hash in %s", l.Message, k)
			}
		}
	}
	n := 0
	for _, l := range ts.log.all() {
		if l.Message == "rtsp login failed" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d \"rtsp login failed\" lines for one failure", n)
	}
	if _, _, failed := ts.auth.counts(); !slices.Equal(failed, []string{"alice@127.0.0.1"}) {
		t.Fatalf("failures recorded %v", failed)
	}
}

// A Digest response made for another connection's nonce does not log in
// (it is answered as stale); the same response for this connection's
// nonce does.
func TestDigestNonceOfAnotherConnection(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newTestAuth(map[string]string{"alice": "pw-alice"}), nil)
	url := ts.url("", "", "cam")
	a, b := dialRaw(t, ts.addr), dialRaw(t, ts.addr)
	nonceA, _ := challenges(t, a.do(base.Describe, url, nil))
	nonceB, _ := challenges(t, b.do(base.Describe, url, nil))
	res := b.do(base.Describe, url, digestHeader("alice", "pw-alice", nonceA.Nonce, base.Describe, url))
	stale, _ := challenges(t, res)
	if stale.Nonce != nonceB.Nonce || stale.Stale == nil || !strings.EqualFold(*stale.Stale, "true") {
		t.Fatalf("challenge after a foreign nonce %q, want this connection's nonce with stale", res.Header["WWW-Authenticate"][0])
	}
	if res := b.do(base.Describe, url, nil); res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("the foreign nonce logged the connection in: %d", res.StatusCode)
	}
	if res := b.do(base.Describe, url, digestHeader("alice", "pw-alice", nonceB.Nonce, base.Describe, url)); res.StatusCode != base.StatusOK {
		t.Fatalf("Digest with the connection's nonce: %d, want 200", res.StatusCode)
	}
	// A wrong password with any nonce is a failure; a right one never was.
	if _, _, failed := ts.auth.counts(); len(failed) != 0 {
		t.Fatalf("failures recorded %v", failed)
	}
	c := dialRaw(t, ts.addr)
	nonceC, _ := challenges(t, c.do(base.Describe, url, nil))
	for _, h := range []struct {
		name string
		hdr  base.Header
	}{
		{"wrong realm", base.Header{"Authorization": headers.Authorization{Method: headers.AuthMethodDigest, Username: "alice",
			Realm: "other", Nonce: nonceC.Nonce, URI: url, Response: md5Hex("x")}.Marshal()}},
		{"wrong uri", digestHeader("alice", "pw-alice", nonceC.Nonce, base.Describe, ts.url("", "", "other"))},
		{"wrong password", digestHeader("alice", "pw-nope", nonceC.Nonce, base.Describe, url)},
		{"unknown user", digestHeader("mallory", "pw-alice", nonceC.Nonce, base.Describe, url)},
	} {
		if res := c.do(base.Describe, url, h.hdr); res.StatusCode != base.StatusUnauthorized {
			t.Fatalf("%s: %d, want 401", h.name, res.StatusCode)
		}
	}
	if _, _, failed := ts.auth.counts(); !slices.Equal(failed, []string{"alice@127.0.0.1", "mallory@127.0.0.1"}) {
		t.Fatalf("failures recorded %v, want the wrong password and the unknown user", failed)
	}
}

// VLC signs SETUP with the stream's URL instead of the track's.
func TestDigestVLCSetupURI(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newTestAuth(map[string]string{"alice": "pw-alice"}), nil)
	url := ts.url("", "", "cam")
	c := dialRaw(t, ts.addr)
	ch, _ := challenges(t, c.do(base.Describe, url, nil))
	h := digestHeader("alice", "pw-alice", ch.Nonce, base.Setup, url+"/")
	h["Transport"] = base.HeaderValue{"RTP/AVP/TCP;unicast;interleaved=0-1"}
	if res := c.do(base.Setup, url+"/trackID=0", h); res.StatusCode != base.StatusOK {
		t.Fatalf("SETUP signed for the stream URL: %d, want 200", res.StatusCode)
	}
}

// A (username, address) the Authenticator blocks is refused without
// looking at the response.
func TestDigestBlocked(t *testing.T) {
	t.Parallel()
	auth := newTestAuth(map[string]string{"alice": "pw-alice"})
	auth.blocked["alice"] = true
	ts := startServer(t, auth, nil)
	url := ts.url("", "", "cam")
	c := dialRaw(t, ts.addr)
	ch, _ := challenges(t, c.do(base.Describe, url, nil))
	if res := c.do(base.Describe, url, digestHeader("alice", "pw-alice", ch.Nonce, base.Describe, url)); res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("blocked login: %d, want 401", res.StatusCode)
	}
	if _, d, _ := auth.counts(); d != 0 {
		t.Fatal("a blocked login was checked")
	}
}

// A busy checker (a *StatusError from Basic) is answered with its status
// at once, not as a wrong password.
func TestBasicBusy(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, func(o *Options) { o.Authenticator = busyAuth{} })
	start := time.Now()
	res := dialRaw(t, ts.addr).do(base.Describe, ts.url("", "", "cam"), basicHeader("alice", "pw"))
	if res.StatusCode != base.StatusServiceUnavailable {
		t.Fatalf("busy login: %d, want 503", res.StatusCode)
	}
	if took := time.Since(start); took >= loginFailDelay {
		t.Fatalf("busy login answered after %s: it waited out a wrong login's delay", took)
	}
}

type busyAuth struct{}

func (busyAuth) Basic(context.Context, string, string, string) (Account, error) {
	return Account{}, fmt.Errorf("login: %w", &StatusError{Status: base.StatusServiceUnavailable, Reason: "busy"})
}
func (busyAuth) DigestHA1(string) (string, Account, bool) { return "", Account{}, false }
func (busyAuth) Succeeded(string, string)                 {}
func (busyAuth) Failed(string, string)                    {}
func (busyAuth) Blocked(string, string) bool              { return false }

// Without an Authenticator every reader is served as before.
func TestNoAuthenticatorServesAnyone(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, nil)
	c := dialRaw(t, ts.addr)
	if res := c.do(base.Describe, ts.url("", "", "cam"), nil); res.StatusCode != base.StatusOK {
		t.Fatalf("DESCRIBE: %d, want 200", res.StatusCode)
	}
	if res := c.do(base.Describe, ts.url("", "", "nope"), nil); res.StatusCode != base.StatusNotFound {
		t.Fatalf("unknown path: %d, want 404", res.StatusCode)
	}
	p, err := play(t, ts.url("", "", "cam"))
	if err != nil {
		t.Fatal(err)
	}
	p.next(t, 5)
}
