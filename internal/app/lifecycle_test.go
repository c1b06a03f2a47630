package app

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// describe sends one DESCRIBE and returns the status code (0 on a
// connection error).
func describe(t *testing.T, url string) (base.StatusCode, error) {
	t.Helper()
	st, _, err := describeAnswer(t, url)
	return st, err
}

// TestPathChangesTakeEffectAtOnce: unknown and disabled paths are 404;
// disabling, renaming and deleting a camera end its readers and its path
// at once.
func TestPathChangesTakeEffectAtOnce(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := fmt.Sprint(e.cams["Front Door"])
	if st, _ := describe(t, e.rtspURL("no-such-camera")); st != base.StatusNotFound {
		t.Fatalf("unknown path: %d", st)
	}
	// A synced camera without a path, and then a disabled one, are not served.
	if st, _ := describe(t, e.rtspURL("backyard")); st != base.StatusNotFound {
		t.Fatalf("unconfigured camera: %d", st)
	}

	r := readPath(t, e.rtspURL("front-door"))
	r.flowing(t, 0)
	e.call("update", "cameras", "entity", cam, "payload", map[string]any{"is_enabled": false})
	expectDisconnect(t, r)
	if st, _ := describe(t, e.rtspURL("front-door")); st != base.StatusNotFound {
		t.Fatalf("disabled camera: %d", st)
	}

	e.call("update", "cameras", "entity", cam, "payload", map[string]any{"is_enabled": true})
	r = readPath(t, e.rtspURL("front-door"))
	r.flowing(t, 0)
	e.call("update", "cameras", "entity", cam, "payload", map[string]any{"mtx_path": "porch"})
	expectDisconnect(t, r)
	if st, _ := describe(t, e.rtspURL("front-door")); st != base.StatusNotFound {
		t.Fatalf("old path after a rename: %d", st)
	}
	r = readPath(t, e.rtspURL("porch"))
	r.flowing(t, 0)

	sub := e.mqtt.Subscribe("nestmtx/state/camera/" + cam)
	e.call("delete", "cameras", "entity", cam)
	expectDisconnect(t, r)
	if st, _ := describe(t, e.rtspURL("porch")); st != base.StatusNotFound {
		t.Fatalf("deleted camera: %d", st)
	}
	for {
		p := testkit.Next(t, sub, 10*time.Second)
		if len(p.Payload) == 0 {
			break // the retained state was cleared
		}
	}
}

func expectDisconnect(t *testing.T, r *reader) {
	t.Helper()
	select {
	case <-r.err:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader is still connected")
	}
}

// TestStartTimeoutIs503: a camera that cannot start in time answers 503,
// and the held request ends with an unDemand.
func TestStartTimeoutIs503(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.OnDemandStartTimeout = time.Second })
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	e.sim.Faults().SlowResponses(5 * time.Second)
	start := time.Now()
	st, _ := describe(t, e.rtspURL("front-door"))
	took := time.Since(start)
	if st != base.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", st)
	}
	if took < 900*time.Millisecond || took > 3*time.Second {
		t.Fatalf("answered after %s, want about the 1 s start timeout", took)
	}
	e.waitEvent("camera", e.cams["Front Door"], "unDemand")
	e.sim.Faults().SlowResponses(0)
}

// TestPersistentCamera streams with no reader, and restarts after a failure.
func TestPersistentCamera(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(nil)
	cam := e.cams["Backyard"]
	e.call("update", "cameras", "entity", fmt.Sprint(cam), "payload",
		map[string]any{"mtx_path": "backyard", "is_enabled": true, "is_persistent": true})
	e.waitEvent("camera", cam, "ready")
	e.sim.Faults().DropStreams()
	e.waitEvent("camera", cam, "notReady")
	e.waitEvent("camera", cam, "ready")
	if g := e.sim.CountCalls("GenerateRtspStream"); g != 2 {
		t.Fatalf("%d Generate calls, want 2", g)
	}
	// Not persistent any more and nobody reads: it closes after the delay.
	// It never had a demand, so it gets no unDemand either.
	e.call("update", "cameras", "entity", fmt.Sprint(cam), "payload", map[string]any{"is_persistent": false})
	for ev := e.nextEvent(30 * time.Second); ev.Event != "notReady"; ev = e.nextEvent(30 * time.Second) {
		if ev.Event == "unDemand" {
			t.Fatal("an unDemand without a demand")
		}
	}
}

