package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// binary is the nestmtx executable built once for the process-level tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nestmtx-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "nestmtx")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a nestmtx process started by a test.
type daemon struct {
	t       *testing.T
	cmd     *exec.Cmd
	mqtt    string
	http    string
	dataDir string
	// pass is the admin password the test's MQTT clients log in with.
	pass   string
	logMu  sync.Mutex
	log    bytes.Buffer
	exited chan struct{}
	err    error
}

func startDaemon(t *testing.T, dataDir string, env ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, mqtt: testkit.FreeAddr(t), http: testkit.FreeAddr(t), dataDir: dataDir, exited: make(chan struct{})}
	d.cmd = exec.Command(binary, "serve", "--rtsp-udp-address=")
	d.cmd.Env = append(os.Environ(),
		"NESTMTX_DATA_DIR="+dataDir,
		"NESTMTX_MQTT_LISTEN="+d.mqtt,
		"NESTMTX_HTTP_ADDRESS="+d.http,
		"NESTMTX_RTSP_ADDRESS="+testkit.FreeAddr(t),
		"NESTMTX_LOG_FORMAT=json",
		"NESTMTX_LOG_LEVEL=debug",
	)
	d.cmd.Env = append(d.cmd.Env, env...)
	d.pass = adminPasswordIn(env)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.logMu.Lock()
			d.log.Write(append(sc.Bytes(), '\n'))
			d.logMu.Unlock()
		}
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logText())
		}
	})
	return d
}

func (d *daemon) logText() string {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	return d.log.String()
}

// waitReady waits for the daemon's API to answer on its embedded broker.
func (d *daemon) waitReady() *testkit.RR {
	d.t.Helper()
	testkit.WaitDial(d.t, d.mqtt, 20*time.Second)
	if d.pass == "" {
		d.pass = generatedAdminPassword(d.t, d.dataDir)
	}
	c := testkit.Dial(d.t, d.mqtt, "admin", d.pass)
	rr, err := c.NewRR("nestmtx/requests")
	if err != nil {
		d.t.Fatal(err)
	}
	rr.Call(d.t, map[string]any{"command": "list", "module": "version"}).MustOK(d.t, nil)
	return rr
}

func (d *daemon) wait(timeout time.Duration) (exitCode int, ok bool) {
	select {
	case <-d.exited:
		return d.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// TestSIGTERM: a clean stop within 5 s that publishes offline itself.
func TestSIGTERM(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "NESTMTX_ADMIN_PASSWORD=sigterm-pass")
	d.waitReady()
	c := testkit.Dial(t, d.mqtt, "admin", d.pass)
	status := c.Subscribe("nestmtx/status")
	if p := testkit.Next(t, status, 5*time.Second); string(p.Payload) != "online" {
		t.Fatalf("status %q", p.Payload)
	}
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if p := testkit.Next(t, status, 5*time.Second); string(p.Payload) != "offline" {
		t.Fatalf("status after SIGTERM %q", p.Payload)
	}
	code, ok := d.wait(5 * time.Second)
	if !ok {
		t.Fatal("the daemon did not exit within 5 s of SIGTERM")
	}
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(d.logText(), `"msg":"stopped"`) {
		t.Fatal("no clean-stop log line")
	}
}

// TestDurabilityAfterSIGKILL writes through the API, kills the daemon without
// warning, starts it again: everything written is there, and the db file
// holds no secret in plain text.
func TestDurabilityAfterSIGKILL(t *testing.T) {
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir, "NESTMTX_ADMIN_PASSWORD=first-pass")
	rr := d.waitReady()
	tok := rr.Login(t, "admin", "first-pass")
	const clientSecret, description = "GOCSPX-durable-client-secret", "Durable credential"
	rr.Call(t, map[string]any{"command": "create", "module": "users", "token": tok,
		"payload": map[string]any{"username": "dora", "password": "dora-password"}}).MustOK(t, nil)
	rr.Call(t, map[string]any{"command": "create", "module": "credentials", "token": tok, "payload": map[string]any{
		"description": description, "oauth_client_id": "cid.apps.googleusercontent.com",
		"oauth_client_secret": clientSecret, "dac_project_id": "proj-1"}}).MustOK(t, nil)
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.wait(5 * time.Second)

	raw, err := os.ReadFile(filepath.Join(dataDir, "nestmtx.db"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(description)) {
		t.Fatal("the description is not in the db file: the write was lost")
	}
	for _, secret := range []string{clientSecret, "dora-password", "first-pass", tok} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatalf("the db file contains %q in plain text", secret)
		}
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "secret.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret.key: %v %v", fi.Mode(), err)
	}

	// NESTMTX_ADMIN_PASSWORD only seeds the first start: a restart with a
	// different value must not reset the admin's password.
	d2 := startDaemon(t, dataDir, "NESTMTX_ADMIN_PASSWORD=other-pass")
	d2.pass = "first-pass" // the setting seeded only the first start
	rr2 := d2.waitReady()
	tok2 := rr2.Login(t, "admin", "first-pass")
	rr2.Login(t, "dora", "dora-password")
	var creds struct {
		Total int
		Items []map[string]any
	}
	rr2.Call(t, map[string]any{"command": "list", "module": "credentials", "token": tok2}).MustOK(t, &creds)
	if creds.Total != 1 || creds.Items[0]["description"] != description {
		t.Fatalf("credentials after restart: %+v", creds)
	}
	// The old token survived too: tokens are stored (hashed), not in memory.
	rr2.Call(t, map[string]any{"command": "list", "module": "users", "token": tok}).MustOK(t, nil)
}

