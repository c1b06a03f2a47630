package socketio

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	siolog "github.com/zishang520/socket.io/v3/pkg/log"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/logstream"
	"github.com/nestmtx/nestmtx/internal/store"
)

// These tests speak Engine.IO 4 / Socket.IO 5 on a raw WebSocket, frame by
// frame; internal/app's tests use the real npm client. NESTMTX_TEST_LOG=1
// shows the server's log, DEBUG='*' (or 'engine*', 'socket.io*') the
// library's.

func init() {
	if os.Getenv("DEBUG") != "" {
		siolog.DEBUG.Store(true)
	}
}

type fakeTokens struct {
	mu sync.Mutex
	m  map[string]store.User
}

func (f *fakeTokens) LookupToken(t string) (store.User, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.m[t]
	if !ok {
		return store.User{}, time.Time{}, store.ErrTokenInvalid
	}
	return u, time.Now().Add(time.Hour), nil
}

func (f *fakeTokens) set(tok string, u *store.User) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u == nil {
		delete(f.m, tok)
	} else {
		f.m[tok] = *u
	}
}

// fakeAPI answers every request with what it saw; module "slow" waits for
// release, module "big" answers size bytes.
type fakeAPI struct {
	tokens  *fakeTokens
	release chan struct{}
	mu      sync.Mutex
	seen    []api.Request
}

type echo struct {
	Module string `json:"module"`
	Token  string `json:"token"`
	Remote string `json:"remote"`
	Client string `json:"client"`
	Entity string `json:"entity"`
	Big    string `json:"big,omitempty"`
}

func (f *fakeAPI) Handle(ctx context.Context, req api.Request) (any, *api.Error) {
	f.mu.Lock()
	f.seen = append(f.seen, req)
	f.mu.Unlock()
	if _, _, err := f.tokens.LookupToken(req.Token); err != nil {
		return nil, api.NewError(api.CodeUnauthorized, "the token is unknown or has expired; log in again").WithContext(req)
	}
	out := echo{Module: req.Module, Token: req.Token, Remote: req.Remote, Client: req.Client, Entity: req.Entity}
	switch req.Module {
	case "slow":
		select {
		case <-f.release:
		case <-ctx.Done():
		}
	case "big":
		out.Big = strings.Repeat("x", 64<<10)
	}
	return out, nil
}

const (
	adminTok  = "admin-token"
	viewerTok = "viewer-token"
)

type fixture struct {
	t      *testing.T
	srv    *Server
	http   *httptest.Server
	tokens *fakeTokens
	api    *fakeAPI
	bus    *events.Bus
	hub    *logstream.Hub
	log    *slog.Logger
}

