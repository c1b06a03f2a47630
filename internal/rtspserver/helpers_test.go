package rtspserver

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/conn"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/relay"
)

// testAuth is an Authenticator over a fixed table of plaintext passwords.
type testAuth struct {
	users map[string]string

	mu          sync.Mutex
	basicCalls  int
	digestCalls int
	failed      []string // "username@remote"
	succeeded   []string
	blocked     map[string]bool
}

func newTestAuth(users map[string]string) *testAuth {
	return &testAuth{users: users, blocked: map[string]bool{}}
}

var errBadLogin = errors.New("invalid username or password")

func (a *testAuth) Basic(_ context.Context, username, password, _ string) (Account, error) {
	a.mu.Lock()
	a.basicCalls++
	a.mu.Unlock()
	if pw, ok := a.users[username]; ok && pw == password {
		return Account{Username: username}, nil
	}
	return Account{}, errBadLogin
}

func (a *testAuth) DigestHA1(username string) (string, Account, bool) {
	a.mu.Lock()
	a.digestCalls++
	a.mu.Unlock()
	// As the store does: found in any case, the HA1 of the stored name.
	for stored, pw := range a.users {
		if strings.EqualFold(stored, username) {
			return md5Hex(stored + ":" + DefaultRealm + ":" + pw), Account{Username: stored}, true
		}
	}
	return "", Account{}, false
}

func (a *testAuth) Succeeded(username, remote string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.succeeded = append(a.succeeded, username+"@"+remote)
}

func (a *testAuth) Failed(username, remote string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failed = append(a.failed, username+"@"+remote)
}

func (a *testAuth) Blocked(username, _ string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.blocked[username]
}

func (a *testAuth) counts() (basic, digest int, failed []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.basicCalls, a.digestCalls, append([]string(nil), a.failed...)
}

// logCapture is a slog.Handler that keeps the records and signals each
// "rtsp login failed".
type logCapture struct {
	mu      sync.Mutex
	records []slog.Record
	failed  chan slog.Record
}

func newLogCapture() *logCapture { return &logCapture{failed: make(chan slog.Record, 16)} }

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	if r.Message == "rtsp login failed" {
		select {
		case h.failed <- r.Clone():
		default:
		}
	}
	return nil
}
func (h *logCapture) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCapture) WithGroup(string) slog.Handler      { return h }

func (h *logCapture) all() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.records...)
}

func attrs(r slog.Record) map[string]string {
	m := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	return m
}

// A plausible SPS/PPS (640x360 High): the relay only copies them into the
// SDP and in band.
var (
	testSPS = []byte{0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x61, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96}
	testPPS = []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
)

type testServer struct {
	srv  *Server
	auth *testAuth
	log  *logCapture
	addr string
}

// url is a path's URL, with user info when user is not empty.
func (ts *testServer) url(user, pass, path string) string {
	if user == "" {
		return "rtsp://" + ts.addr + "/" + path
	}
	return "rtsp://" + user + ":" + pass + "@" + ts.addr + "/" + path
}

// startServer serves path "cam", a relay fed with an IDR every 40 ms, with
// the given authenticator (nil: none). adjust may change the options.
func startServer(t *testing.T, auth *testAuth, adjust func(*Options)) *testServer {
	t.Helper()
	lc := newLogCapture()
	path := &FixedPath{}
	o := Options{Address: "127.0.0.1:0", StartTimeout: 5 * time.Second, Resolver: Paths{"cam": path},
		Log: slog.New(lc)}
	if auth != nil {
		o.Authenticator = auth
	}
	if adjust != nil {
		adjust(&o)
	}
	srv, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	r, err := relay.New(srv.Gortsplib(), relay.Params{SPS: testSPS, PPS: testPPS})
	if err != nil {
		t.Fatal(err)
	}
	path.Relay = r
	t.Cleanup(r.Close)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		seg := r.BeginSegment()
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		for ts := uint32(0); ; ts += 3600 {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			_ = seg.WriteVideo(ts, [][]byte{{0x65, 0x88, 0x84, 0x00, 0x33, 0xff}})
		}
	}()
	t.Cleanup(func() { close(done); wg.Wait() })
	return &testServer{srv: srv, auth: auth, log: lc, addr: srv.Addr()}
}

