package rtspserver

import (
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/nestmtx/nestmtx/internal/netguard"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// setupTCP sets up path "cam" over TCP on c, logged in as alice, and
// returns the session id.
func setupTCP(t *testing.T, ts *testServer, c *rawConn) string {
	t.Helper()
	url := ts.url("", "", "cam")
	login := basicHeader("alice", "pw-alice")
	if res := c.do(base.Describe, url, login); res.StatusCode != base.StatusOK {
		t.Fatalf("DESCRIBE: %d", res.StatusCode)
	}
	res := c.do(base.Setup, url+"/trackID=0", base.Header{"Transport": base.HeaderValue{"RTP/AVP/TCP;unicast;interleaved=0-1"}})
	if res.StatusCode != base.StatusOK {
		t.Fatalf("SETUP: %d", res.StatusCode)
	}
	id, _, _ := strings.Cut(res.Header["Session"][0], ";")
	return id
}

// TestStrangerCannotUseAnotherReadersSession: gortsplib answers TEARDOWN
// (and OPTIONS or GET_PARAMETER naming a session) inside the session, where
// no handler checks a login: a stranger who knew the session id could end
// someone's stream, or keep a dead one alive.
func TestStrangerCannotUseAnotherReadersSession(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newTestAuth(map[string]string{"alice": "pw-alice"}), nil)
	alice := dialRaw(t, ts.addr)
	id := setupTCP(t, ts, alice)
	url := ts.url("", "", "cam")
	stranger := dialRaw(t, ts.addr)
	for _, m := range []base.Method{base.Options, base.GetParameter, base.Teardown} {
		res := stranger.do(m, url, base.Header{"Session": base.HeaderValue{id}})
		if _, named := res.Header["Session"]; named || (m == base.Teardown && res.StatusCode == base.StatusOK) {
			t.Errorf("%s by a stranger naming alice's session: %d %v", m, res.StatusCode, res.Header)
		}
	}
	// Alice's session is still there: she plays it.
	if res := alice.do(base.Play, url, base.Header{"Session": base.HeaderValue{id}}); res.StatusCode != base.StatusOK {
		t.Fatalf("alice's PLAY after the stranger's TEARDOWN: %d", res.StatusCode)
	}
}

// TestTornDownReaderIsIdleAgain: PLAY exempts a connection from the idle
// timeout; TEARDOWN must end the exemption, or a client could hold
// connection slots forever by playing once.
func TestTornDownReaderIsIdleAgain(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newTestAuth(map[string]string{"alice": "pw-alice"}), func(o *Options) {
		o.guard = func(g *netguard.Options) {
			g.HandshakeTimeout, g.IdleTimeout, g.RequestTimeout = 0, 300*time.Millisecond, 0
		}
	})
	c := dialRaw(t, ts.addr)
	id := setupTCP(t, ts, c)
	url := ts.url("", "", "cam")
	if res := c.do(base.Play, url, base.Header{"Session": base.HeaderValue{id}}); res.StatusCode != base.StatusOK {
		t.Fatalf("PLAY: %d", res.StatusCode)
	}
	if res := c.do(base.Teardown, url, base.Header{"Session": base.HeaderValue{id}}); res.StatusCode != base.StatusOK {
		t.Fatalf("TEARDOWN: %d", res.StatusCode)
	}
	testkit.WaitPeerClose(t, c.nc, 5*time.Second)
	if st := ts.srv.Listener().Status(); st.TimedOut != 1 {
		t.Fatalf("listener status %+v, want the torn-down connection timed out", st)
	}
}

// TestDigestLoginClearsFailures: a Digest login, like a Basic one, forgives
// the owner's earlier typos; and a Digest username in another case than
// stored is refused without counting as a wrong password.
func TestDigestLoginClearsFailures(t *testing.T) {
	t.Parallel()
	auth := newTestAuth(map[string]string{"alice": "pw-alice"})
	ts := startServer(t, auth, nil)
	url := ts.url("", "", "cam")
	c := dialRaw(t, ts.addr)
	ch, _ := challenges(t, c.do(base.Describe, url, nil))
	if res := c.do(base.Describe, url, digestHeader("Alice", "pw-alice", ch.Nonce, base.Describe, url)); res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("Digest as Alice: %d, want 401", res.StatusCode)
	}
	if res := c.do(base.Describe, url, digestHeader("alice", "pw-alice", ch.Nonce, base.Describe, url)); res.StatusCode != base.StatusOK {
		t.Fatalf("Digest as alice: %d", res.StatusCode)
	}
	auth.mu.Lock()
	defer auth.mu.Unlock()
	if len(auth.failed) != 0 {
		t.Errorf("a Digest name in another case counted as a failure: %v", auth.failed)
	}
	if len(auth.succeeded) != 1 || !strings.HasPrefix(auth.succeeded[0], "alice@") {
		t.Errorf("the Digest login was not reported as a success: %v", auth.succeeded)
	}
}