func newFixture(t *testing.T, mutate func(*Options)) *fixture {
	t.Helper()
	tokens := &fakeTokens{m: map[string]store.User{
		adminTok:  {ID: 1, Username: "admin", Role: store.RoleAdmin, CanLogin: true},
		viewerTok: {ID: 2, Username: "bob", Role: store.RoleViewer, CanLogin: true},
	}}
	f := &fixture{t: t, tokens: tokens, api: &fakeAPI{tokens: tokens, release: make(chan struct{})},
		bus: events.NewBus(nil), hub: logstream.NewHub("nestmtx")}
	var out io.Writer = io.Discard
	if os.Getenv("NESTMTX_TEST_LOG") != "" {
		out = os.Stderr
	}
	f.log = slog.New(f.hub.Handler(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	o := Options{Handler: f.api, Tokens: tokens, Bus: f.bus, Logs: f.hub, Log: f.log}
	if mutate != nil {
		mutate(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	f.http = httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		f.http.Close()
	})
	return f
}

// raw is a Socket.IO client on a bare WebSocket.
type raw struct {
	t       *testing.T
	ws      *websocket.Conn
	frames  chan string
	pending []packet // received, not returned by next yet
	sid     string
	// connectErr is the CONNECT_ERROR packet's payload, when refused.
	connectErr map[string]any
}

type dialOpts struct {
	auth   map[string]any
	header http.Header
	query  url.Values
	// noRead: after connecting, never read again (not even pings).
	noRead bool
}

func (f *fixture) dial(o dialOpts) *raw {
	f.t.Helper()
	q := url.Values{"EIO": {"4"}, "transport": {"websocket"}}
	for k, v := range o.query {
		q[k] = v
	}
	u := "ws" + strings.TrimPrefix(f.http.URL, "http") + "/socket.io/?" + q.Encode()
	ws, resp, err := websocket.DefaultDialer.Dial(u, o.header)
	if err != nil {
		f.t.Fatalf("dial: %v (%v)", err, resp)
	}
	r := &raw{t: f.t, ws: ws, frames: make(chan string, 100000)}
	f.t.Cleanup(func() { ws.Close() })
	open := r.readFrame()
	if !strings.HasPrefix(open, "0{") {
		f.t.Fatalf("open packet %q", open)
	}
	connect := "40"
	if o.auth != nil {
		b, _ := json.Marshal(o.auth)
		connect += string(b)
	}
	r.write(connect)
	for {
		fr := r.readFrame()
		switch {
		case fr == "2":
			r.write("3")
			continue
		case strings.HasPrefix(fr, "40"):
			var p struct{ Sid string }
			if err := json.Unmarshal([]byte(fr[2:]), &p); err != nil {
				f.t.Fatalf("connect packet %q: %v", fr, err)
			}
			r.sid = p.Sid
		case strings.HasPrefix(fr, "44"):
			if err := json.Unmarshal([]byte(fr[2:]), &r.connectErr); err != nil {
				f.t.Fatalf("connect error packet %q: %v", fr, err)
			}
			return r
		default:
			f.t.Fatalf("unexpected frame before connect: %q", fr)
		}
		break
	}
	// Events and log lines go to the socket once the server set it up,
	// just after the client learns it is connected.
	waitFor(f.t, "the socket's registration", func() bool {
		for _, c := range f.srv.snapshot() {
			if c.sid == r.sid {
				return true
			}
		}
		return false
	})
	if !o.noRead {
		go r.readLoop()
	}
	return r
}

func (r *raw) readFrame() string {
	r.t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := r.ws.ReadMessage()
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	_ = r.ws.SetReadDeadline(time.Time{})
	return string(b)
}

func (r *raw) write(s string) {
	r.t.Helper()
	if err := r.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// readLoop answers pings and queues the Socket.IO frames ("4…" less the
// Engine.IO type); it closes frames when the connection ends.
func (r *raw) readLoop() {
	defer close(r.frames)
	for {
		_, b, err := r.ws.ReadMessage()
		if err != nil {
			if testing.Verbose() {
				r.t.Logf("connection %s ended: %v", r.sid, err)
			}
			return
		}
		s := string(b)
		switch {
		case s == "2":
			_ = r.ws.WriteMessage(websocket.TextMessage, []byte("3"))
		case strings.HasPrefix(s, "4"):
			r.frames <- s[1:]
		}
	}
}

// emit sends an event; ack >= 0 asks for an acknowledgement with that id.
func (r *raw) emit(event string, arg any, ack int) {
	r.t.Helper()
	b, err := json.Marshal([]any{event, arg})
	if err != nil {
		r.t.Fatal(err)
	}
	id := ""
	if ack >= 0 {
		id = fmt.Sprint(ack)
	}
	r.write("42" + id + string(b))
}

// packet is one received Socket.IO packet: an event ("2"), an ack ("3")
// or a disconnect ("1").
type packet struct {
	kind  byte
	name  string // the event's
	ackID string
	arg   json.RawMessage
}

func parsePacket(t *testing.T, s string) packet {
	t.Helper()
	p := packet{kind: s[0]}
	rest := s[1:]
	if p.kind == '3' {
		i := strings.IndexByte(rest, '[')
		p.ackID, rest = rest[:i], rest[i:]
	}
	if p.kind == '1' {
		return p
	}
	var args []json.RawMessage
	if err := json.Unmarshal([]byte(rest), &args); err != nil {
		t.Fatalf("packet %q: %v", s, err)
	}
	if p.kind == '2' {
		if err := json.Unmarshal(args[0], &p.name); err != nil {
			t.Fatalf("packet %q: %v", s, err)
		}
		args = args[1:]
	}
	if len(args) > 0 {
		p.arg = args[0]
	}
	return p
}

// next returns the first packet received that matches and was not
// returned yet; the zero packet when the connection ended first.
func (r *raw) next(match func(packet) bool) packet {
	r.t.Helper()
	for i, p := range r.pending {
		if match(p) {
			r.pending = append(r.pending[:i:i], r.pending[i+1:]...)
			return p
		}
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s, ok := <-r.frames:
			if !ok {
				return packet{}
			}
			p := parsePacket(r.t, s)
			if match(p) {
				return p
			}
			r.pending = append(r.pending, p)
		case <-timeout:
			r.t.Fatal("no matching packet within 30 s")
		}
	}
}

func (r *raw) event(name string) packet {
	r.t.Helper()
	p := r.next(func(p packet) bool { return p.kind == '2' && p.name == name })
	if p.kind == 0 {
		r.t.Fatalf("the connection ended before event %s", name)
	}
	return p
}

func errCode(t *testing.T, arg json.RawMessage) string {
	t.Helper()
	var e struct {
		Error *api.Error `json:"error"`
	}
	if err := json.Unmarshal(arg, &e); err != nil || e.Error == nil {
		t.Fatalf("not an error envelope: %s", arg)
	}
	return e.Error.Code
}

func TestConnectTokenPlacements(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	for name, o := range map[string]dialOpts{
		"auth":         {auth: map[string]any{"token": adminTok}},
		"auth bearer":  {auth: map[string]any{"token": "Bearer " + adminTok}},
		"header":       {header: http.Header{"Authorization": {"Bearer " + adminTok}}},
		"query":        {query: url.Values{"token": {adminTok}}},
		"auth first":   {auth: map[string]any{"token": adminTok}, query: url.Values{"token": {"wrong"}}},
		"header lower": {header: http.Header{"Authorization": {"bearer " + adminTok}}},
	} {
		r := f.dial(o)
		if r.connectErr != nil {
			t.Fatalf("%s: refused: %v", name, r.connectErr)
		}
		r.emit("request", map[string]any{"command": "list", "module": "cameras", "requestId": "r1"}, -1)
		var got echo
		if err := json.Unmarshal(r.event("r1").arg, &got); err != nil {
			t.Fatal(err)
		}
		if got.Token != adminTok || got.Remote != "127.0.0.1" || got.Client != "socketio:"+r.sid {
			t.Fatalf("%s: the API saw %+v (sid %s)", name, got, r.sid)
		}
	}
}

func TestConnectRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	for name, c := range map[string]struct {
		o        dialOpts
		code, in string
	}{
		"none":      {dialOpts{}, "UNAUTHORIZED", "a bearer token is required"},
		"bad":       {dialOpts{auth: map[string]any{"token": "nope"}}, "UNAUTHORIZED", "unknown or has expired"},
		"bad query": {dialOpts{query: url.Values{"token": {"nope"}}}, "UNAUTHORIZED", "unknown or has expired"},
		"level":     {dialOpts{auth: map[string]any{"token": adminTok, "logLevel": "loud"}}, "BAD_REQUEST", "logLevel: must be"},
	} {
		r := f.dial(c.o)
		if r.connectErr == nil {
			t.Fatalf("%s: connected", name)
		}
		msg, _ := r.connectErr["message"].(string)
		data, _ := json.Marshal(r.connectErr["data"])
		if !strings.Contains(msg, c.in) || errCode(t, data) != c.code {
			t.Fatalf("%s: connect_error %v", name, r.connectErr)
		}
	}
	if n := f.srv.Stats().Clients; n != 0 {
		t.Fatalf("%d clients registered", n)
	}
}

func TestRequestAddressing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *Options) { o.MaxRequestBytes = 1024 })
	r := f.dial(dialOpts{auth: map[string]any{"token": viewerTok}})

	// An acknowledgement alone is enough; the answer also comes with the requestId.
	r.emit("request", map[string]any{"command": "read", "module": "cameras", "entity": 7}, 5)
	p := r.next(func(p packet) bool { return p.kind == '3' })
	var got echo
	if err := json.Unmarshal(p.arg, &got); err != nil || p.ackID != "5" || got.Entity != "7" {
		t.Fatalf("ack %+v: %s", p, p.arg)
	}
	r.emit("request", map[string]any{"command": "list", "module": "users", "requestId": "both"}, 6)
	ev := r.event("both")
	ack := r.next(func(p packet) bool { return p.kind == '3' && p.ackID == "6" })
	if string(ev.arg) != string(ack.arg) {
		t.Fatalf("event %s, ack %s", ev.arg, ack.arg)
	}

	// A JSON string is a request too.
	r.emit("request", `{"command":"list","module":"users","requestId":"str"}`, -1)
	r.event("str")

	// The request's own token wins over the connection's.
	r.emit("request", map[string]any{"command": "list", "module": "users", "requestId": "tok", "token": "expired"}, -1)
	if c := errCode(t, r.event("tok").arg); c != "UNAUTHORIZED" {
		t.Fatalf("request with its own bad token: %s", c)
	}

	// Bad requests get the decoder's errors, byte for byte.
	bad := map[string]any{"command": "read", "module": "users", "requestId": "bad", "payload": 3}
	rawBad, _ := json.Marshal(bad)
	req, want := api.DecodeRequest(rawBad)
	wantJSON, _ := json.Marshal(want.WithContext(req))
	r.emit("request", bad, -1)
	if p := r.event("bad"); string(p.arg) != string(wantJSON) {
		t.Fatalf("got %s\nwant %s", p.arg, wantJSON)
	}

	// Unanswerable: no requestId and no ack, a bad requestId, a reserved one, not an object.
	for _, arg := range []any{
		map[string]any{"command": "list", "module": "users"},
		map[string]any{"command": "list", "module": "users", "requestId": "a b"},
		map[string]any{"command": "list", "module": "users", "requestId": "disconnect"},
		"not json",
		nil,
	} {
		r.emit("request", arg, -1)
		p := r.event("failure")
		if c := errCode(t, p.arg); c != "BAD_REQUEST" {
			t.Fatalf("%v: failure %s", arg, p.arg)
		}
	}

	// Too large.
	r.emit("request", map[string]any{"command": "create", "module": "users", "requestId": "big",
		"payload": map[string]any{"x": strings.Repeat("y", 2000)}}, -1)
	if c := errCode(t, r.event("big").arg); c != "PAYLOAD_TOO_LARGE" {
		t.Fatalf("big request: %s", c)
	}
}

func TestTooManyRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *Options) { o.MaxInFlightPerSocket = 2; o.MaxInFlight = 3 })
	a := f.dial(dialOpts{auth: map[string]any{"token": adminTok}})
	b := f.dial(dialOpts{auth: map[string]any{"token": adminTok}})
	slow := func(r *raw, id string) {
		r.emit("request", map[string]any{"command": "list", "module": "slow", "requestId": id}, -1)
	}
	slow(a, "a1")
	slow(a, "a2")
	slow(a, "a3")
	if p := a.event("a3"); !strings.Contains(string(p.arg), "this connection has 2 requests in progress") {
		t.Fatalf("third request on one connection: %s", p.arg)
	}
	slow(b, "b1")
	slow(b, "b2")
	if p := b.event("b2"); !strings.Contains(string(p.arg), "the daemon is busy") || errCode(t, p.arg) != "TOO_MANY_REQUESTS" {
		t.Fatalf("fourth request overall: %s", p.arg)
	}
	close(f.api.release)
	a.event("a1")
	a.event("a2")
	b.event("b1")
	slow(b, "b3") // the slots are free again
	b.event("b3")
	if n := f.srv.Stats().Refused; n != 2 {
		t.Fatalf("refused %d", n)
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	viewer := f.dial(dialOpts{auth: map[string]any{"token": viewerTok}})
	e := events.Event{Domain: "camera", Entity: events.ID(7), Event: events.CameraReady,
		Details: map[string]any{"path": "garden"}, At: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)}
	want, _ := json.Marshal(e)
	f.bus.Emit(e)
	for _, name := range []string{"camera:ready", "camera:*", "nestmtx:*"} {
		if p := viewer.event(name); string(p.arg) != string(want) {
			t.Fatalf("%s: %s, want %s", name, p.arg, want)
		}
	}
}

