package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
	"github.com/nestmtx/nestmtx/internal/source"
)

// fakeClock runs a camera's timers on a time the test moves: Advance fires
// every timer and ticker that falls due, in time order.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clk     *fakeClock
	at      time.Time
	period  time.Duration // tickers only
	ch      chan time.Time
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d, period time.Duration) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clk: c, at: c.now.Add(d), period: period, ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	return t
}

func (c *fakeClock) NewTimer(d time.Duration) Timer   { return c.add(d, 0) }
func (c *fakeClock) NewTicker(d time.Duration) Ticker { return fakeTicker{c.add(d, d)} }

func (t *fakeTimer) C() <-chan time.Time { return t.ch }
func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

type fakeTicker struct{ *fakeTimer }

func (t fakeTicker) Stop() { t.fakeTimer.Stop() }

// Advance moves the time by d and fires what fell due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	sort.Slice(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.stopped {
			continue
		}
		if !t.at.After(c.now) {
			select {
			case t.ch <- t.at:
			default: // a ticker not read yet: like time.Ticker, drop
			}
			if t.period == 0 {
				continue
			}
			for !t.at.After(c.now) {
				t.at = t.at.Add(t.period)
			}
		}
		kept = append(kept, t)
	}
	c.timers = kept
}

// fakeGoogle answers a camera's SDM calls from a script, on the fake clock.
type fakeGoogle struct {
	clk      *fakeClock
	lifetime time.Duration

	mu        sync.Mutex
	calls     []string
	generated int
	genErrs   []error // returned by the next Generates, in order
	extErr    error
	hang      bool // Generate waits until its context ends
}

func (g *fakeGoogle) record(call string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, call)
}

func (g *fakeGoogle) count(call string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.calls {
		if c == call {
			n++
		}
	}
	return n
}

func (g *fakeGoogle) session(device string, n int) nest.RTSPStream {
	now := g.clk.Now()
	return nest.RTSPStream{DeviceName: device, URL: fmt.Sprintf("rtsps://fake/%d?auth=t%d", n, n),
		StreamToken: fmt.Sprintf("t%d", n), ExtensionToken: fmt.Sprintf("e%d", n),
		ExpiresAt: now.Add(g.lifetime), Lifetime: g.lifetime, ReceivedAt: now}
}

func (g *fakeGoogle) GenerateRtspStream(ctx context.Context, device string) (nest.RTSPStream, error) {
	g.record("generate")
	g.mu.Lock()
	hang := g.hang
	var err error
	if len(g.genErrs) > 0 {
		err, g.genErrs = g.genErrs[0], g.genErrs[1:]
	}
	g.generated++
	n := g.generated
	g.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nest.RTSPStream{}, ctx.Err()
	}
	if err != nil {
		return nest.RTSPStream{}, err
	}
	return g.session(device, n), nil
}

func (g *fakeGoogle) ExtendRtspStream(ctx context.Context, s nest.RTSPStream) (nest.RTSPStream, error) {
	g.record("extend")
	g.mu.Lock()
	err := g.extErr
	g.mu.Unlock()
	if err != nil {
		return s, err
	}
	next := g.session(s.DeviceName, 0)
	next.URL = s.URL
	return next, nil
}

func (g *fakeGoogle) StopRtspStream(ctx context.Context, s nest.RTSPStream) error {
	g.record("stop")
	return nil
}

// fakeRunner stands in for the RTSPS source: each run connects at once
// with the tracks the test set, is ready, and runs until the test fails it
// or its context ends.
type fakeRunner struct {
	mu     sync.Mutex
	params relay.Params
	runs   chan *fakeRun
}

type fakeRun struct {
	url  string
	fail chan error
}

func (f *fakeRunner) setParams(p relay.Params) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.params = p
}

func (f *fakeRunner) Run(ctx context.Context, p source.RunParams, parent source.Parent) error {
	run := &fakeRun{url: p.URL, fail: make(chan error, 1)}
	select {
	case f.runs <- run:
	case <-ctx.Done():
		return nil
	}
	f.mu.Lock()
	params := f.params
	f.mu.Unlock()
	if _, err := parent.Connected(ctx, params); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	parent.Ready(params)
	select {
	case err := <-run.fail:
		return err
	case <-ctx.Done():
		return nil
	}
}

var (
	paramsA = relay.Params{SPS: []byte{0x67, 0x42, 0xc0, 0x1e}, PPS: []byte{0x68, 0xce, 0x3c, 0x80}}
	paramsB = relay.Params{SPS: []byte{0x67, 0x64, 0x00, 0x28}, PPS: []byte{0x68, 0xee, 0x3c, 0xb0}}
)

// harness is one camera with fake Google, runner and clock, and a real
// RTSP server to host its relays.
type harness struct {
	t      *testing.T
	clk    *fakeClock
	google *fakeGoogle
	runner *fakeRunner
	bus    *events.Bus
	events <-chan events.Message
	cam    *Camera
	cfg    Spec
	gone   chan uint64
}

