package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// proc is a nestmtx subprocess: its stdout lines arrive on a channel, its
// stderr is kept for the failure report.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	lines  chan string // stdout, closed at EOF
	logMu  sync.Mutex
	log    bytes.Buffer
	exited chan struct{}
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, lines: make(chan string, 1024), exited: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), env...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody reads this much; keep draining the pipe
			}
		}
	}()
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.logMu.Lock()
			p.log.Write(append(sc.Bytes(), '\n'))
			p.logMu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", p.name, p.logText())
		}
	})
	return p
}

func (p *proc) logText() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// served is a `nestmtx serve` subprocess on free ports, TCP-only RTSP.
type served struct {
	*proc
	mqtt, http, rtsp string
	pass             string // the admin password, for MQTT and RTSP logins
}

func startServe(t *testing.T, dataDir string, flags []string, env ...string) *served {
	t.Helper()
	s := &served{mqtt: testkit.FreeAddr(t), http: testkit.FreeAddr(t), rtsp: testkit.FreeAddr(t)}
	env = append([]string{
		"NESTMTX_DATA_DIR=" + dataDir,
		"NESTMTX_MQTT_LISTEN=" + s.mqtt,
		"NESTMTX_HTTP_ADDRESS=" + s.http,
		"NESTMTX_RTSP_ADDRESS=" + s.rtsp,
		"NESTMTX_LOG_FORMAT=json",
		"NESTMTX_LOG_LEVEL=debug",
	}, env...)
	s.proc = startProc(t, "daemon", env, append([]string{"serve", "--rtsp-udp-address="}, flags...)...)
	s.pass = adminPasswordIn(env)
	return s
}

// rtspURL is a path's URL on the daemon with the admin's login, which RTSP
// readers need.
func (s *served) rtspURL(path string) string {
	u := url.URL{Scheme: "rtsp", User: url.UserPassword("admin", s.pass), Host: s.rtsp, Path: "/" + path}
	return u.String()
}

// waitReady waits for the daemon's API on its embedded broker.
func (s *served) waitReady() *testkit.RR {
	s.t.Helper()
	testkit.WaitDial(s.t, s.mqtt, 30*time.Second)
	c := testkit.Dial(s.t, s.mqtt, "admin", s.pass)
	rr, err := c.NewRR("nestmtx/requests")
	if err != nil {
		s.t.Fatal(err)
	}
	rr.Call(s.t, map[string]any{"command": "list", "module": "version"}).MustOK(s.t, nil)
	return rr
}

// simBanner is what `nestmtx simulate` prints on stdout.
type simBanner struct {
	env     map[string]string // the NESTMTX_* lines
	payload map[string]any    // the credentials create payload
}

// envList renders the environment lines for a subprocess.
func (b simBanner) envList() []string {
	var out []string
	for k, v := range b.env {
		out = append(out, k+"="+v)
	}
	return out
}

// readBanner reads the simulator's stdout up to the payload line, parsing
// it as a person would paste it: KEY=VALUE lines (perhaps single-quoted)
// for the daemon, comments for the rest.
func readBanner(t *testing.T, p *proc) simBanner {
	t.Helper()
	b := simBanner{env: map[string]string{}}
	deadline := time.After(30 * time.Second)
	for b.payload == nil {
		select {
		case line, ok := <-p.lines:
			if !ok {
				code, _ := p.wait(5 * time.Second)
				t.Fatalf("simulate ended its output (exit %d) before printing the credential payload", code)
			}
			if js, ok := strings.CutPrefix(line, "# payload: "); ok {
				if err := json.Unmarshal([]byte(js), &b.payload); err != nil {
					t.Fatalf("payload line %q: %v", line, err)
				}
				continue
			}
			if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("line %q is neither a comment nor KEY=VALUE: it cannot be pasted", line)
			}
			if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
				v = strings.ReplaceAll(v[1:len(v)-1], `'\''`, "'")
			}
			b.env[k] = v
		case <-deadline:
			t.Fatal("simulate printed no credential payload within 30 s")
		}
	}
	return b
}