func TestLogs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	admin := f.dial(dialOpts{auth: map[string]any{"token": adminTok}})
	warnOnly := f.dial(dialOpts{auth: map[string]any{"token": adminTok, "logLevel": "warn"}})
	viewer := f.dial(dialOpts{auth: map[string]any{"token": viewerTok, "logLevel": "debug"}})

	isLog := func(msg string) func(packet) bool {
		return func(p packet) bool {
			return p.kind == '2' && p.name == "log" && strings.Contains(string(p.arg), msg)
		}
	}
	f.log.Debug("probe-debug")
	f.log.Info("probe-info", "n", 1)
	var rec map[string]any
	if err := json.Unmarshal(admin.next(isLog("probe-info")).arg, &rec); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"hostname", "level", "msg", "pid", "service", "time", "timestamp"} {
		if _, ok := rec[k]; !ok {
			t.Fatalf("log record lacks %s: %v", k, rec)
		}
	}
	if rec["level"] != float64(40) || rec["service"] != "nestmtx" {
		t.Fatalf("record %v", rec)
	}
	f.log.Warn("probe-warn")
	if p := warnOnly.next(func(p packet) bool { return p.name == "log" }); !strings.Contains(string(p.arg), "probe-warn") {
		t.Fatalf("warn-level client got %s first", p.arg)
	}
	admin.next(isLog("probe-warn"))

	// Levels change; a viewer may not follow the log.
	admin.emit("log:level", map[string]any{"level": "debug", "requestId": "lv"}, -1)
	if p := admin.event("lv"); string(p.arg) != `{"level":30,"name":"debug"}` {
		t.Fatalf("log:level answered %s", p.arg)
	}
	f.log.Debug("probe-debug-2")
	admin.next(isLog("probe-debug-2"))
	admin.emit("log:level", "off", 1)
	if p := admin.next(func(p packet) bool { return p.kind == '3' }); string(p.arg) != `{"level":0,"name":"off"}` {
		t.Fatalf("log:level off answered %s", p.arg)
	}
	admin.emit("log:level", "loud", 2)
	if p := admin.next(func(p packet) bool { return p.kind == '3' }); errCode(t, p.arg) != "BAD_REQUEST" {
		t.Fatalf("log:level loud answered %s", p.arg)
	}
	viewer.emit("log:level", "info", 3)
	if p := viewer.next(func(p packet) bool { return p.kind == '3' || p.name == "log" }); p.kind != '3' || errCode(t, p.arg) != "FORBIDDEN" {
		t.Fatalf("viewer's log:level: %+v %s", p, p.arg)
	}
}

