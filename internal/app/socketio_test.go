package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// The Socket.IO tests drive the real npm socket.io-client, pinned, which
// scripts/test.sh installs into testdata/socketio/node_modules:
//
//	npm install --prefix internal/app/testdata/socketio --no-save --no-audit --no-fund --no-package-lock socket.io-client@4.8.4
//
// testdata/socketio/client.js is the client; it reports what it receives
// as JSON lines and takes commands as JSON lines.

const socketIOClientVersion = "4.8.4"

var sioDir = filepath.Join("testdata", "socketio")

// requireSocketIOClient returns node's path once node and the pinned client
// are there: in CI (CI set) their absence fails the test, elsewhere it is
// skipped, saying so.
func requireSocketIOClient(t testing.TB) string {
	t.Helper()
	node := testkit.RequireTool(t, "node", "nodejs")
	b, err := os.ReadFile(filepath.Join(sioDir, "node_modules", "socket.io-client", "package.json"))
	if err != nil {
		msg := "socket.io-client is not installed in internal/app/testdata/socketio; scripts/test.sh installs it " +
			"(npm install --prefix internal/app/testdata/socketio --no-save socket.io-client@" + socketIOClientVersion + ")"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; skipping because CI is unset")
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(b, &pkg); err != nil || pkg.Version != socketIOClientVersion {
		t.Fatalf("socket.io-client %q is installed; the tests pin %s (run scripts/test.sh)", pkg.Version, socketIOClientVersion)
	}
	return node
}

// sioMsg is one line client.js printed.
type sioMsg struct {
	T         string          `json:"t"`
	ID        string          `json:"id"`
	Transport string          `json:"transport"`
	Message   string          `json:"message"`
	Data      json.RawMessage `json:"data"`
	Reason    string          `json:"reason"`
	Name      string          `json:"name"`
	Arg       json.RawMessage `json:"arg"`
	N         int             `json:"n"`
}

// sioNode is one client.js process.
type sioNode struct {
	t      testing.TB
	in     io.WriteCloser
	mu     sync.Mutex
	msgs   []sioMsg
	taken  []bool
	notify chan struct{}
	stderr testkit.SyncBuffer
	seq    atomic.Int64
}

// startSIO runs a client against a with socket.io-client options opts.
func startSIO(t testing.TB, a *App, opts map[string]any) *sioNode {
	t.Helper()
	node := requireSocketIOClient(t)
	cfg, err := json.Marshal(map[string]any{"url": "http://" + a.HTTPAddr(), "opts": opts})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "client.js", string(cfg))
	cmd.Dir = sioDir
	c := &sioNode{t: t, notify: make(chan struct{}, 1)}
	cmd.Stderr = &c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReaderSize(out, 1<<20)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				var m sioMsg
				if json.Unmarshal(line, &m) == nil {
					c.mu.Lock()
					c.msgs = append(c.msgs, m)
					c.taken = append(c.taken, false)
					c.mu.Unlock()
					select {
					case c.notify <- struct{}{}:
					default:
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		c.in.Close() // client.js exits when its input ends
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
		if t.Failed() && c.stderr.String() != "" {
			t.Logf("client.js stderr: %s", c.stderr.String())
		}
	})
	return c
}

func (c *sioNode) send(cmd map[string]any) {
	c.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		c.t.Fatalf("client.js: %v", err)
	}
}

func (c *sioNode) emit(event string, arg any) {
	c.send(map[string]any{"op": "emit", "event": event, "arg": arg})
}

// wait returns the first message not returned yet that matches.
func (c *sioNode) wait(what string, timeout time.Duration, match func(sioMsg) bool) sioMsg {
	c.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for i, m := range c.msgs {
			if !c.taken[i] && match(m) {
				c.taken[i] = true
				c.mu.Unlock()
				return m
			}
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-deadline.C:
			c.t.Fatalf("Socket.IO client: no %s within %s", what, timeout)
		}
	}
}