// TestShutdownWithHeldDescribe: SIGTERM's shutdown finishes within 5 s
// while DESCRIBEs are held waiting for a camera that does not come.
func TestShutdownWithHeldDescribe(t *testing.T) {
	t.Parallel()
	sim, err := nestsim.Start(nestsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	cfg := config.Defaults()
	cfg.DataDir, cfg.HTTPAddress, cfg.MQTTListen, cfg.RTSPAddress, cfg.RTSPUDPAddress = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.AdminPassword = adminPassword
	cfg.GoogleAuthURL, cfg.GoogleTokenURL, cfg.GoogleSDMURL = sim.AuthURL(), sim.TokenURL(), sim.SDMURL()
	cfg.OnDemandStartTimeout = time.Minute
	a, err := New(cfg, testLogger(), versionForTests)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, app: a, sim: sim, cams: map[string]uint64{}}
	e.mqtt, e.rr = client(t, a.MQTTAddr(), "nestmtx")
	e.events = e.mqtt.Subscribe("nestmtx/events/#")
	e.token = e.rr.Login(t, "admin", adminPassword)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door", "Backyard": "backyard"})
	sim.Faults().SlowResponses(time.Minute)

	var wg sync.WaitGroup
	for _, p := range []string{"front-door", "backyard", "front-door"} {
		wg.Add(1)
		go func() { defer wg.Done(); describe(t, e.rtspURL(p)) }()
	}
	// Both cameras' demands, in whatever order they come.
	for want := map[uint64]bool{e.cams["Front Door"]: true, e.cams["Backyard"]: true}; len(want) > 0; {
		ev := e.nextEvent(30 * time.Second)
		if ev.Event == "demand" && ev.Entity != nil {
			delete(want, *ev.Entity)
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Logf("shutdown: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown took %s with held DESCRIBEs", took)
	}
	wg.Wait() // every held reader got its answer (or its connection closed)
}

// TestFifteenCamerasStayWithinQuota: fifteen cameras demanded at once never
// cost more than 10 commands in any minute (the simulator enforces Google's
// quota and would answer 429); the ones over the quota wait, then start.
func TestFifteenCamerasStayWithinQuota(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a minute of Google's quota window")
	}
	t.Parallel()
	var cams []nestsim.Device
	paths := map[string]string{}
	for i := range 15 {
		name := fmt.Sprintf("Cam %02d", i)
		cams = append(cams, nestsim.Device{ID: fmt.Sprintf("AVPHwEuSimQuota%02d", i), CustomName: name, Room: "Room"})
		paths[name] = fmt.Sprintf("cam-%02d", i)
	}
	e := startE2E(t, nestsim.Options{Cameras: cams, EnforceQuota: true},
		func(c *config.Config) { c.OnDemandStartTimeout = 150 * time.Second })
	e.authorize()
	e.sync(paths)
	var wg sync.WaitGroup
	started := make(chan time.Duration, 15)
	t0 := time.Now()
	for _, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The daemon holds the DESCRIBE through the quota window.
			r, err := openReader(e.rtspURL(p), 140*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(r.c.Close)
			started <- time.Since(t0)
		}()
	}
	wg.Wait()
	close(started)
	if t.Failed() {
		return
	}
	var times []time.Duration
	for d := range started {
		times = append(times, d)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	if times[9] > 20*time.Second || times[10] < 50*time.Second {
		t.Fatalf("start times %v: want 10 at once and 5 after the quota window", times)
	}
	var cmds []time.Time
	for _, c := range e.sim.Calls() {
		switch c.Method {
		case "GenerateRtspStream", "ExtendRtspStream", "StopRtspStream":
			if c.Status == 429 {
				t.Fatalf("Google answered 429 at %s", c.At)
			}
			cmds = append(cmds, c.At)
		}
	}
	for i := range cmds {
		n := 0
		for _, c := range cmds[i:] {
			if c.Sub(cmds[i]) < time.Minute {
				n++
			}
		}
		if n > 10 {
			t.Fatalf("%d commands within a minute from %s", n, cmds[i])
		}
	}
}

// TestMissingDeviceIsNotServed: a device Google stops listing is marked
// missing (its settings kept) and its path is not served until it returns.
func TestMissingDeviceIsNotServed(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Backyard": "backyard"})
	if err := e.sim.Faults().RemoveDevice(nestsim.BackyardID); err != nil {
		t.Fatal(err)
	}
	e.sync(nil)
	var cam map[string]any
	_ = json.Unmarshal(e.call("read", "cameras", "entity", fmt.Sprint(e.cams["Backyard"])), &cam)
	if cam["missing"] != true || cam["mtx_path"] != "backyard" || cam["is_enabled"] != true {
		t.Fatalf("camera after removal: %v", cam)
	}
	if st, _ := describe(t, e.rtspURL("backyard")); st != base.StatusNotFound {
		t.Fatalf("missing camera served: %d", st)
	}
	if err := e.sim.Faults().RestoreDevice(nestsim.BackyardID); err != nil {
		t.Fatal(err)
	}
	e.sync(nil)
	readPath(t, e.rtspURL("backyard")).flowing(t, 0)
}

// TestReadOverUDP serves a reader that asks for UDP transport.
func TestReadOverUDP(t *testing.T) {
	t.Parallel()
	udp := testkit.FreeUDPPair(t)
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.RTSPUDPAddress = udp })
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	u, _ := base.ParseURL(e.rtspURL("front-door"))
	c := gortsplib.Client{}
	tr := gortsplib.TransportUDP
	c.Transport = &tr
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, 1)
	c.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no packet over UDP")
	}
}