func TestAuthenticateRefresh(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	r := f.dial(dialOpts{auth: map[string]any{"token": viewerTok, "logLevel": "info"}})
	f.tokens.set("fresh", &store.User{ID: 1, Username: "admin", Role: store.RoleAdmin, CanLogin: true})

	r.emit("authenticate", map[string]any{"token": "nope", "requestId": "a1"}, -1)
	if c := errCode(t, r.event("a1").arg); c != "UNAUTHORIZED" {
		t.Fatalf("bad token: %s", c)
	}
	r.emit("request", map[string]any{"command": "list", "module": "x", "requestId": "r1"}, -1)
	if p := r.event("r1"); !strings.Contains(string(p.arg), viewerTok) {
		t.Fatalf("after a refused refresh: %s", p.arg)
	}

	r.emit("authenticate", "fresh", 1)
	p := r.next(func(p packet) bool { return p.kind == '3' })
	var login Login
	if err := json.Unmarshal(p.arg, &login); err != nil || login.User.Username != "admin" || login.Expiration.IsZero() {
		t.Fatalf("authenticate answered %s", p.arg)
	}
	f.tokens.set(viewerTok, nil) // the old token ends: the connection lives on
	r.emit("request", map[string]any{"command": "list", "module": "x", "requestId": "r2"}, -1)
	if p := r.event("r2"); !strings.Contains(string(p.arg), `"token":"fresh"`) {
		t.Fatalf("after the refresh: %s", p.arg)
	}
	// Now an admin: the log it asked for at connect flows.
	f.log.Info("probe-after-refresh")
	r.next(func(p packet) bool { return p.name == "log" && strings.Contains(string(p.arg), "probe-after-refresh") })
}