// all is every message so far that matches, in order.
func (c *sioNode) all(match func(sioMsg) bool) []sioMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []sioMsg
	for _, m := range c.msgs {
		if match(m) {
			out = append(out, m)
		}
	}
	return out
}

// connected waits for the connection (a connect_error fails the test),
// then for one request's round trip: the server sets a socket up (events,
// log) just after the client learns it is connected, and before it
// answers the socket's first request.
func (c *sioNode) connected() sioMsg {
	c.t.Helper()
	m := c.wait("connection", 15*time.Second, func(m sioMsg) bool { return m.T == "connect" || m.T == "connect_error" })
	if m.T != "connect" {
		c.t.Fatalf("connect_error: %s %s", m.Message, m.Data)
	}
	c.mustOK(req("list", "version"), nil)
	return m
}

func (c *sioNode) event(name string, timeout time.Duration) sioMsg {
	c.t.Helper()
	return c.wait("event "+name, timeout, func(m sioMsg) bool { return m.T == "event" && m.Name == name })
}

// call sends a request with a fresh requestId and returns the answer.
func (c *sioNode) call(r map[string]any) json.RawMessage {
	c.t.Helper()
	id := fmt.Sprintf("req-%d", c.seq.Add(1))
	r = maps(r)
	r["requestId"] = id
	c.emit("request", r)
	return c.event(id, 30*time.Second).Arg
}

// mustOK is call, failing the test on an error answer.
func (c *sioNode) mustOK(r map[string]any, v any) json.RawMessage {
	c.t.Helper()
	body := c.call(r)
	if code := sioErrCode(body); code != "" {
		c.t.Fatalf("%v: %s", r, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			c.t.Fatalf("%s: %v", body, err)
		}
	}
	return body
}

