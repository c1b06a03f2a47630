package hooks

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/events"
)

// record is one log line of the runner, with its attributes flattened.
type record struct {
	msg   string
	level slog.Level
	attrs map[string]string
}

// recorder is a slog handler the tests wait on: what the runner logs is
// how they learn that a hook started, exited or stopped.
type recorder struct {
	mu     *sync.Mutex
	recs   *[]record
	notify chan struct{} // closed and replaced on every record
	attrs  []slog.Attr
	shared *recorder
}

func newRecorder() *recorder {
	r := &recorder{mu: &sync.Mutex{}, recs: &[]record{}, notify: make(chan struct{})}
	r.shared = r
	return r
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	rec := record{msg: r.Message, level: r.Level, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	s := h.shared
	s.mu.Lock()
	*s.recs = append(*s.recs, rec)
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	return nil
}

func (h *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *recorder) WithGroup(string) slog.Handler { return h }

// match says whether rec has msg and the attributes kv (key, value pairs).
func (rec record) match(msg string, kv ...string) bool {
	if rec.msg != msg {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if rec.attrs[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

// all returns the records matching msg and kv.
func (h *recorder) all(msg string, kv ...string) []record {
	s := h.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []record
	for _, rec := range *s.recs {
		if rec.match(msg, kv...) {
			out = append(out, rec)
		}
	}
	return out
}

// waitN waits until n records match msg and kv, and returns them.
func (h *recorder) waitN(t *testing.T, n int, msg string, kv ...string) []record {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		s := h.shared
		s.mu.Lock()
		ch := s.notify
		s.mu.Unlock()
		if got := h.all(msg, kv...); len(got) >= n {
			return got
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no %d× %q %v in the log; it has:\n%s", n, msg, kv, h.dump())
		}
	}
}

func (h *recorder) wait(t *testing.T, msg string, kv ...string) record {
	t.Helper()
	return h.waitN(t, 1, msg, kv...)[0]
}

func (h *recorder) dump() string {
	s := h.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, r := range *s.recs {
		fmt.Fprintf(&b, "  %s %q %v\n", r.level, r.msg, r.attrs)
	}
	return b.String()
}

// script writes an executable sh script and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

type fixture struct {
	t   *testing.T
	bus *events.Bus
	r   *Runner
	log *recorder
	dir string
}

// start runs a runner whose every path has the hooks set (tune may change
// the options).
func start(t *testing.T, set Set, tune func(*Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, bus: events.NewBus(nil), log: newRecorder(), dir: t.TempDir()}
	o := Options{Bus: f.bus, Lookup: func(string) (Set, []string) { return set, nil },
		RTSPPort: func() string { return "8554" },
		Environ: []string{"PATH=" + os.Getenv("PATH"), "HOME=/home/x", "NESTMTX_ADMIN_PASSWORD=hunter2",
			"MQTT_PASS=hunter3", "MTX_PATH=from-the-daemon", "LANG=C.UTF-8"},
		RestartPause: 20 * time.Millisecond, StopGrace: 2 * time.Second, Log: slog.New(f.log)}
	if tune != nil {
		tune(&o)
	}
	f.r = Start(o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.r.Close(ctx)
		if n := f.r.Running(); n != 0 {
			t.Errorf("%d hook processes left after Close", n)
		}
	})
	return f
}

func (f *fixture) emit(cam uint64, name string, kv ...any) {
	d := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		d[kv[i].(string)] = kv[i+1]
	}
	f.bus.Emit(events.Event{Domain: events.DomainCamera, Entity: events.ID(cam), Event: name, Details: d})
}

func (f *fixture) file(name string) string {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil {
		f.t.Fatal(err)
	}
	return string(b)
}

func (f *fixture) pid(name string) int {
	f.t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(f.file(name)))
	if err != nil {
		f.t.Fatal(err)
	}
	return pid
}