// TestSecondDaemonFailsFast: the data dir's lock makes a second daemon exit
// with a clear message instead of hanging.
func TestSecondDaemonFailsFast(t *testing.T) {
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir, "NESTMTX_ADMIN_PASSWORD=lock-pass")
	d.waitReady()
	start := time.Now()
	d2 := startDaemon(t, dataDir)
	code, ok := d2.wait(10 * time.Second)
	if !ok {
		t.Fatal("the second daemon did not exit within 10 s")
	}
	if code == 0 {
		t.Fatal("the second daemon exited 0")
	}
	if !strings.Contains(d2.logText(), "in use by another nestmtx process") {
		t.Fatalf("unclear message: %s", d2.logText())
	}
	t.Logf("second daemon refused in %s", time.Since(start).Round(time.Millisecond))
}

// TestFirstStartRandomPassword: without NESTMTX_ADMIN_PASSWORD the admin gets
// a random password, written to a 0600 file, which logs in.
func TestFirstStartRandomPassword(t *testing.T) {
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir)
	rr := d.waitReady()
	file := filepath.Join(dataDir, "initial-admin-password")
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", file, fi, err)
	}
	pw, _ := os.ReadFile(file)
	password := strings.TrimSpace(string(pw))
	if len(password) < 16 {
		t.Fatalf("weak generated password %q", password)
	}
	rr.Login(t, "admin", password)
	if n := strings.Count(d.logText(), password); n != 1 {
		t.Fatalf("the generated password must be logged exactly once, found %d times", n)
	}
}

// TestBadConfigNamesKey: a bad value stops the start with the key's name.
func TestBadConfigNamesKey(t *testing.T) {
	cmd := exec.Command(binary, "serve")
	cmd.Env = append(os.Environ(), "NESTMTX_LOG_LEVEL=loud", "NESTMTX_DATA_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "NESTMTX_LOG_LEVEL") {
		t.Fatalf("err=%v out=%s", err, out)
	}
}

// TestServeHelp: serve --help names the command it is about.
func TestServeHelp(t *testing.T) {
	out, _ := exec.Command(binary, "serve", "--help").CombinedOutput()
	if !strings.HasPrefix(string(out), "Usage: nestmtx serve [flags]") || !strings.Contains(string(out), "-mqtt-listen") {
		t.Fatalf("serve --help:\n%s", out)
	}
}

func TestVersionCommand(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "nestmtx ") {
		t.Fatalf("%v %s", err, out)
	}
}

// TestHealthz checks the HTTP health endpoint.
func TestHealthz(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "NESTMTX_ADMIN_PASSWORD=health-pass")
	d.waitReady()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, status := httpGet(ctx, t, "http://"+d.http+"/healthz")
	var rep struct {
		Healthy string                     `json:"healthy"`
		Details map[string]json.RawMessage `json:"details"`
	}
	if err := json.Unmarshal(body, &rep); err != nil || status != 200 || rep.Healthy == "" || rep.Details["store"] == nil {
		t.Fatalf("%d %s", status, body)
	}
}