func TestEndedTokenDisconnects(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *Options) { o.RecheckInterval = 50 * time.Millisecond })
	f.tokens.set("t1", &store.User{ID: 3, Username: "carol", Role: store.RoleViewer, CanLogin: true})
	r := f.dial(dialOpts{auth: map[string]any{"token": "t1"}})
	f.tokens.set("t1", nil)
	if c := errCode(t, r.event("failure").arg); c != "UNAUTHORIZED" {
		t.Fatalf("failure %s", c)
	}
	if p := r.next(func(p packet) bool { return p.kind == '1' }); p.kind != '1' {
		t.Fatal("no disconnect packet")
	}

	// EndLogins: at once, whatever the interval; a token still valid stays.
	g := newFixture(t, nil)
	g.tokens.set("t2", &store.User{ID: 3, Username: "carol", Role: store.RoleViewer, CanLogin: true})
	g.tokens.set("t3", &store.User{ID: 3, Username: "carol", Role: store.RoleViewer, CanLogin: true})
	ended := g.dial(dialOpts{auth: map[string]any{"token": "t2"}})
	kept := g.dial(dialOpts{auth: map[string]any{"token": "t3"}})
	g.tokens.set("t2", nil)
	if n := g.srv.EndLogins("Carol", ""); n != 1 {
		t.Fatalf("EndLogins ended %d", n)
	}
	ended.event("failure")
	kept.emit("request", map[string]any{"command": "list", "module": "x", "requestId": "k"}, -1)
	kept.event("k")
	if n := g.srv.Stats().Clients; n != 1 {
		t.Fatalf("%d clients", n)
	}
}

// TestSlowClient: a client that stops reading loses events but never holds
// up the bus, the log or the other clients; one that is far behind on
// answers is disconnected.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *Options) {
		o.MaxSendBuffer = 4 << 20
		o.PingInterval = time.Minute // the stuck client would be timed out otherwise
	})
	stuck := f.dial(dialOpts{auth: map[string]any{"token": adminTok}, noRead: true})
	fine := f.dial(dialOpts{auth: map[string]any{"token": viewerTok}})

	// 4000 events × 3 frames × 2 KiB: far more than the socket buffers
	// hold, in bursts of 100 events, well within what a client that reads
	// may be behind (SendBuffer).
	blob := map[string]any{"blob": strings.Repeat("z", 2<<10)}
	const n = 4000
	var slowest time.Duration
	for i := range n {
		start := time.Now()
		f.bus.Emit(events.Event{Domain: "camera", Entity: events.ID(uint64(i)), Event: "read", Details: blob})
		f.log.Info("flood", "i", i)
		slowest = max(slowest, time.Since(start))
		if i%100 == 99 {
			fine.next(func(p packet) bool {
				return p.name == "nestmtx:*" && strings.Contains(string(p.arg), fmt.Sprintf(`"entity":%d,`, i))
			})
		}
	}
	if slowest > time.Second {
		t.Errorf("an emit and a log line took %s", slowest)
	}
	st := f.srv.Stats()
	if st.DroppedEvents == 0 || st.DroppedLogs == 0 {
		t.Fatalf("nothing dropped for the stuck client: %+v", st)
	}

	// Answers are never dropped: far enough behind, the client goes.
	for i := range 100 {
		stuck.emit("request", map[string]any{"command": "list", "module": "big", "requestId": fmt.Sprint("b", i)}, -1)
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.srv.Stats().Kicked == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the stuck client was not disconnected: %+v", f.srv.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for f.srv.Stats().Clients != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the stuck client is still registered: %+v", f.srv.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	fine.emit("request", map[string]any{"command": "list", "module": "x", "requestId": "after"}, -1)
	fine.event("after")
}

