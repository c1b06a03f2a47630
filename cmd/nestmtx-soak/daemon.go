package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

const adminPassword = "soak-admin-password"

// rtspURL is a camera path's URL on the daemon with the admin's login: the
// daemon serves RTSP to logged-in readers only, and the soak's readers log
// in as Frigate does, with the URL's user info.
func (h *harness) rtspURL(path string) string {
	u := url.URL{Scheme: "rtsp", User: url.UserPassword("admin", adminPassword), Host: h.rtspAddr, Path: "/" + path}
	return u.String()
}

// harness is the whole soak: the simulator, the daemon subprocess, the API
// client, the readers and everything they recorded.
type harness struct {
	o         options
	sim       *nestsim.Sim
	simSt     *simState
	incidents io.Writer
	incMu     sync.Mutex

	mqttAddr, httpAddr, rtspAddr string
	daemonLogPath                string
	cmd                          *exec.Cmd
	exited                       chan struct{}
	exitErr                      error

	mqtt  *testkit.Client
	rr    *testkit.RR
	token string

	t0, end time.Time
	sched   schedule

	ev      eventLog
	rd      readerLog
	samples []sample
	minutes []minuteLine
	diedAt  time.Duration // offset at which the daemon died during the soak, 0 if not
}

func newHarness(o options, sim *nestsim.Sim, incidents io.Writer) *harness {
	return &harness{o: o, sim: sim, incidents: incidents}
}

// incident notes something worth a look, with its offset from the start.
func (h *harness) incident(format string, a ...any) {
	off := "setup "
	if !h.t0.IsZero() {
		off = fmtOffset(time.Since(h.t0))
	}
	line := fmt.Sprintf("  ! %s "+format+"\n", append([]any{off}, a...)...)
	h.incMu.Lock()
	defer h.incMu.Unlock()
	io.WriteString(h.incidents, line)
	if h.o.incidents {
		os.Stdout.WriteString(line)
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (h *harness) startDaemon(caFile string) error {
	for _, p := range []*string{&h.mqttAddr, &h.httpAddr, &h.rtspAddr} {
		a, err := freeAddr()
		if err != nil {
			return err
		}
		*p = a
	}
	dataDir := filepath.Join(h.o.workDir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	h.daemonLogPath = filepath.Join(h.o.workDir, "daemon.log")
	logFile, err := os.Create(h.daemonLogPath)
	if err != nil {
		return err
	}
	// The daemon sees only what this soak sets, whatever the shell exports.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NESTMTX_") && !strings.HasPrefix(kv, "MQTT_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"NESTMTX_DATA_DIR="+dataDir,
		"NESTMTX_MQTT_LISTEN="+h.mqttAddr,
		"NESTMTX_HTTP_ADDRESS="+h.httpAddr,
		"NESTMTX_RTSP_ADDRESS="+h.rtspAddr,
		"NESTMTX_ADMIN_PASSWORD="+adminPassword,
		"NESTMTX_LOG_FORMAT=json",
		"NESTMTX_LOG_LEVEL=info",
		"NESTMTX_ON_DEMAND_CLOSE_AFTER=10s",
		"NESTMTX_STALL_TIMEOUT=3s",
		"NESTMTX_GOOGLE_AUTH_URL="+h.sim.AuthURL(),
		"NESTMTX_GOOGLE_TOKEN_URL="+h.sim.TokenURL(),
		"NESTMTX_GOOGLE_SDM_URL="+h.sim.SDMURL(),
		"NESTMTX_GOOGLE_CA_FILE="+caFile,
	)
	h.cmd = exec.Command(h.o.daemon, "serve", "--rtsp-udp-address=")
	h.cmd.Env = env
	h.cmd.Stdout, h.cmd.Stderr = logFile, logFile
	if err := h.cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	h.exited = make(chan struct{})
	go func() {
		h.exitErr = h.cmd.Wait()
		logFile.Close()
		close(h.exited)
	}()
	fmt.Printf("# daemon pid %d: mqtt %s, http %s, rtsp %s (TCP only), log %s\n",
		h.cmd.Process.Pid, h.mqttAddr, h.httpAddr, h.rtspAddr, h.daemonLogPath)
	return nil
}

// daemonAlive reports whether the subprocess still runs.
func (h *harness) daemonAlive() bool {
	if h.exited == nil {
		return false
	}
	select {
	case <-h.exited:
		return false
	default:
		return true
	}
}

// stopDaemon sends SIGTERM and waits (killing after 15 s); it returns the
// exit code, or -1 when the daemon had to be killed.
func (h *harness) stopDaemon() int {
	if h.mqtt != nil {
		h.mqtt.Close()
		h.mqtt = nil
	}
	if h.cmd == nil || h.cmd.Process == nil {
		return -1
	}
	if h.daemonAlive() {
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.exited:
		case <-time.After(15 * time.Second):
			_ = h.cmd.Process.Kill()
			<-h.exited
			return -1
		}
	} else {
		<-h.exited
	}
	return h.cmd.ProcessState.ExitCode()
}

// call sends one authenticated API request and decodes an ok reply into v.
func (h *harness) call(ctx context.Context, req map[string]any, v any) error {
	return h.rr.Request(ctx, h.token, req, v)
}

// setup logs in, authorizes a credential through the consent redirect,
// waits for the cameras and serves them at cam1..cam5 (cam5 persistent).
func (h *harness) setup(ctx context.Context) error {
	began := time.Now()
	if err := waitDial(ctx, h.mqttAddr); err != nil {
		return err
	}
	c, err := testkit.DialErr(h.mqttAddr, "admin", adminPassword, fmt.Sprintf("nestmtx-soak-%d", os.Getpid()))
	if err != nil {
		return err
	}
	h.mqtt = c
	events, err := c.SubscribeErr("nestmtx/events/#")
	if err != nil {
		return err
	}
	go h.consumeEvents(events)
	if h.rr, err = c.NewRR("nestmtx/requests"); err != nil {
		return err
	}
	if err := h.call(ctx, map[string]any{"command": "list", "module": "version"}, nil); err != nil {
		return err
	}
	var login struct {
		Bearer string `json:"bearer"`
	}
	if err := h.call(ctx, map[string]any{"command": "create", "module": "auth",
		"payload": map[string]any{"username": "admin", "password": adminPassword}}, &login); err != nil {
		return err
	}
	h.token = login.Bearer

	var cred struct {
		ID uint64 `json:"id"`
	}
	if err := h.call(ctx, map[string]any{"command": "create", "module": "credentials", "payload": map[string]any{
		"description": "Soak", "oauth_client_id": h.sim.ClientID(), "oauth_client_secret": h.sim.ClientSecret(),
		"dac_project_id": h.sim.ProjectID()}}, &cred); err != nil {
		return err
	}
	redirect := "http://" + h.httpAddr + "/oauth/callback"
	var authURL string
	if err := h.call(ctx, map[string]any{"command": "update", "module": "credentials", "entity": fmt.Sprint(cred.ID),
		"payload": map[string]any{"redirect_uri": redirect}}, &authURL); err != nil {
		return err
	}
	if err := testkit.ConsentAsBrowser(authURL, redirect); err != nil {
		return err
	}

	type camera struct {
		ID   uint64 `json:"id"`
		UID  string `json:"uid"`
		Name string `json:"name"`
	}
	var cams []camera
	for {
		var list struct{ Items []camera }
		if err := h.call(ctx, map[string]any{"command": "list", "module": "cameras",
			"payload": map[string]any{"itemsPerPage": 500}}, &list); err != nil {
			return err
		}
		if len(list.Items) >= numCameras {
			cams = list.Items
			break
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("the cameras were not listed: %w", ctx.Err())
		}
	}
	byName := map[string]camera{}
	for _, cam := range cams {
		byName[cam.Name] = cam
	}
	for i := 1; i <= numCameras; i++ {
		cam, ok := byName[fmt.Sprintf("Soak %d", i)]
		if !ok {
			return fmt.Errorf("camera Soak %d is not listed: %+v", i, cams)
		}
		path := fmt.Sprintf("cam%d", i)
		h.ev.setPath(cam.ID, path)
		payload := map[string]any{"mtx_path": path, "is_enabled": true}
		if i == numCameras {
			payload["is_persistent"] = true
		}
		if err := h.call(ctx, map[string]any{"command": "update", "module": "cameras", "entity": fmt.Sprint(cam.ID),
			"payload": payload}, nil); err != nil {
			return err
		}
	}
	fmt.Printf("# set up in %s: credential %d authorized through the consent redirect, cam1..cam%d enabled (cam%d persistent)\n",
		time.Since(began).Round(time.Millisecond), cred.ID, numCameras, numCameras)
	return nil
}

func waitDial(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return fmt.Errorf("nothing listens on %s: %w", addr, err)
		}
	}
}