// alive says whether pid runs (a zombie, killed but not yet reaped by its
// new parent, does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// waitGone waits for pid to be gone: once the runner says a hook stopped,
// its processes have been killed; an orphan may still wait for init.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func envMap(s string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// TestReadyLifecycle: runOnReady runs from ready to notReady with
// MediaMTX's environment and none of the daemon's secrets; it is killed
// (pid gone) at notReady, when runOnNotReady runs once.
func TestReadyLifecycle(t *testing.T) {
	dir := t.TempDir()
	set := Set{
		RunOnReady:    script(t, dir, "ready.sh", "echo $$ > "+dir+"/ready.pid\nenv > "+dir+"/ready.env\necho ready up\nexec sleep 600\n"),
		RunOnNotReady: script(t, dir, "gone.sh", "env > "+dir+"/gone.env\n"),
	}
	f := start(t, set, nil)
	f.dir = dir
	f.emit(7, events.CameraReady, "path", "front-door", "source_type", "webrtcSource", "source_id", "")
	f.log.wait(t, "hook output", "hook", "runOnReady", "line", "ready up", "path", "front-door", "camera_id", "7", "stream", "stdout")
	env := envMap(f.file("ready.env"))
	for k, want := range map[string]string{"MTX_PATH": "front-door", "MTX_SOURCE_TYPE": "webrtcSource", "MTX_SOURCE_ID": "",
		"MTX_QUERY": "", "RTSP_PORT": "8554", "HOME": "/home/x", "LANG": "C.UTF-8"} {
		if got, ok := env[k]; !ok || got != want {
			t.Errorf("%s = %q (set %v), want %q", k, got, ok, want)
		}
	}
	for _, k := range []string{"NESTMTX_ADMIN_PASSWORD", "MQTT_PASS", "G1", "MTX_READER_ID"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s is in the hook's environment", k)
		}
	}
	pid := f.pid("ready.pid")
	if !alive(pid) {
		t.Fatal("runOnReady is not running while the camera is ready")
	}

	f.emit(7, events.CameraNotReady, "path", "front-door", "source_type", "webrtcSource", "source_id", "", "reason", "x")
	f.log.wait(t, "hook stopped", "hook", "runOnReady")
	waitGone(t, pid)
	f.log.wait(t, "hook exited", "hook", "runOnNotReady", "exit_code", "0")
	if env := envMap(f.file("gone.env")); env["MTX_PATH"] != "front-door" || env["MTX_SOURCE_TYPE"] != "webrtcSource" {
		t.Errorf("runOnNotReady's environment: %v", env)
	}
}

// TestDemandRestart: runOnDemand with restart runs again each time it
// exits while the camera is demanded, and no more after unDemand.
func TestDemandRestart(t *testing.T) {
	dir := t.TempDir()
	set := Set{
		RunOnDemand:        script(t, dir, "demand.sh", "echo \"$MTX_QUERY\" >> "+dir+"/runs\nexit 3\n"),
		RunOnDemandRestart: true,
		RunOnUnDemand:      script(t, dir, "undemand.sh", "echo \"$MTX_PATH $MTX_QUERY\" > "+dir+"/undemand\n"),
	}
	f := start(t, set, nil)
	f.dir = dir
	f.emit(1, events.CameraDemand, "path", "cam", "reader_type", "rtspSession", "reader_id", "r1", "query", "a=1")
	f.log.waitN(t, 3, "hook failed", "hook", "runOnDemand", "exit_code", "3")
	// The unDemand's own event carries no query: the demand's is used.
	f.emit(1, events.CameraUnDemand, "path", "cam")
	f.log.wait(t, "hook done", "hook", "runOnDemand")
	f.log.wait(t, "hook exited", "hook", "runOnUnDemand")
	starts := len(f.log.all("hook started", "hook", "runOnDemand"))
	if runs := strings.Count(f.file("runs"), "a=1\n"); runs != starts || runs < 3 {
		t.Errorf("runs file has %d runs, the log %d starts", runs, starts)
	}
	if got := f.file("undemand"); got != "cam a=1\n" {
		t.Errorf("runOnUnDemand saw %q", got)
	}
}