func TestCloseDisconnects(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	a := f.dial(dialOpts{auth: map[string]any{"token": adminTok}})
	b := f.dial(dialOpts{auth: map[string]any{"token": viewerTok}})
	f.srv.Close()
	for _, r := range []*raw{a, b} {
		select {
		case _, ok := <-r.frames:
			for ok {
				_, ok = <-r.frames
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a client is still connected after Close")
		}
	}
	resp, err := http.Get(f.http.URL + "/socket.io/?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("after Close: %d", resp.StatusCode)
	}
}

func TestOriginsAndCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *Options) {
		o.CORSOrigins = []string{"https://ha.example:8123"}
		o.MaxClients = 2
	})
	get := func(origin string) *http.Response {
		req, _ := http.NewRequest("GET", f.http.URL+"/socket.io/?EIO=4&transport=polling", nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Header.Set("X-Body", string(b))
		return resp
	}
	if r := get("https://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", r.StatusCode)
	}
	if r := get("https://ha.example:8123"); r.StatusCode != http.StatusOK || r.Header.Get("Access-Control-Allow-Origin") != "https://ha.example:8123" {
		t.Fatalf("allowed origin: %d %v", r.StatusCode, r.Header)
	}
	if r := get(""); r.StatusCode != http.StatusOK { // two sessions now
		t.Fatalf("no origin: %d", r.StatusCode)
	}
	if r := get(""); r.StatusCode != http.StatusForbidden || !strings.Contains(r.Header.Get("X-Body"), "too many") {
		t.Fatalf("third session: %d %s", r.StatusCode, r.Header.Get("X-Body"))
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	for in, want := range map[any]int{"trace": 20, "DEBUG": 30, " info ": 40, "50": 50, float64(60): 60, float64(70): 70, "off": 0, "none": 0} {
		if got, ok := parseLevel(in); !ok || got != want {
			t.Errorf("parseLevel(%v) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []any{"loud", float64(45), float64(10), float64(40.5), nil, true} {
		if _, ok := parseLevel(in); ok {
			t.Errorf("parseLevel(%v) accepted", in)
		}
	}
	if f := string(frame("a\"b", []byte(`{"x":1}`))); f != `2["a\"b",{"x":1}]` {
		t.Fatalf("frame %s", f)
	}
}

// TestCloseDeliversLastEvents: events emitted just before Close (the
// cameras' last ones, at shutdown) still reach the clients.
func TestCloseDeliversLastEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	r := f.dial(dialOpts{auth: map[string]any{"token": viewerTok}})
	for i := range 50 {
		f.bus.Emit(events.Event{Domain: "camera", Entity: events.ID(uint64(i)), Event: events.CameraNotReady})
	}
	f.srv.Close()
	for i := range 50 {
		p := r.event("camera:notReady")
		if !strings.Contains(string(p.arg), fmt.Sprintf(`"entity":%d,`, i)) {
			t.Fatalf("event %d: %s", i, p.arg)
		}
	}
}

// TestConnectTimeout: a transport that never connects to a namespace is
// closed after ConnectTimeout.
func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *Options) { o.ConnectTimeout = 200 * time.Millisecond })
	u := "ws" + strings.TrimPrefix(f.http.URL, "http") + "/socket.io/?EIO=4&transport=websocket"
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, open, err := ws.ReadMessage(); err != nil || open[0] != '0' {
		t.Fatalf("open: %q %v", open, err)
	}
	start := time.Now()
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("closed after %s: %v", d, err)
			}
			return
		}
	}
}

// TestNoGoroutineLeak: clients that come and go leave nothing behind. Not
// parallel: it counts the process's goroutines.
func TestNoGoroutineLeak(t *testing.T) {
	f := newFixture(t, nil)
	// One client first, so that what lives as long as the server is counted.
	first := f.dial(dialOpts{auth: map[string]any{"token": adminTok}})
	first.emit("request", map[string]any{"command": "list", "module": "x", "requestId": "w"}, -1)
	first.event("w")
	first.ws.Close()
	waitFor(t, "no client", func() bool { return f.srv.Stats().Clients == 0 })
	base := runtime.NumGoroutine()
	for i := range 30 {
		tok := adminTok
		if i%2 == 0 {
			tok = viewerTok
		}
		r := f.dial(dialOpts{auth: map[string]any{"token": tok}})
		r.emit("request", map[string]any{"command": "list", "module": "x", "requestId": "q"}, -1)
		r.event("q")
		f.bus.Emit(events.Event{Domain: "camera", Event: "read"})
		r.event("camera:read")
		r.ws.Close()
	}
	waitFor(t, "no client", func() bool { return f.srv.Stats().Clients == 0 })
	waitFor(t, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= base+3 })
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 20 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