// runtimeStats reads the daemon's goroutines and heap from /healthz.
func (h *harness) runtimeStats() (goroutines int, heap uint64, err error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + h.httpAddr + "/healthz")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var rep struct {
		Healthy string `json:"healthy"`
		Details map[string]struct {
			Meta map[string]any `json:"meta"`
		} `json:"details"`
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&rep); err != nil {
		return 0, 0, fmt.Errorf("healthz: %w", err)
	}
	meta := rep.Details["runtime"].Meta
	num := func(k string) json.Number { n, _ := meta[k].(json.Number); return n }
	g, err1 := num("goroutines").Int64()
	hp, err2 := strconv.ParseUint(num("heap_alloc_bytes").String(), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("healthz runtime meta %v: %w", meta, err)
	}
	return int(g), hp, nil
}

// procMemory reads VmRSS and VmHWM (bytes) of the daemon.
func (h *harness) procMemory() (rss, hwm uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", h.cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if k == "VmRSS" {
			rss = n * 1024
		} else {
			hwm = n * 1024
		}
	}
	return rss, hwm, sc.Err()
}

// consumeEvents records every camera event the daemon publishes.
func (h *harness) consumeEvents(ch <-chan *paho.Publish) {
	for p := range ch {
		var e struct {
			Domain  string         `json:"domain"`
			Entity  *uint64        `json:"entity"`
			Event   string         `json:"event"`
			Details map[string]any `json:"details"`
			At      string         `json:"at"`
		}
		if err := json.Unmarshal(p.Payload, &e); err != nil {
			h.incident("unparsable event on %s: %.200s", p.Topic, p.Payload)
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, e.At)
		if err != nil {
			at = time.Now()
		}
		if e.Domain != "camera" || e.Entity == nil {
			continue
		}
		rec := h.ev.add(*e.Entity, e.Event, e.Details, at)
		switch e.Event {
		case "notReady":
			h.incident("%s notReady: %v", rec.path, e.Details["reason"])
		case "failed-extension":
			h.incident("%s failed-extension: %v", rec.path, e.Details["error"])
		}
	}
}
