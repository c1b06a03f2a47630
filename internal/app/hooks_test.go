package app

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/hooks"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// tuneHooks adjusts the daemon's hooks runner before it starts.
func tuneHooks(f func(*hooks.Options)) func(*App) {
	return func(a *App) { a.hooks.tune = f }
}

// hookScript writes an executable sh script into dir.
func hookScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitHookFile waits for a file a hook writes (atomically, by a rename)
// and returns its content.
func waitHookFile(t *testing.T, path string) string {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, "the hook to write "+filepath.Base(path), func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitHookLines waits until the file has n lines, and returns them.
func waitHookLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	testkit.Eventually(t, 30*time.Second, fmt.Sprintf("%d lines in %s", n, filepath.Base(path)), func() bool {
		b, _ := os.ReadFile(path)
		lines = strings.Fields(string(b))
		return len(lines) >= n
	})
	return lines
}

// processAlive says whether pid runs (a killed orphan waiting for init to
// reap it does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func waitProcessGone(t *testing.T, pid int, why string) {
	t.Helper()
	testkit.Eventually(t, 15*time.Second, fmt.Sprintf("hook process %d to be killed %s", pid, why), func() bool { return !processAlive(pid) })
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHookReadyEnvironment: runOnReady gets MediaMTX's environment (the
// path, the source type of an RTSP and of a WebRTC camera, the daemon's
// RTSP port) and none of the daemon's secrets, which are in its own
// environment. Not parallel: it sets the process's environment.
func TestHookReadyEnvironment(t *testing.T) {
	t.Setenv("NESTMTX_ADMIN_PASSWORD", "the-hook-must-not-see-this")
	dir := t.TempDir()
	ready := hookScript(t, dir, "ready.sh", `env > "`+dir+`/$MTX_PATH.tmp" && mv "`+dir+`/$MTX_PATH.tmp" "`+dir+`/$MTX_PATH.env"`+"\n")
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.Hooks.RunOnReady = ready })
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door", "Living Room": "living-room"})
	_, port, _ := net.SplitHostPort(e.app.RTSPAddr())

	for path, source := range map[string]string{"front-door": "rtspsSource", "living-room": "webrtcSource"} {
		readPath(t, e.rtspURL(path))
		env := waitHookFile(t, filepath.Join(dir, path+".env"))
		for _, want := range []string{"MTX_PATH=" + path, "MTX_SOURCE_TYPE=" + source, "RTSP_PORT=" + port} {
			if !strings.Contains("\n"+env, "\n"+want+"\n") {
				t.Errorf("%s: the hook's environment lacks %s:\n%s", path, want, env)
			}
		}
		if strings.Contains(env, "NESTMTX_ADMIN_PASSWORD") || strings.Contains(env, "the-hook-must-not-see-this") {
			t.Errorf("%s: the daemon's secret reached the hook:\n%s", path, env)
		}
	}
}

// TestHookDemandRestart: runOnDemand with runOnDemandRestart runs again
// each time it exits while the path is demanded; its third run stays, and
// is killed at the unDemand, when runOnUnDemand runs.
func TestHookDemandRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	demand := hookScript(t, dir, "demand.sh", `echo $$ >> "`+runs+`"
[ "$(wc -l < "`+runs+`")" -ge 3 ] && exec sleep 600
exit 0
`)
	undemand := hookScript(t, dir, "undemand.sh", `echo "$MTX_PATH" > "`+dir+`/undemand.tmp" && mv "`+dir+`/undemand.tmp" "`+dir+`/undemand"`+"\n")
	e := startE2EWith(t, nestsim.Options{}, func(c *config.Config) {
		c.Hooks.RunOnDemand, c.Hooks.RunOnDemandRestart, c.Hooks.RunOnUnDemand = demand, true, undemand
	}, tuneHooks(func(o *hooks.Options) { o.RestartPause = 100 * time.Millisecond }))
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]

	r := readPath(t, e.rtspURL("front-door"))
	pids := waitHookLines(t, runs, 3)
	last := atoi(t, pids[2])
	if !processAlive(last) {
		t.Fatal("the third run of runOnDemand is not running while the path is demanded")
	}
	r.c.Close()
	e.waitEvent("camera", cam, "unDemand")
	waitProcessGone(t, last, "at unDemand")
	if got := waitHookFile(t, filepath.Join(dir, "undemand")); got != "front-door\n" {
		t.Errorf("runOnUnDemand wrote %q", got)
	}
	// Stopped, not exited: it is not restarted.
	if n := len(waitHookLines(t, runs, 3)); n != 3 {
		t.Errorf("runOnDemand ran %d times", n)
	}
}