// TestSimulateDrivesDaemon runs the simulator and the daemon as separate
// processes and goes through the whole real flow over the MQTT API: a
// credential from the printed client, Google's consent through the daemon's
// callback, the camera sync and a stream served at a chosen path.
func TestSimulateDrivesDaemon(t *testing.T) {
	ffprobe := testkit.RequireTool(t, "ffprobe", "ffmpeg")
	start := time.Now()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "sim-ca.pem")
	simHTTP, simRTSPS := testkit.FreeAddr(t), testkit.FreeAddr(t)
	sim := startProc(t, "simulate", nil, "simulate", "--http="+simHTTP, "--rtsps="+simRTSPS,
		"--ca-file="+caFile, "--stream-ttl=2m", "--access-token-ttl=30m")
	banner := readBanner(t, sim)

	for _, k := range []string{"NESTMTX_GOOGLE_AUTH_URL", "NESTMTX_GOOGLE_TOKEN_URL", "NESTMTX_GOOGLE_SDM_URL", "NESTMTX_GOOGLE_CA_FILE"} {
		if banner.env[k] == "" {
			t.Fatalf("the banner has no %s line: %v", k, banner.env)
		}
	}
	if len(banner.env) != 4 {
		t.Fatalf("the banner has stray environment lines: %v", banner.env)
	}
	for _, k := range []string{"NESTMTX_GOOGLE_AUTH_URL", "NESTMTX_GOOGLE_TOKEN_URL", "NESTMTX_GOOGLE_SDM_URL"} {
		u, err := url.Parse(banner.env[k])
		if err != nil || u.Scheme != "http" || u.Host != simHTTP {
			t.Fatalf("%s=%s does not point at --http %s", k, banner.env[k], simHTTP)
		}
	}
	if banner.env["NESTMTX_GOOGLE_CA_FILE"] != caFile {
		t.Fatalf("NESTMTX_GOOGLE_CA_FILE=%s, want the --ca-file %s", banner.env["NESTMTX_GOOGLE_CA_FILE"], caFile)
	}
	if pem, err := os.ReadFile(caFile); err != nil || !bytes.Contains(pem, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("CA file: %v %.80q", err, pem)
	}
	if banner.payload["oauth_client_id"] != nestsim.DefaultClientID ||
		banner.payload["oauth_client_secret"] != nestsim.DefaultClientSecret ||
		banner.payload["dac_project_id"] != nestsim.DefaultProjectID {
		t.Fatalf("payload %v is not the simulator's client and project", banner.payload)
	}
	testkit.WaitDial(t, simRTSPS, 5*time.Second)

	d := startServe(t, t.TempDir(), nil, append(banner.envList(), "NESTMTX_ADMIN_PASSWORD=simulate-pass")...)
	call, credID := authorizeSimulated(t, d, banner)

	// The sync after consent runs in the background and has no event of
	// its own: poll the list until the simulated cameras are there.
	type camera struct {
		ID           uint64   `json:"id"`
		CredentialID uint64   `json:"credential_id"`
		Name         string   `json:"name"`
		Path         string   `json:"mtx_path"`
		IsEnabled    bool     `json:"is_enabled"`
		Protocols    []string `json:"protocols"`
	}
	cams := map[string]camera{}
	testkit.Eventually(t, 30*time.Second, "the simulated cameras in cameras list", func() bool {
		var list struct{ Items []camera }
		call(map[string]any{"command": "list", "module": "cameras", "payload": map[string]any{"itemsPerPage": 500}}, &list)
		for _, cam := range list.Items {
			cams[cam.Name] = cam
		}
		_, front := cams["Front Door"]
		_, back := cams["Backyard"]
		return front && back
	})
	front := cams["Front Door"]
	if front.CredentialID != credID || !slices.Contains(front.Protocols, "RTSP") {
		t.Fatalf("Front Door %+v", front)
	}
	var updated camera
	call(map[string]any{"command": "update", "module": "cameras", "entity": fmt.Sprint(front.ID),
		"payload": map[string]any{"mtx_path": "porch", "is_enabled": true}}, &updated)
	if updated.Path != "porch" || !updated.IsEnabled {
		t.Fatalf("updated camera %+v", updated)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-rtsp_transport", "tcp",
		"-show_entries", "stream=codec_name", "-of", "csv=p=0", d.rtspURL("porch")).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	codecs := strings.Fields(string(out))
	slices.Sort(codecs)
	if !slices.Equal(codecs, []string{"aac", "h264"}) {
		t.Fatalf("ffprobe found streams %q, want h264 and aac", out)
	}

	// SIGINT closes the simulator and exits 0.
	if err := sim.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	code, ok := sim.wait(10 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("simulate after SIGINT: exited=%v code=%d", ok, code)
	}
	if log := sim.logText(); !strings.Contains(log, "nestsim stopped") || !strings.Contains(log, "msg=stopped") {
		t.Fatalf("no clean-stop log lines:\n%s", log)
	}
	if c, err := net.DialTimeout("tcp", simHTTP, time.Second); err == nil {
		c.Close()
		t.Fatalf("the simulator still listens on %s after exiting", simHTTP)
	}
	t.Logf("whole flow in %s", time.Since(start).Round(time.Millisecond))
}

