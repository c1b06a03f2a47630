package supervisor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
)

func reader(id string) *rtspserver.Reader {
	return &rtspserver.Reader{ID: id, Type: "rtspSession", RemoteAddr: "127.0.0.1:5000"}
}

func statusOf(t *testing.T, err error) (base.StatusCode, string) {
	t.Helper()
	var se *rtspserver.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not a status", err)
	}
	return se.Status, se.Reason
}

// A reader's SETUP starts the camera (demand, ready); when the last reader
// leaves, the stream stays for the close delay, then unDemand, notReady and
// one Stop of the session.
func TestDemandReadyCloseAfter(t *testing.T) {
	h := newHarness(t, nil)
	r := reader("r1")
	h.ready(r)
	if st := h.state("one reader, ready", func(s State) bool { return s.Status == "ready" && s.Readers == 1 }); st.ExpiresAt == nil {
		t.Fatal("a ready camera's state has no expires_at")
	}
	h.cam.Remove(r)
	h.state("no reader", func(s State) bool { return s.Readers == 0 })
	h.clk.Advance(29 * time.Second)
	if n := h.google.count("stop"); n != 0 {
		t.Fatalf("stopped %d times before the close delay", n)
	}
	h.clk.Advance(time.Second)
	h.expect(events.CameraUnDemand, events.CameraNotReady)
	h.state("idle", func(s State) bool { return s.Status == "idle" && !s.Ready })
	h.eventually("one Stop of the session", func() bool { return h.google.count("stop") == 1 })
	if n := h.google.count("generate"); n != 1 {
		t.Fatalf("%d Generates, want 1", n)
	}
}

// Extensions come at 80 % of each lifetime, re-armed; a refused one
// (Google says the session is gone) regenerates while the reader stays,
// without a Stop of the lost session.
func TestRefusedExtensionRegenerates(t *testing.T) {
	h := newHarness(t, nil)
	r := reader("r1")
	rel, _ := h.ready(r)
	h.clk.Advance(4 * time.Minute) // 80 % of 5 minutes
	h.expect(events.CameraExtended)
	h.google.mu.Lock()
	h.google.extErr = &nest.APIError{Op: "ExtendRtspStream", HTTPStatus: 400, Status: "FAILED_PRECONDITION"}
	h.google.mu.Unlock()
	h.clk.Advance(4 * time.Minute)
	h.expect(events.CameraFailedExtension, events.CameraNotReady)
	h.run()
	h.expect(events.CameraReady)
	if n := h.google.count("generate"); n != 2 {
		t.Fatalf("%d Generates, want 2", n)
	}
	if n := h.google.count("stop"); n != 0 {
		t.Fatalf("%d Stops of a session Google said is gone", n)
	}
	if st := h.state("one reader", func(s State) bool { return s.Status == "ready" }); st.Readers != 1 {
		t.Fatalf("the reader was dropped by the regeneration: %+v", st)
	}
	if res := h.answer(h.request(reader("r2"), false)); res.relay != rel {
		t.Fatal("the regeneration replaced the relay although the tracks did not change")
	}
}