// TestHookKilledWithCamera: runOnReady's process is killed (its pid gone)
// when its camera is disabled, when it is deleted, and when the daemon
// stops.
func TestHookKilledWithCamera(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ready := hookScript(t, dir, "ready.sh", `echo $$ >> "`+dir+`/$MTX_PATH.pids"`+"\nexec sleep 600\n")
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.Hooks.RunOnReady = ready })
	e.authorize()
	e.sync(nil)
	back, front := fmt.Sprint(e.cams["Backyard"]), fmt.Sprint(e.cams["Front Door"])
	persistent := map[string]any{"is_enabled": true, "is_persistent": true}
	e.call("update", "cameras", "entity", back, "payload", map[string]any{"mtx_path": "backyard", "is_enabled": true, "is_persistent": true})
	e.call("update", "cameras", "entity", front, "payload", map[string]any{"mtx_path": "front-door", "is_enabled": true, "is_persistent": true})
	backPids := filepath.Join(dir, "backyard.pids")

	first := atoi(t, waitHookLines(t, backPids, 1)[0])
	if !processAlive(first) {
		t.Fatal("runOnReady is not running while the camera is ready")
	}
	e.call("update", "cameras", "entity", back, "payload", map[string]any{"is_enabled": false})
	waitProcessGone(t, first, "when its camera is disabled")

	e.call("update", "cameras", "entity", back, "payload", persistent)
	second := atoi(t, waitHookLines(t, backPids, 2)[1])
	e.call("delete", "cameras", "entity", back)
	waitProcessGone(t, second, "when its camera is deleted")

	third := atoi(t, waitHookLines(t, filepath.Join(dir, "front-door.pids"), 1)[0])
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if err := e.app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Shutdown has returned: the hook went with the daemon, not later.
	if processAlive(third) {
		t.Fatal("runOnReady outlived the daemon's stop")
	}
}

// TestHookPathOverride: a MediaMTX-style file (camelCase keys, a paths:
// section) loads, and a path's entry replaces the global hook for that
// path; a ~regexp entry that does not set runOnReady keeps the global one,
// with the regexp's group as G1.
func TestHookPathOverride(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(what string) string {
		return fmt.Sprintf(`sh -c "echo %s > '%s/$MTX_PATH.tmp' && mv '%s/$MTX_PATH.tmp' '%s/$MTX_PATH.who'"`, what, dir, dir, dir)
	}
	file := filepath.Join(dir, "nestmtx.yml")
	yml := "runOnReady: " + yamlQuote(write("global $G1")) + `
runOnReadyRestart: no
paths:
  front-door:
    runOnReady: ` + yamlQuote(write("front")) + `
  '~^back(yard)$':
    runOnReadyRestart: yes
`
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load([]string{"--config", file}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) {
		c.Hooks.RunOnReady, c.Hooks.RunOnReadyRestart, c.Paths = loaded.Hooks.RunOnReady, loaded.Hooks.RunOnReadyRestart, loaded.Paths
	})
	e.authorize()
	e.sync(nil)
	for name, path := range map[string]string{"Front Door": "front-door", "Backyard": "backyard"} {
		e.call("update", "cameras", "entity", fmt.Sprint(e.cams[name]), "payload",
			map[string]any{"mtx_path": path, "is_enabled": true, "is_persistent": true})
	}
	if got := waitHookFile(t, filepath.Join(dir, "front-door.who")); got != "front\n" {
		t.Errorf("front-door's runOnReady wrote %q, want its own hook's", got)
	}
	if got := waitHookFile(t, filepath.Join(dir, "backyard.who")); got != "global yard\n" {
		t.Errorf("backyard's runOnReady wrote %q, want the global hook's with G1", got)
	}
}

// yamlQuote is s as a single-quoted YAML scalar.
func yamlQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