func maps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sioErrCode is the code of an error envelope, "" for anything else.
func sioErrCode(body json.RawMessage) string {
	var e struct {
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == nil {
		return ""
	}
	return e.Error.Code
}

// loginMQTT logs in over MQTT and returns the bearer token.
func loginMQTT(t testing.TB, a *App, username, password string) string {
	t.Helper()
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	return rr.Login(t, username, password)
}

// TestSocketIOTokenPlacements: the token works from the handshake's auth,
// an Authorization header and the query, over WebSocket and long polling.
func TestSocketIOTokenPlacements(t *testing.T) {
	t.Parallel()
	a := startApp(t, nil)
	tok := loginMQTT(t, a, "admin", adminPassword)
	for name, opts := range map[string]map[string]any{
		"auth":                 {"auth": map[string]any{"token": tok}},
		"header, polling only": {"extraHeaders": map[string]any{"Authorization": "Bearer " + tok}, "transports": []string{"polling"}},
		"header, websocket":    {"extraHeaders": map[string]any{"Authorization": "Bearer " + tok}, "transports": []string{"websocket"}},
		"query":                {"query": map[string]any{"token": tok}},
	} {
		c := startSIO(t, a, opts)
		c.connected()
		var users struct {
			Total int `json:"total"`
		}
		c.mustOK(req("list", "users"), &users)
		if users.Total != 1 {
			t.Fatalf("%s: users list %+v", name, users)
		}
	}
}

// TestSocketIORefused: a missing or bad token refuses the connection with
// a connect_error that says why.
func TestSocketIORefused(t *testing.T) {
	t.Parallel()
	a := startApp(t, nil)
	for name, c := range map[string]struct {
		opts map[string]any
		msg  string
	}{
		"missing":   {map[string]any{}, "a bearer token is required"},
		"bad auth":  {map[string]any{"auth": map[string]any{"token": "not-a-token"}}, "the token is unknown or has expired"},
		"bad query": {map[string]any{"query": map[string]any{"token": "not-a-token"}, "transports": []string{"websocket"}}, "the token is unknown or has expired"},
	} {
		cl := startSIO(t, a, c.opts)
		m := cl.wait("connection", 15*time.Second, func(m sioMsg) bool { return m.T == "connect" || m.T == "connect_error" })
		if m.T != "connect_error" || !strings.Contains(m.Message, c.msg) || sioErrCode(m.Data) != "UNAUTHORIZED" {
			t.Fatalf("%s: %+v %s", name, m, m.Data)
		}
	}
}

// TestSocketIORequests walks every module over Socket.IO: answers on the
// requestId's event with MQTT's shapes, errors identical to MQTT's, the
// failure event, acknowledgements, a viewer's forbidden admin request.
func TestSocketIORequests(t *testing.T) {
	t.Parallel()
	a := startApp(t, nil)
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	tok := rr.Login(t, "admin", adminPassword)
	admin := startSIO(t, a, map[string]any{"auth": map[string]any{"token": tok, "logLevel": "off"}})
	admin.connected()

	var ver map[string]string
	admin.mustOK(req("list", "version"), &ver)
	if ver["release"] != "test" || ver["commit"] != "abc123" {
		t.Fatalf("version %v", ver)
	}
	var health struct {
		Healthy string                     `json:"healthy"`
		Details map[string]json.RawMessage `json:"details"`
	}
	admin.mustOK(req("list", "health"), &health)
	if health.Healthy == "" || health.Details["socketio"] == nil {
		t.Fatalf("health %+v", health)
	}
	var login struct {
		Bearer string `json:"bearer"`
		User   struct {
			ID uint64 `json:"id"`
		} `json:"user"`
	}
	admin.mustOK(req("create", "auth", "payload", map[string]any{"username": "admin", "password": adminPassword}), &login)
	if login.Bearer == "" || login.Bearer == tok {
		t.Fatalf("auth create %+v", login)
	}
	var vera struct {
		ID   uint64 `json:"id"`
		Role string `json:"role"`
	}
	admin.mustOK(req("create", "users", "payload", map[string]any{"username": "vera", "password": "veras-password", "role": "viewer"}), &vera)
	var list struct {
		Total int              `json:"total"`
		Items []map[string]any `json:"items"`
	}
	admin.mustOK(req("list", "users"), &list)
	if list.Total != 2 {
		t.Fatalf("users list %+v", list)
	}
	admin.mustOK(req("read", "users", "entity", vera.ID), nil)
	var cred struct {
		ID uint64 `json:"id"`
	}
	admin.mustOK(req("create", "credentials", "payload", map[string]any{"description": "Home", "oauth_client_id": "id",
		"oauth_client_secret": "secret", "dac_project_id": "project"}), &cred)
	admin.mustOK(req("list", "credentials"), &list)
	if list.Total != 1 || strings.Contains(fmt.Sprint(list.Items), "secret\"") {
		t.Fatalf("credentials list %+v", list)
	}
	admin.mustOK(req("read", "credentials", "entity", fmt.Sprint(cred.ID)), nil)
	cam := seedCamera(t, a, "Hall")
	admin.mustOK(req("list", "cameras"), &list)
	if list.Total != 1 {
		t.Fatalf("cameras list %+v", list)
	}
	admin.mustOK(req("read", "cameras", "entity", cam.ID), nil)

	// A viewer reads cameras but may not do an admin's work.
	viewerTok := rr.Login(t, "vera", "veras-password")
	viewer := startSIO(t, a, map[string]any{"auth": map[string]any{"token": viewerTok}, "transports": []string{"polling"}})
	viewer.connected()
	viewer.mustOK(req("list", "cameras"), &list)
	if code := sioErrCode(viewer.call(req("list", "users"))); code != "FORBIDDEN" {
		t.Fatalf("a viewer's users list: %s", code)
	}
	if code := sioErrCode(viewer.call(req("create", "credentials", "payload", map[string]any{"description": "x"}))); code != "FORBIDDEN" {
		t.Fatalf("a viewer's credentials create: %s", code)
	}
	// The request's own token wins over the connection's.
	if body := viewer.call(req("list", "users", "token", tok)); sioErrCode(body) != "" {
		t.Fatalf("the viewer's connection with the admin's token in the request: %s", body)
	}

	// Errors are MQTT's, byte for byte.
	for _, bad := range []map[string]any{
		req("read", "users"),
		req("list", "users", "entity", 3),
		req("list", "nothing"),
		req("explode", "users"),
		req("update", "cameras", "entity", cam.ID, "payload", map[string]any{"mtx_path": "no spaces allowed"}),
	} {
		bad = maps(bad)
		bad["requestId"] = "same-id"
		bad["token"] = tok
		viaMQTT := rr.Call(t, bad).Body
		admin.emit("request", bad)
		if viaSIO := admin.event("same-id", 30*time.Second).Arg; string(viaSIO) != string(viaMQTT) {
			t.Fatalf("%v:\nSocket.IO %s\nMQTT      %s", bad, viaSIO, viaMQTT)
		}
	}

	// No requestId: the answer comes through the acknowledgement, or, with
	// none, the error on "failure".
	admin.send(map[string]any{"op": "emit", "event": "request", "arg": req("list", "version"), "ack": 7})
	ack := admin.wait("ack", 30*time.Second, func(m sioMsg) bool { return m.T == "ack" && m.N == 7 })
	if !strings.Contains(string(ack.Arg), `"release":"test"`) {
		t.Fatalf("ack %s", ack.Arg)
	}
	admin.emit("request", req("list", "version"))
	if f := admin.event("failure", 30*time.Second); sioErrCode(f.Arg) != "BAD_REQUEST" || !strings.Contains(string(f.Arg), "requestId") {
		t.Fatalf("failure %s", f.Arg)
	}
	admin.emit("request", "not json")
	if f := admin.event("failure", 30*time.Second); sioErrCode(f.Arg) != "BAD_REQUEST" {
		t.Fatalf("failure %s", f.Arg)
	}
}

// TestSocketIOTokenRefreshAndRevocation: authenticate swaps the
// connection's token; a disabled user's requests fail at once and its
// connection is ended.
func TestSocketIOTokenRefreshAndRevocation(t *testing.T) {
	t.Parallel()
	a := startApp(t, nil)
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	adminTok := rr.Login(t, "admin", adminPassword)
	rr.Call(t, req("create", "users", "token", adminTok, "payload",
		map[string]any{"username": "bob", "password": "bobs-password", "role": "viewer"})).MustOK(t, nil)
	old := rr.Login(t, "bob", "bobs-password")
	bob := startSIO(t, a, map[string]any{"auth": map[string]any{"token": old}})
	bob.connected()

	// Refresh: a new token, then the old one logged out; the connection lives on.
	var fresh struct {
		Bearer string `json:"bearer"`
	}
	bob.mustOK(req("create", "auth", "payload", map[string]any{"username": "bob", "password": "bobs-password"}), &fresh)
	bob.emit("authenticate", map[string]any{"token": fresh.Bearer, "requestId": "auth-1"})
	var got struct {
		User struct {
			Username string `json:"username"`
		} `json:"user"`
		Expiration time.Time `json:"expiration"`
	}
	if err := json.Unmarshal(bob.event("auth-1", 30*time.Second).Arg, &got); err != nil || got.User.Username != "bob" || got.Expiration.IsZero() {
		t.Fatalf("authenticate answered %+v (%v)", got, err)
	}
	rr.Call(t, req("delete", "auth", "entity", "current", "token", old)).MustOK(t, nil)
	bob.mustOK(req("list", "cameras"), nil)
	bob.emit("authenticate", map[string]any{"token": "made-up", "requestId": "auth-2"})
	if code := sioErrCode(bob.event("auth-2", 30*time.Second).Arg); code != "UNAUTHORIZED" {
		t.Fatalf("authenticate with a made-up token: %s", code)
	}
	bob.mustOK(req("list", "cameras"), nil) // still on the fresh token

	// bob is disabled: the account change ends his connection at once
	// (endLogins), telling him why.
	rr.Call(t, req("update", "users", "entity", fmt.Sprint(userID(t, a, "bob")), "token", adminTok,
		"payload", map[string]any{"can_login": false})).MustOK(t, nil)
	if f := bob.event("failure", 30*time.Second); sioErrCode(f.Arg) != "UNAUTHORIZED" {
		t.Fatalf("failure %s", f.Arg)
	}
	if d := bob.wait("disconnect", 30*time.Second, func(m sioMsg) bool { return m.T == "disconnect" }); d.Reason != "io server disconnect" {
		t.Fatalf("disconnected: %s", d.Reason)
	}
}

// userID is the id of the user named username.
func userID(t testing.TB, a *App, username string) uint64 {
	t.Helper()
	u, err := a.store.UserByName(username)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// TestSocketIOCameraEvents: while ffmpeg reads a camera as Frigate does, a
// viewer's client gets camera:demand, camera:ready, camera:read and
// camera:unread in order, each also as camera:* and nestmtx:*.
func TestSocketIOCameraEvents(t *testing.T) {
	t.Parallel()
	requireSocketIOClient(t)
	testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]
	e.call("create", "users", "payload", map[string]any{"username": "vera", "password": "veras-password", "role": "viewer"})
	viewer := startSIO(t, e.app, map[string]any{"auth": map[string]any{"token": e.rr.Login(t, "vera", "veras-password")}})
	viewer.connected()

	if _, frames, err := runFFmpeg(t, frigateInputArgs, e.rtspURL("front-door"), 3*time.Second); err != nil || frames <= 0 {
		t.Fatalf("ffmpeg read %d frames: %v", frames, err)
	}
	viewer.event("camera:unread", 30*time.Second)

	type ev struct {
		Domain  string         `json:"domain"`
		Entity  *uint64        `json:"entity"`
		Event   string         `json:"event"`
		Details map[string]any `json:"details"`
		At      string         `json:"at"`
	}
	ofCamera := func(names ...string) []ev {
		var out []ev
		for _, m := range viewer.all(func(m sioMsg) bool { return m.T == "event" && slices.Contains(names, m.Name) }) {
			var x ev
			if err := json.Unmarshal(m.Arg, &x); err != nil {
				t.Fatal(err)
			}
			if x.Domain == "camera" && x.Entity != nil && *x.Entity == cam {
				out = append(out, x)
			}
		}
		return out
	}
	seq := func(evs []ev) string {
		var s []string
		for _, x := range evs {
			if slices.Contains([]string{"demand", "ready", "read", "unread"}, x.Event) {
				s = append(s, x.Event)
			}
		}
		return strings.Join(s, " ")
	}
	named := ofCamera("camera:demand", "camera:ready", "camera:read", "camera:unread")
	if got := seq(named); got != "demand ready read unread" {
		t.Fatalf("camera events: %q", got)
	}
	for _, x := range named {
		if x.Details["path"] != "front-door" || x.At == "" {
			t.Fatalf("event %+v", x)
		}
	}
	for _, wildcard := range []string{"camera:*", "nestmtx:*"} {
		testkit.Eventually(t, 10*time.Second, wildcard+" events", func() bool {
			return seq(ofCamera(wildcard)) == "demand ready read unread"
		})
		// The same payloads, in the same order.
		var want, got []string
		for _, m := range viewer.all(func(m sioMsg) bool {
			return m.T == "event" && strings.HasPrefix(m.Name, "camera:") && m.Name != "camera:*"
		}) {
			want = append(want, string(m.Arg))
		}
		for _, m := range viewer.all(func(m sioMsg) bool { return m.T == "event" && m.Name == wildcard }) {
			if len(got) < len(want) {
				got = append(got, string(m.Arg))
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s payloads differ:\n%v\n%v", wildcard, got, want)
		}
	}
}

// TestSocketIOLogStream: admins get the daemon's log live, with NestMTX's
// fields and numeric levels, from info up unless they ask; viewers get
// none.
func TestSocketIOLogStream(t *testing.T) {
	t.Parallel()
	a := startApp(t, nil)
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	adminTok := rr.Login(t, "admin", adminPassword)
	rr.Call(t, req("create", "users", "token", adminTok, "payload",
		map[string]any{"username": "vera", "password": "veras-password", "role": "viewer"})).MustOK(t, nil)
	admin := startSIO(t, a, map[string]any{"auth": map[string]any{"token": adminTok}})
	admin.connected()
	viewer := startSIO(t, a, map[string]any{"auth": map[string]any{"token": rr.Login(t, "vera", "veras-password"), "logLevel": "trace"}})
	viewer.connected()

	isLog := func(msg string) func(sioMsg) bool {
		return func(m sioMsg) bool {
			return m.T == "event" && m.Name == "log" && strings.Contains(string(m.Arg), `"msg":"`+msg+`"`)
		}
	}
	before := time.Now()
	a.log.Debug("socketio-probe-debug")
	a.log.Info("socketio-probe", "n", 7)
	var rec struct {
		Hostname  string         `json:"hostname"`
		Level     *int           `json:"level"`
		Msg       string         `json:"msg"`
		PID       int            `json:"pid"`
		Service   string         `json:"service"`
		Time      int64          `json:"time"`
		Timestamp string         `json:"timestamp"`
		Attrs     map[string]any `json:"attrs"`
	}
	if err := json.Unmarshal(admin.wait("the info probe", 30*time.Second, isLog("socketio-probe")).Arg, &rec); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	ts, err := time.Parse(time.RFC3339Nano, rec.Timestamp)
	if rec.Level == nil || *rec.Level != 40 || rec.Hostname != host || rec.PID != os.Getpid() || rec.Service != "nestmtx" ||
		rec.Time < before.UnixMilli()-1000 || err != nil || ts.UnixMilli() != rec.Time || rec.Attrs["n"] != float64(7) {
		t.Fatalf("log record %+v (%v)", rec, err)
	}
	if got := admin.all(isLog("socketio-probe-debug")); len(got) != 0 {
		t.Fatalf("a debug line reached an info-level client: %s", got[0].Arg)
	}

	// The client asks for debug.
	admin.send(map[string]any{"op": "emit", "event": "log:level", "arg": "debug", "ack": 1})
	if m := admin.wait("log:level's ack", 30*time.Second, func(m sioMsg) bool { return m.T == "ack" }); string(m.Arg) != `{"level":30,"name":"debug"}` {
		t.Fatalf("log:level answered %s", m.Arg)
	}
	a.log.Debug("socketio-probe-debug-2")
	if err := json.Unmarshal(admin.wait("the debug probe", 30*time.Second, isLog("socketio-probe-debug-2")).Arg, &rec); err != nil || *rec.Level != 30 {
		t.Fatalf("debug record %+v", rec)
	}

	// The viewer: no log line at all, and no way to ask for one.
	viewer.send(map[string]any{"op": "emit", "event": "log:level", "arg": "info", "ack": 2})
	if m := viewer.wait("log:level's ack", 30*time.Second, func(m sioMsg) bool { return m.T == "ack" }); sioErrCode(m.Arg) != "FORBIDDEN" {
		t.Fatalf("a viewer's log:level answered %s", m.Arg)
	}
	viewer.mustOK(req("list", "cameras"), nil)
	if got := viewer.all(func(m sioMsg) bool { return m.T == "event" && m.Name == "log" }); len(got) != 0 {
		t.Fatalf("a viewer got %d log lines: %s", len(got), got[0].Arg)
	}
}

// TestSocketIOStuckClient: an admin's client that stops reading its socket
// while the daemon logs a flood neither slows the logging nor another
// client's requests; it loses log lines instead.
func TestSocketIOStuckClient(t *testing.T) {
	t.Parallel()
	a := startApp(t, nil)
	tok := loginMQTT(t, a, "admin", adminPassword)
	stuck := startSIO(t, a, map[string]any{"auth": map[string]any{"token": tok, "logLevel": "debug"}, "transports": []string{"websocket"}})
	stuck.connected()
	stuck.send(map[string]any{"op": "pause"})
	stuck.wait("the pause", 10*time.Second, func(m sioMsg) bool { return m.T == "paused" })
	other := startSIO(t, a, map[string]any{"auth": map[string]any{"token": tok, "logLevel": "off"}, "transports": []string{"websocket"}})
	other.connected()

	rtt := func() time.Duration {
		start := time.Now()
		other.mustOK(req("read", "users", "entity", 1), nil)
		return time.Since(start)
	}
	var baseline []time.Duration
	for range 20 {
		baseline = append(baseline, rtt())
	}

	// The flood: 1 KiB lines as fast as the daemon can log them.
	pad := strings.Repeat("p", 1<<10)
	stop := make(chan struct{})
	var lines atomic.Int64
	var slowest atomic.Int64
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			a.log.Info("flood", "pad", pad, "i", lines.Load())
			if d := int64(time.Since(start)); d > slowest.Load() {
				slowest.Store(d)
			}
			lines.Add(1)
		}
	}()
	var during []time.Duration
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		during = append(during, rtt())
	}
	close(stop)
	<-flooded

	st := a.socketIO().Stats()
	slices.Sort(baseline)
	slices.Sort(during)
	t.Logf("%d log lines in 4 s (slowest %s); request round trips: baseline median %s, during the flood median %s max %s; %+v",
		lines.Load(), time.Duration(slowest.Load()), baseline[len(baseline)/2], during[len(during)/2], during[len(during)-1], st)
	if st.DroppedLogs == 0 {
		t.Fatalf("the stuck client lost no log line: %+v", st)
	}
	if lines.Load() < 2000 || time.Duration(slowest.Load()) > time.Second {
		t.Fatalf("the daemon's logging was held up: %d lines, the slowest took %s", lines.Load(), time.Duration(slowest.Load()))
	}
	if during[len(during)-1] > 3*time.Second || during[len(during)/2] > 500*time.Millisecond {
		t.Fatalf("requests slowed down: median %s, max %s", during[len(during)/2], during[len(during)-1])
	}
}