// Google says the device does not exist: the camera goes down with the
// reason, a sync is asked for, and later readers get 404 without a
// Generate.
func TestDeviceGone(t *testing.T) {
	h := newHarness(t, nil)
	h.google.genErrs = []error{&nest.APIError{Op: "GenerateRtspStream", HTTPStatus: 404, Status: "NOT_FOUND"}}
	res := h.answer(h.request(reader("r1"), false))
	if st, reason := statusOf(t, res.err); st != base.StatusServiceUnavailable || !strings.Contains(reason, "no longer shares") {
		t.Fatalf("first reader: %d %q", st, reason)
	}
	h.expect(events.CameraDemand, events.CameraUnDemand)
	select {
	case id := <-h.gone:
		if id != 7 {
			t.Fatalf("DeviceGone(%d)", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no sync asked for")
	}
	h.state("failed", func(s State) bool {
		return s.Status == "failed" && s.LastError != nil && strings.Contains(*s.LastError, "no longer shares")
	})
	for range 3 {
		if st, _ := statusOf(t, h.answer(h.request(reader("r"), false)).err); st != base.StatusNotFound {
			t.Fatalf("later reader: %d, want 404", st)
		}
	}
	if n := h.google.count("generate"); n != 1 {
		t.Fatalf("%d Generates, want 1", n)
	}
	// An edit (or a sync) gives the camera a new chance.
	h.cam.Update(h.cfg)
	h.ready(reader("r2"))
}

// A regenerated stream with other tracks (a codec change) gets a new relay,
// and the readers of the old one are ended so that they reconnect.
func TestCodecChangeReplacesRelay(t *testing.T) {
	h := newHarness(t, nil)
	r := reader("r1")
	old, run := h.ready(r)
	h.runner.setParams(paramsB)
	run.fail <- errors.New("the upstream ended: EOF")
	h.expect(events.CameraNotReady)
	h.run()
	h.expect(events.CameraReady)
	h.state("no reader left", func(s State) bool { return s.Status == "ready" && s.Readers == 0 })
	res := h.answer(h.request(reader("r2"), false))
	if res.relay == nil || res.relay == old || !res.relay.Params().Equal(paramsB) {
		t.Fatal("the new tracks are not served by a new relay")
	}
}

// A start that does not finish in time answers 503 with the reason, ends
// the demand and goes idle; Generate's wait is cancelled.
func TestStartTimeout(t *testing.T) {
	h := newHarness(t, nil)
	h.google.hang = true
	res := h.request(reader("r1"), false)
	h.expect(events.CameraDemand)
	h.state("starting", func(s State) bool { return s.Status == "starting" })
	h.clk.Advance(20 * time.Second)
	if st, reason := statusOf(t, h.answer(res).err); st != base.StatusServiceUnavailable || !strings.Contains(reason, "did not start within 20s") {
		t.Fatalf("%d %q", st, reason)
	}
	h.expect(events.CameraUnDemand)
	h.state("idle", func(s State) bool { return s.Status == "idle" })
}

// A credential that goes down mid-stream takes the camera down with the
// reason; readers get 503 at once until it is back.
func TestCredentialDownMidStream(t *testing.T) {
	h := newHarness(t, nil)
	h.ready(reader("r1"))
	h.cam.SetCredential(Credential{Down: "Google refused the refresh token"})
	ev := h.expect(events.CameraNotReady, events.CameraUnDemand)[0]
	if ev.Details["reason"] != "Google refused the refresh token" {
		t.Fatalf("notReady reason %v", ev.Details["reason"])
	}
	h.state("unauthenticated", func(s State) bool { return s.Status == "unauthenticated" })
	start := time.Now()
	if st, reason := statusOf(t, h.answer(h.request(reader("r2"), false)).err); st != base.StatusServiceUnavailable || reason != "Google refused the refresh token" {
		t.Fatalf("%d %q", st, reason)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("refused after %s, want at once", took)
	}
	h.eventually("the live session stopped", func() bool { return h.google.count("stop") == 1 })
	h.cam.SetCredential(Credential{Google: h.google})
	h.ready(reader("r3"))
}

// A camera Google refuses (400 to Generate) is failed: readers get 503 at
// once, and Generate is asked again only when the backoff has passed.
func TestRefusedCameraWaitsForBackoff(t *testing.T) {
	h := newHarness(t, nil)
	h.google.genErrs = []error{&nest.APIError{Op: "GenerateRtspStream", HTTPStatus: 400, Status: "FAILED_PRECONDITION"}}
	h.answer(h.request(reader("r1"), false))
	h.expect(events.CameraDemand, events.CameraUnDemand)
	h.state("failed", func(s State) bool { return s.Status == "failed" })
	for range 3 {
		if st, _ := statusOf(t, h.answer(h.request(reader("r"), false)).err); st != base.StatusServiceUnavailable {
			t.Fatalf("%d, want 503", st)
		}
	}
	if n := h.google.count("generate"); n != 1 {
		t.Fatalf("%d Generates during the backoff, want 1", n)
	}
	h.clk.Advance(5 * time.Minute)
	h.state("idle after the backoff", func(s State) bool { return s.Status == "idle" })
	h.ready(reader("r2"))
	if n := h.google.count("generate"); n != 2 {
		t.Fatalf("%d Generates, want 2", n)
	}
}