// TestSimulateSIGTERM: the simulator stops on SIGTERM with exit code 0, and
// its flags reach the simulator (here, the public host in the URLs).
func TestSimulateSIGTERM(t *testing.T) {
	dir := t.TempDir()
	sim := startProc(t, "simulate", nil, "simulate", "--http="+testkit.FreeAddr(t), "--rtsps="+testkit.FreeAddr(t),
		"--public-host=localhost", "--faults=extend_fail,drop=1m", "--enforce-quota", "--ca-file="+filepath.Join(dir, "ca.pem"))
	banner := readBanner(t, sim)
	u, err := url.Parse(banner.env["NESTMTX_GOOGLE_SDM_URL"])
	if err != nil || u.Hostname() != "localhost" {
		t.Fatalf("NESTMTX_GOOGLE_SDM_URL=%q does not use --public-host", banner.env["NESTMTX_GOOGLE_SDM_URL"])
	}
	if err := sim.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, ok := sim.wait(10 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("simulate after SIGTERM: exited=%v code=%d\n%s", ok, code, sim.logText())
	}
	if log := sim.logText(); !strings.Contains(log, "signal=terminated") || !strings.Contains(log, "extend_fail,drop=1m0s") {
		t.Fatalf("log lacks the signal or the faults:\n%s", log)
	}
}