// TestReadPerReader: each reader has its own runOnRead, stopped at its own
// unread; runOnUnread gets the reader's environment.
func TestReadPerReader(t *testing.T) {
	dir := t.TempDir()
	set := Set{
		RunOnRead:   "sleep 600",
		RunOnUnread: "sh -c 'echo $MTX_READER_TYPE $MTX_READER_ID $MTX_QUERY > " + dir + "/$MTX_READER_ID.unread'",
	}
	f := start(t, set, nil)
	f.dir = dir
	for _, r := range []string{"r1", "r2"} {
		f.emit(2, events.CameraRead, "path", "p", "reader_type", "rtspSession", "reader_id", r, "query", "q="+r)
	}
	f.log.waitN(t, 2, "hook started", "hook", "runOnRead")
	f.emit(2, events.CameraUnread, "path", "p", "reader_type", "rtspSession", "reader_id", "r1", "query", "q=r1")
	f.log.wait(t, "hook stopped", "hook", "runOnRead")
	f.log.wait(t, "hook exited", "hook", "runOnUnread")
	if got := f.file("r1.unread"); got != "rtspSession r1 q=r1\n" {
		t.Errorf("runOnUnread wrote %q", got)
	}
	if n := f.r.Running(); n != 1 {
		t.Errorf("%d hooks running, want r2's runOnRead only", n)
	}
}

// TestNoShellAndExpansion: the command is split, not given to a shell;
// $VARS are expanded from the hook's environment only.
func TestNoShellAndExpansion(t *testing.T) {
	f := start(t, Set{RunOnReady: `echo $MTX_PATH "a  b" '${RTSP_PORT}' [$NESTMTX_ADMIN_PASSWORD] ; | > x`}, nil)
	f.emit(3, events.CameraReady, "path", "garage", "source_type", "rtspsSource", "source_id", "")
	f.log.wait(t, "hook output", "hook", "runOnReady", "line", "garage a  b 8554 [] ; | > x")
}

// TestMaxProcesses: beyond the limit a hook is not started, and says so.
func TestMaxProcesses(t *testing.T) {
	f := start(t, Set{RunOnReady: "sleep 600"}, func(o *Options) { o.MaxProcesses = 1 })
	f.emit(1, events.CameraReady, "path", "a")
	f.log.wait(t, "hook started", "path", "a")
	f.emit(2, events.CameraReady, "path", "b")
	rec := f.log.wait(t, "hook not started: too many hook processes are running; it is tried again at its next event (or restart)", "path", "b")
	if rec.attrs["limit"] != "1" || rec.level != slog.LevelWarn {
		t.Errorf("log line %+v", rec)
	}
	// A slot freed is used by the next event.
	f.emit(1, events.CameraNotReady, "path", "a")
	f.log.wait(t, "hook stopped", "path", "a")
	f.emit(2, events.CameraNotReady, "path", "b")
	f.emit(2, events.CameraReady, "path", "b")
	f.log.wait(t, "hook started", "path", "b")
}