// rawConn speaks RTSP on one TCP connection, for what a client library
// would hide (the challenge, its nonce, a forged Authorization).
type rawConn struct {
	t    *testing.T
	nc   net.Conn
	c    *conn.Conn
	cseq int
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, c: conn.NewConn(nc)}
}

// do sends one request and returns the response; a connection error fails
// the test.
func (r *rawConn) do(method base.Method, url string, h base.Header) *base.Response {
	r.t.Helper()
	res, err := r.try(method, url, h)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, url, err)
	}
	return res
}

func (r *rawConn) try(method base.Method, url string, h base.Header) (*base.Response, error) {
	u, err := base.ParseURL(url)
	if err != nil {
		r.t.Fatal(err)
	}
	if h == nil {
		h = base.Header{}
	}
	r.cseq++
	h["CSeq"] = base.HeaderValue{strconv.Itoa(r.cseq)}
	_ = r.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := r.c.WriteRequest(&base.Request{Method: method, URL: u, Header: h}); err != nil {
		return nil, err
	}
	// A playing connection also carries interleaved media: skip it.
	for {
		what, err := r.c.Read()
		if err != nil {
			return nil, err
		}
		if res, ok := what.(*base.Response); ok {
			return res, nil
		}
	}
}

func basicHeader(user, pass string) base.Header {
	return base.Header{"Authorization": base.HeaderValue{"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
}

func digestHeader(user, pass, nonce string, method base.Method, uri string) base.Header {
	resp := md5Hex(md5Hex(user+":"+DefaultRealm+":"+pass) + ":" + nonce + ":" + md5Hex(string(method)+":"+uri))
	return base.Header{"Authorization": headers.Authorization{Method: headers.AuthMethodDigest, Username: user,
		Realm: DefaultRealm, Nonce: nonce, URI: uri, Response: resp}.Marshal()}
}

// challenges parses a 401's WWW-Authenticate values.
func challenges(t *testing.T, res *base.Response) (digest headers.Authenticate, basic string) {
	t.Helper()
	if res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("status %d, want 401", res.StatusCode)
	}
	v := res.Header["WWW-Authenticate"]
	if len(v) != 2 {
		t.Fatalf("WWW-Authenticate %q, want a Digest and a Basic challenge", v)
	}
	if err := digest.Unmarshal(base.HeaderValue{v[0]}); err != nil || digest.Method != headers.AuthMethodDigest {
		t.Fatalf("first challenge %q is not Digest (%v)", v[0], err)
	}
	return digest, v[1]
}

// player is a gortsplib client over TCP that plays url and counts packets.
type player struct {
	c       *gortsplib.Client
	packets chan struct{}
	err     chan error
}

func play(t *testing.T, url string) (*player, error) {
	t.Helper()
	tcp := gortsplib.TransportTCP
	p := &player{c: &gortsplib.Client{Transport: &tcp}, packets: make(chan struct{}, 1024), err: make(chan error, 1)}
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.c.Start(u.Scheme, u.Host); err != nil {
		return nil, err
	}
	t.Cleanup(p.c.Close)
	desc, _, err := p.c.Describe(u)
	if err != nil {
		return nil, err
	}
	if err := p.c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		return nil, err
	}
	p.c.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) {
		select {
		case p.packets <- struct{}{}:
		default:
		}
	})
	if _, err := p.c.Play(nil); err != nil {
		return nil, err
	}
	go func() { p.err <- p.c.Wait() }()
	return p, nil
}

// next waits for n more packets.
func (p *player) next(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case <-p.packets:
		case err := <-p.err:
			t.Fatalf("the reader ended: %v", err)
		case <-deadline:
			t.Fatal("no packets within 10 s")
		}
	}
}