// TestSimulateBadFlags: a bad flag stops the simulator at once with exit
// code 2 and a message naming the flag; --help exits 0 with the flags.
func TestSimulateBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--faults=bogus"}, "--faults"},
		{[]string{"--faults=drop"}, "--faults"},
		{[]string{"--stream-ttl=0s"}, "--stream-ttl"},
		{[]string{"--access-token-ttl=-1m"}, "--access-token-ttl"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--rtsp-cameras=-1"}, "--rtsp-cameras"},
		{[]string{"--rtsp-cameras=100000"}, "--rtsp-cameras"},
		{[]string{"extra"}, `"extra"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, append([]string{"simulate", "--http=" + testkit.FreeAddr(t),
				"--rtsps=" + testkit.FreeAddr(t), "--ca-file=" + filepath.Join(t.TempDir(), "ca.pem")}, tc.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("want exit code 2, got %v\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("message does not name %s:\n%s", tc.want, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Fatalf("a refused start printed a banner:\n%s", stdout.String())
			}
		})
	}

	out, err := exec.Command(binary, "simulate", "--help").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("-ca-file")) || !bytes.Contains(out, []byte("-enforce-quota")) ||
		!bytes.Contains(out, []byte("-rtsp-cameras")) {
		t.Fatalf("simulate --help: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "help").Output()
	if err != nil || !bytes.Contains(out, []byte("simulate")) {
		t.Fatalf("help does not list simulate: %v\n%s", err, out)
	}
}

// TestSimulateRTSPCameras: --rtsp-cameras 4 adds "Camera 3" and "Camera 4"
// to the two default RTSP cameras, with the stable ids a restarted simulator
// gives them again; a daemon lists all four next to the WebRTC camera and
// serves an added one, which plays the clip like the others.
func TestSimulateRTSPCameras(t *testing.T) {
	ffprobe := testkit.RequireTool(t, "ffprobe", "ffmpeg")
	dir := t.TempDir()
	sim := startProc(t, "simulate", nil, "simulate", "--http="+testkit.FreeAddr(t), "--rtsps="+testkit.FreeAddr(t),
		"--ca-file="+filepath.Join(dir, "ca.pem"), "--rtsp-cameras=4")
	banner := readBanner(t, sim)

	d := startServe(t, t.TempDir(), nil, append(banner.envList(), "NESTMTX_ADMIN_PASSWORD=simulate-pass")...)
	call, _ := authorizeSimulated(t, d, banner)
	type camera struct {
		ID        uint64   `json:"id"`
		Name      string   `json:"name"`
		UID       string   `json:"uid"`
		Room      string   `json:"room"`
		Protocols []string `json:"protocols"`
	}
	var cams []camera
	testkit.Eventually(t, 30*time.Second, "four RTSP cameras in cameras list", func() bool {
		var list struct{ Items []camera }
		call(map[string]any{"command": "list", "module": "cameras", "payload": map[string]any{"itemsPerPage": 500}}, &list)
		cams = list.Items
		return len(cams) >= 5
	})
	var rtsp, webrtc []string
	var added camera
	for _, c := range cams {
		switch {
		case slices.Contains(c.Protocols, "RTSP"):
			rtsp = append(rtsp, c.Name)
		case slices.Contains(c.Protocols, "WEB_RTC"):
			webrtc = append(webrtc, c.Name)
		}
		if c.Name == "Camera 4" {
			added = c
		}
	}
	slices.Sort(rtsp)
	if want := []string{"Backyard", "Camera 3", "Camera 4", "Front Door"}; !slices.Equal(rtsp, want) || len(webrtc) != 1 || len(cams) != 5 {
		t.Fatalf("RTSP cameras %q (want %q), WebRTC %q, %d cameras in all", rtsp, want, webrtc, len(cams))
	}
	if !strings.HasSuffix(added.UID, "/AVPHwEuSimCamera004") || added.Room != "Room 4" {
		t.Fatalf("Camera 4 has uid %q in room %q, want the stable device id AVPHwEuSimCamera004 in Room 4", added.UID, added.Room)
	}

	call(map[string]any{"command": "update", "module": "cameras", "entity": fmt.Sprint(added.ID),
		"payload": map[string]any{"mtx_path": "camera-4", "is_enabled": true}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-rtsp_transport", "tcp",
		"-show_entries", "stream=codec_name", "-of", "csv=p=0", d.rtspURL("camera-4")).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	if codecs := strings.Fields(string(out)); !slices.Contains(codecs, "h264") || !slices.Contains(codecs, "aac") {
		t.Fatalf("ffprobe found streams %q on Camera 4, want h264 and aac", out)
	}
}

// TestSimulatedCameras: the device list each --rtsp-cameras count gives.
func TestSimulatedCameras(t *testing.T) {
	if got, err := simulatedCameras(defaultRTSPCameras()); got != nil || err != nil {
		t.Fatalf("the default count changed the devices: %v %v", got, err)
	}
	names := func(n int) []string {
		t.Helper()
		devs, err := simulatedCameras(n)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range devs {
			if slices.Contains(d.Protocols, nestsim.ProtocolRTSP) {
				out = append(out, d.ID+" "+d.CustomName)
			}
		}
		// The thermostat and the WebRTC camera stay whatever the count.
		if len(devs)-len(out) != 2 {
			t.Fatalf("--rtsp-cameras %d: %d devices besides the RTSP cameras, want 2", n, len(devs)-len(out))
		}
		return out
	}
	if got := names(0); len(got) != 0 {
		t.Fatalf("--rtsp-cameras 0 serves %q", got)
	}
	if got, want := names(1), []string{nestsim.FrontDoorID + " Front Door"}; !slices.Equal(got, want) {
		t.Fatalf("--rtsp-cameras 1 serves %q, want %q", got, want)
	}
	got := names(8)
	if len(got) != 8 || got[1] != nestsim.BackyardID+" Backyard" || got[2] != "AVPHwEuSimCamera003 Camera 3" || got[7] != "AVPHwEuSimCamera008 Camera 8" {
		t.Fatalf("--rtsp-cameras 8 serves %q", got)
	}
	if again := names(8); !slices.Equal(again, got) {
		t.Fatalf("the added cameras' ids are not stable: %q then %q", got, again)
	}
}

// authorizeSimulated goes through the daemon's consent flow with the
// simulator's printed client, as a person would, checking each step, and
// returns an API caller logged in as the admin and the credential's id.
func authorizeSimulated(t *testing.T, d *served, banner simBanner) (call func(req map[string]any, v any), credID uint64) {
	t.Helper()
	rr := d.waitReady()
	tok := rr.Login(t, "admin", d.pass)
	call = func(req map[string]any, v any) {
		t.Helper()
		req["token"] = tok
		rr.Call(t, req).MustOK(t, v)
	}
	c := testkit.Dial(t, d.mqtt, "admin", d.pass)
	authenticated := c.Subscribe("nestmtx/events/credentials/+/authenticated")
	var cred struct {
		ID              uint64 `json:"id"`
		IsAuthenticated bool   `json:"is_authenticated"`
	}
	call(map[string]any{"command": "create", "module": "credentials", "payload": banner.payload}, &cred)
	if cred.ID == 0 || cred.IsAuthenticated {
		t.Fatalf("new credential %+v", cred)
	}
	redirect := "http://" + d.http + "/oauth/callback"
	var authURL string
	call(map[string]any{"command": "update", "module": "credentials", "entity": fmt.Sprint(cred.ID),
		"payload": map[string]any{"redirect_uri": redirect}}, &authURL)
	if !strings.HasPrefix(authURL, banner.env["NESTMTX_GOOGLE_AUTH_URL"]+"?") {
		t.Fatalf("authorization URL %q is not the simulator's consent page", authURL)
	}
	if err := testkit.ConsentAsBrowser(authURL, redirect); err != nil {
		t.Fatal(err)
	}
	ev := testkit.Next(t, authenticated, 20*time.Second)
	if want := fmt.Sprintf("nestmtx/events/credentials/%d/authenticated", cred.ID); ev.Topic != want {
		t.Fatalf("event on %s, want %s", ev.Topic, want)
	}
	return call, cred.ID
}
