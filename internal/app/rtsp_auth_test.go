package app

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// frigateInputArgs are Frigate's preset-rtsp-generic input arguments (its
// default input preset; docs/users-and-consumers.md §4).
var frigateInputArgs = []string{"-hide_banner", "-avoid_negative_ts", "make_zero", "-fflags", "+genpts+discardcorrupt",
	"-rtsp_transport", "tcp", "-timeout", "5000000", "-use_wallclock_as_timestamps", "1"}

// frigateRead runs ffmpeg on rawURL as Frigate would for 3 s and returns its
// output, the frames it read (-1 if it printed no count) and its error.
func frigateRead(t *testing.T, rawURL string) (string, int, error) {
	t.Helper()
	return runFFmpeg(t, frigateInputArgs, rawURL, 3*time.Second)
}

// captureLog makes the App log into the returned buffer (at debug level).
func captureLog(buf *testkit.SyncBuffer) func(*App) {
	return func(a *App) {
		a.log = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// TestRTSPLoginFrigate: ffmpeg with Frigate's input arguments reads a
// camera with the admin's password in the URL (Digest, which ffmpeg picks),
// and with a viewer's; without credentials or with a wrong password it
// fails with 401, and the wrong password is logged without the password.
func TestRTSPLoginFrigate(t *testing.T) {
	t.Parallel()
	testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	var log testkit.SyncBuffer
	e := startE2EWith(t, nestsim.Options{}, nil, captureLog(&log))
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})

	// Frames, with the admin's login (its password has spaces: escaped).
	out, frames, err := frigateRead(t, e.rtspURL("front-door"))
	if err != nil || frames < 25 {
		t.Fatalf("ffmpeg as admin: %v, %d frames\n%s", err, frames, out)
	}

	// No credentials: 401, and the path is not even looked up.
	out, frames, err = frigateRead(t, rtspURLAs(e.app, nil, "front-door"))
	if err == nil || !strings.Contains(out, "401") || frames > 0 {
		t.Fatalf("ffmpeg without a login: %v, %d frames, want a 401 failure\n%s", err, frames, out)
	}

	// A wrong password: 401.
	const wrong = "not-the-password"
	start := time.Now()
	out, frames, err = frigateRead(t, rtspURLAs(e.app, url.UserPassword("admin", wrong), "front-door"))
	if err == nil || !strings.Contains(out, "401") || frames > 0 {
		t.Fatalf("ffmpeg with a wrong password: %v, %d frames, want a 401 failure\n%s", err, frames, out)
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Fatalf("the wrong password was refused after %s, want the ~1 s delay", took)
	}

	// A viewer reads too; its password needs escaping in a URL.
	const viewerPW = "p@ss w:rd/1"
	if _, err := e.app.Store().CreateUser("viewer1", viewerPW, true, store.RoleViewer); err != nil {
		t.Fatal(err)
	}
	out, frames, err = frigateRead(t, rtspURLAs(e.app, url.UserPassword("viewer1", viewerPW), "front-door"))
	if err != nil || frames < 25 {
		t.Fatalf("ffmpeg as a viewer: %v, %d frames\n%s", err, frames, out)
	}

	logs := log.String()
	// ffmpeg chose Digest, checked against the HA1 the store keeps.
	for _, who := range []string{"admin", "viewer1"} {
		if !strings.Contains(grepLines(logs, `msg="rtsp login"`), "username="+who+" remote=127.0.0.1 method=digest") {
			t.Fatalf("no Digest login of %s logged:\n%s", who, grepLines(logs, "rtsp login"))
		}
	}
	if n := strings.Count(logs, `msg="rtsp login failed"`); n != 1 {
		t.Fatalf("%d \"rtsp login failed\" lines, want one (for the wrong password)\n%s", n, logs)
	}
	for _, secret := range []string{wrong, adminPassword, viewerPW, url.PathEscape(adminPassword)} {
		if strings.Contains(logs, secret) {
			t.Fatalf("the daemon's log has a password (%q)", secret)
		}
	}
	if !strings.Contains(grepLines(logs, `msg="rtsp login failed"`), "username=admin remote=127.0.0.1 method=digest") {
		t.Fatalf("the failure is not logged with its username and address:\n%s", grepLines(logs, "rtsp login"))
	}
}

// TestRTSPAnonymous: with NESTMTX_RTSP_ANONYMOUS=true a reader plays with no
// login, and the daemon says once that RTSP is open.
func TestRTSPAnonymous(t *testing.T) {
	t.Parallel()
	testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	var log testkit.SyncBuffer
	e := startE2EWith(t, nestsim.Options{}, func(c *config.Config) { c.RTSPAnonymous = true }, captureLog(&log))
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	out, frames, err := frigateRead(t, rtspURLAs(e.app, nil, "front-door"))
	if err != nil || frames < 25 {
		t.Fatalf("ffmpeg without a login on an anonymous daemon: %v, %d frames\n%s", err, frames, out)
	}
	const warning = `level=WARN msg="RTSP is open to anyone on the network (NESTMTX_RTSP_ANONYMOUS=true)"`
	if n := strings.Count(log.String(), warning); n != 1 {
		t.Fatalf("%d warnings that RTSP is open, want 1:\n%s", n, grepLines(log.String(), "RTSP"))
	}
}

// TestRTSPLoginIsOnByDefault: a daemon with the default settings refuses a
// reader without credentials, with a challenge, for a camera that exists
// as for one that does not (gortsplib's client here, no ffmpeg needed).
func TestRTSPLoginIsOnByDefault(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	for _, path := range []string{"front-door", "no-such-camera"} {
		if st, _ := describe(t, rtspURLAs(e.app, nil, path)); st != 401 {
			t.Fatalf("DESCRIBE %s without a login: %d, want 401", path, st)
		}
	}
	if st, _ := describe(t, e.rtspURL("no-such-camera")); st != 404 {
		t.Fatalf("DESCRIBE of an unknown camera as admin: %d, want 404", st)
	}
	readPath(t, e.rtspURL("front-door")).flowing(t, 0)
	if l := e.app.rtsp.Listener(); l == nil || l.Status().Open == 0 {
		t.Fatalf("the RTSP listener is not guarded or does not count the reader: %v", l)
	}
}

func grepLines(text, substr string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}
