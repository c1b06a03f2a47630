package main

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestLoginCommand: `nestmtx login` against a running daemon (with
// `nestmtx simulate` as Google) prints the sign-in address, takes back the
// address the browser ends on (which need not load), and the credential is
// authenticated.
func TestLoginCommand(t *testing.T) {
	dir := t.TempDir()
	simHTTP, simRTSPS := testkit.FreeAddr(t), testkit.FreeAddr(t)
	sim := startProc(t, "simulate", nil, "simulate", "--http="+simHTTP, "--rtsps="+simRTSPS,
		"--ca-file="+filepath.Join(dir, "sim-ca.pem"))
	banner := readBanner(t, sim)
	d := startServe(t, t.TempDir(), nil, append(banner.envList(), "NESTMTX_ADMIN_PASSWORD=login-pass")...)
	rr := d.waitReady()
	tok := rr.Login(t, "admin", "login-pass")
	payload := map[string]any{"description": "Home"}
	for k, v := range banner.payload {
		payload[k] = v
	}
	rr.Call(t, map[string]any{"command": "create", "module": "credentials", "token": tok, "payload": payload}).MustOK(t, nil)
	c := testkit.Dial(t, d.mqtt, "admin", d.pass)
	authenticated := c.Subscribe("nestmtx/events/credentials/+/authenticated")

	cmd := exec.Command(binary, "login", "--url", "http://"+d.http)
	cmd.Env = append(cmd.Environ(), "NESTMTX_LOGIN_PASSWORD=login-pass")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck // ends a hung command
	sc := bufio.NewScanner(stdout)
	var authURL string
	for authURL == "" && sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "http") {
			authURL = line
		}
	}
	if authURL == "" || strings.Contains(authURL, `\u0026`) {
		t.Fatalf("no sign-in address printed (%q); stderr: %s", authURL, stderr.String())
	}
	landed, err := testkit.ConsentUntilRedirect(authURL)
	if err != nil || !strings.HasPrefix(landed, "http://localhost:2000/oauth/callback?") {
		t.Fatalf("Google sent the browser to %q (%v)", landed, err)
	}
	if _, err := stdin.Write([]byte(landed + "\n")); err != nil {
		t.Fatal(err)
	}
	var rest strings.Builder
	for sc.Scan() {
		rest.WriteString(sc.Text() + "\n")
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(rest.String(), "Signed in") {
		t.Fatalf("login: %v\n%s\nstderr: %s", err, rest.String(), stderr.String())
	}
	testkit.Next(t, authenticated, 10*time.Second)
}