// TestSocketIOShutdown: the daemon's shutdown closes every Socket.IO
// connection, WebSocket and long polling, and does not wait for them.
func TestSocketIOShutdown(t *testing.T) {
	t.Parallel()
	a := startApp(t, nil)
	tok := loginMQTT(t, a, "admin", adminPassword)
	ws := startSIO(t, a, map[string]any{"auth": map[string]any{"token": tok}, "transports": []string{"websocket"}})
	ws.connected()
	poll := startSIO(t, a, map[string]any{"auth": map[string]any{"token": tok}, "transports": []string{"polling"}})
	poll.connected()
	poll.mustOK(req("list", "version"), nil)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
	for _, c := range []*sioNode{ws, poll} {
		c.wait("disconnect", 30*time.Second, func(m sioMsg) bool { return m.T == "disconnect" })
	}
}

// TestSocketIOCORS: browser pages of other origins cannot connect unless
// http_cors_origins lists them; clients without an Origin can.
func TestSocketIOCORS(t *testing.T) {
	t.Parallel()
	get := func(a *App, origin string) *http.Response {
		r, _ := http.NewRequest("GET", "http://"+a.HTTPAddr()+"/socket.io/?EIO=4&transport=polling", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	closed := startApp(t, nil)
	if r := get(closed, "https://ha.example:8123"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("any origin by default: %d", r.StatusCode)
	}
	if r := get(closed, ""); r.StatusCode != http.StatusOK {
		t.Fatalf("no origin: %d", r.StatusCode)
	}
	open := startApp(t, func(c *config.Config) { c.HTTPCORSOrigins = "https://ha.example:8123" })
	if r := get(open, "https://ha.example:8123"); r.StatusCode != http.StatusOK || r.Header.Get("Access-Control-Allow-Origin") != "https://ha.example:8123" {
		t.Fatalf("a listed origin: %d %v", r.StatusCode, r.Header)
	}
	if r := get(open, "https://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("an unlisted origin: %d", r.StatusCode)
	}
}