func newHarness(t *testing.T, mutate func(*Spec, *Options)) *harness {
	t.Helper()
	srv, err := rtspserver.Start(rtspserver.Options{Address: "127.0.0.1:0", StartTimeout: time.Minute,
		Resolver: rtspserver.Paths{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	clk := newFakeClock()
	h := &harness{t: t, clk: clk, google: &fakeGoogle{clk: clk, lifetime: 5 * time.Minute},
		runner: &fakeRunner{params: paramsA, runs: make(chan *fakeRun, 16)}, bus: events.NewBus(nil),
		gone: make(chan uint64, 4)}
	sub := h.bus.Subscribe(1024)
	t.Cleanup(sub.Close)
	h.events = sub.C()
	cfg := Spec{ID: 7, Name: "Porch", Device: "enterprises/p/devices/porch", Path: "porch", Enabled: true}
	opts := Options{
		NewRelay: func(p relay.Params) (*relay.Relay, error) { return relay.New(srv.Gortsplib(), p) },
		Runner:   h.runner, Bus: h.bus, Clock: clk,
		StartTimeout: 20 * time.Second, CloseAfter: 30 * time.Second, StallTimeout: 5 * time.Second,
		DeviceGone: func(id uint64) { h.gone <- id },
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mutate != nil {
		mutate(&cfg, &opts)
	}
	h.cfg = cfg
	h.cam = New(cfg, Credential{Google: h.google}, opts)
	ctx, cancel := context.WithCancel(context.Background())
	go h.cam.Run(ctx)
	t.Cleanup(func() { cancel(); <-h.cam.Done() })
	return h
}

// next returns the camera's next event, skipping state updates.
func (h *harness) next() events.Event {
	h.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-h.events:
			if m.Event != nil {
				return *m.Event
			}
		case <-deadline:
			h.t.Fatal("no camera event within 5 s")
		}
	}
}

// expect reads the camera's next events and compares their names.
func (h *harness) expect(names ...string) []events.Event {
	h.t.Helper()
	var got []events.Event
	for _, want := range names {
		ev := h.next()
		got = append(got, ev)
		if ev.Event != want {
			h.t.Fatalf("event %q (%v), want %q", ev.Event, ev.Details, want)
		}
	}
	return got
}

// state polls the camera's retained state until ok accepts it.
func (h *harness) state(what string, ok func(State) bool) State {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, st := range h.bus.States() {
			if s, isCam := st.Value.(State); isCam && ok(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the camera's state never had %s: %+v", what, h.bus.States())
		}
		time.Sleep(time.Millisecond)
	}
}

// eventually polls cond (on the real clock: the fake one only drives the
// camera's timers).
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("never: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// request runs a DESCRIBE (setup false) or SETUP in the background.
func (h *harness) request(r *rtspserver.Reader, setup bool) <-chan describeResult {
	res := make(chan describeResult, 1)
	go func() {
		var rel *relay.Relay
		var err error
		if setup {
			rel, err = h.cam.Setup(context.Background(), r)
		} else {
			rel, err = h.cam.Describe(context.Background(), r)
		}
		res <- describeResult{relay: rel, err: err}
	}()
	return res
}

func (h *harness) answer(res <-chan describeResult) describeResult {
	h.t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(5 * time.Second):
		h.t.Fatal("the request was not answered within 5 s")
		return describeResult{}
	}
}

// run waits for the runner to start a run.
func (h *harness) run() *fakeRun {
	h.t.Helper()
	select {
	case r := <-h.runner.runs:
		return r
	case <-time.After(5 * time.Second):
		h.t.Fatal("no source run started within 5 s")
		return nil
	}
}

// ready drives one reader from SETUP to a ready stream.
func (h *harness) ready(r *rtspserver.Reader) (*relay.Relay, *fakeRun) {
	h.t.Helper()
	res := h.request(r, true)
	run := h.run()
	h.expect(events.CameraDemand, events.CameraReady)
	a := h.answer(res)
	if a.err != nil || a.relay == nil {
		h.t.Fatalf("SETUP: %v", a.err)
	}
	return a.relay, run
}

// The WebRTC commands: these tests run RTSP cameras; the WebRTC path runs
// against the simulated Google in internal/app.
func (g *fakeGoogle) GenerateWebRtcStream(ctx context.Context, device, offer string) (nest.WebRTCStream, error) {
	g.record("generate-webrtc")
	return nest.WebRTCStream{}, fmt.Errorf("fakeGoogle: no WebRTC")
}

func (g *fakeGoogle) ExtendWebRtcStream(ctx context.Context, s nest.WebRTCStream) (nest.WebRTCStream, error) {
	g.record("extend-webrtc")
	return s, fmt.Errorf("fakeGoogle: no WebRTC")
}

func (g *fakeGoogle) StopWebRtcStream(ctx context.Context, s nest.WebRTCStream) error {
	g.record("stop-webrtc")
	return nil
}