// TestOutputBounded: a line longer than LineBytes is cut; lines beyond the
// budget are dropped and counted.
func TestOutputBounded(t *testing.T) {
	dir := t.TempDir()
	body := "head -c 5000 /dev/zero | tr '\\0' x; echo\nseq 1 1000\necho err >&2\n"
	frozen := time.Now()
	f := start(t, Set{RunOnNotReady: script(t, dir, "flood.sh", body)}, func(o *Options) {
		o.LineBytes, o.LinesPerSecond = 64, 10 // a burst of 100 lines, never refilled
		o.now = func() time.Time { return frozen }
	})
	f.emit(1, events.CameraNotReady, "path", "p")
	f.log.wait(t, "hook exited", "hook", "runOnNotReady")
	lines := f.log.all("hook output")
	if len(lines) != 100 {
		t.Errorf("%d lines logged, want the burst of 100", len(lines))
	}
	first := f.log.all("hook output", "stream", "stdout")[0]
	if first.attrs["truncated"] != "true" || len(first.attrs["line"]) != 64 {
		t.Errorf("long line logged as %d bytes, truncated=%s", len(first.attrs["line"]), first.attrs["truncated"])
	}
	dropped := 0
	for _, rec := range f.log.all("hook output dropped: the hook writes faster than the log takes") {
		n, _ := strconv.Atoi(rec.attrs["lines"])
		dropped += n
	}
	if want := 1002 - 100; dropped != want {
		t.Errorf("%d lines reported dropped, want %d", dropped, want)
	}
}

// TestCloseKillsGroups: at Close a hook that ignores SIGINT is killed after
// the grace, with what it started in the background; a one-off hook
// started by the final events still runs.
func TestCloseKillsGroups(t *testing.T) {
	dir := t.TempDir()
	set := Set{
		RunOnReady: script(t, dir, "stubborn.sh", "trap '' INT\nsleep 600 &\necho $! > "+dir+"/bg.pid\necho $$ > "+dir+
			"/fg.pid\necho up\nwait\n"),
		RunOnNotReady: script(t, dir, "last.sh", "echo last > "+dir+"/last\n"),
	}
	f := start(t, set, func(o *Options) { o.StopGrace = 200 * time.Millisecond })
	f.dir = dir
	f.emit(1, events.CameraReady, "path", "p")
	f.log.wait(t, "hook output", "line", "up")
	fg, bg := f.pid("fg.pid"), f.pid("bg.pid")
	// The daemon stops: another camera's final notReady is emitted (its
	// ready came before the runner), then Close.
	f.emit(2, events.CameraNotReady, "path", "q")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.r.Close(ctx)
	if ctx.Err() != nil {
		t.Fatal("Close waited for the context")
	}
	waitGone(t, fg)
	waitGone(t, bg)
	if got := f.file("last"); got != "last\n" {
		t.Errorf("runOnNotReady at stop wrote %q", got)
	}
	f.log.wait(t, "hook did not stop after SIGINT; killing its process group", "hook", "runOnReady")
	// Nothing starts after Close.
	f.emit(1, events.CameraReady, "path", "p")
	if n := len(f.log.all("hook started", "hook", "runOnReady")); n != 1 {
		t.Errorf("runOnReady started %d times", n)
	}
}

// TestCameraDeleted: a camera whose state is removed loses its hooks even
// if its final events were missed.
func TestCameraDeleted(t *testing.T) {
	f := start(t, Set{RunOnReady: "sleep 600", RunOnRead: "sleep 600", RunOnDemand: "sleep 600"}, nil)
	f.emit(4, events.CameraDemand, "path", "p")
	f.emit(4, events.CameraReady, "path", "p")
	f.emit(4, events.CameraRead, "path", "p", "reader_id", "r")
	f.log.waitN(t, 3, "hook started", "camera_id", "4")
	f.bus.SetState(events.DomainCamera, 4, nil)
	f.log.waitN(t, 3, "hook stopped", "camera_id", "4")
}

// TestBadCommand: a program that does not exist is reported, not retried
// in a loop faster than the restart pause.
func TestBadCommand(t *testing.T) {
	f := start(t, Set{RunOnReady: "/nonexistent/hook", RunOnReadyRestart: true, RunOnNotReady: `"unterminated`}, nil)
	f.emit(1, events.CameraReady, "path", "p")
	f.log.waitN(t, 2, "hook could not start", "hook", "runOnReady", "program", "/nonexistent/hook")
	f.emit(1, events.CameraNotReady, "path", "p")
	f.log.wait(t, "hook not run: bad command line", "hook", "runOnNotReady")
	f.log.wait(t, "hook done", "hook", "runOnReady")
}
