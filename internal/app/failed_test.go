package app

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/supervisor"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// describeReason is describe with the status line's reason, which is what
// a reader's log shows of a refusal.
func describeReason(t *testing.T, url string) (base.StatusCode, string) {
	t.Helper()
	st, reason, err := describeAnswer(t, url)
	if st == 0 {
		t.Fatalf("DESCRIBE %s: %v", url, err)
	}
	return st, reason
}

// describeAnswer sends one DESCRIBE: the status (0 without an answer), its
// reason and the client's error.
func describeAnswer(t *testing.T, url string) (base.StatusCode, string, error) {
	t.Helper()
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := gortsplib.Client{}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, res, err := c.Describe(u)
	if res == nil {
		return 0, "", err
	}
	return res.StatusCode, res.StatusMessage, err
}

// waitState waits until the camera's retained state satisfies ok.
func waitState(t *testing.T, a *App, id uint64, what string, ok func(supervisor.State) bool) supervisor.State {
	t.Helper()
	var st supervisor.State
	testkit.Eventually(t, 20*time.Second, "camera state with "+what, func() bool {
		st, _ = cameraState(a, id)
		return ok(st)
	})
	return st
}

// TestWebRTCCameraStreams: a camera that streams only over WebRTC (the
// simulator's "Living Room") is served over RTSP from a WebRTC session:
// H.264 flows to an RTSP reader, the events name the WebRTC source, and
// Google is asked for a WebRTC stream, never an RTSP one.
func TestWebRTCCameraStreams(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	id := e.cams["Living Room"]
	r := readPath(t, e.rtspURL("living-room"))
	r.flowing(t, 0)
	ev := e.waitEvent("camera", id, "ready")
	if ev.Details["source_type"] != "webrtcSource" {
		t.Fatalf("ready from %v, want webrtcSource", ev.Details["source_type"])
	}
	if g, rtsp := e.sim.CountCalls("GenerateWebRtcStream"), e.sim.CountCalls("GenerateRtspStream"); g != 1 || rtsp != 0 {
		t.Fatalf("%d WebRTC and %d RTSP Generates, want 1 and 0", g, rtsp)
	}
}

// TestUnsupportedCameraFailsAtOnce: a camera with no protocol nestmtx
// serves is failed from its row alone: readers get a 503 with the reason at
// once, and Google is never asked for a stream it cannot give.
func TestUnsupportedCameraFailsAtOnce(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	id := e.cams["Living Room"]
	row, err := e.app.Store().UpdateCamera(id, func(c *store.Camera) error { c.Protocols = []string{"HLS"}; return nil })
	if err != nil {
		t.Fatal(err)
	}
	e.app.cameras.CameraChanged(row)
	for range 3 {
		start := time.Now()
		st, reason := describeReason(t, e.rtspURL("living-room"))
		if st != base.StatusServiceUnavailable || !strings.Contains(reason, "HLS") {
			t.Fatalf("DESCRIBE: %d %q, want 503 naming HLS", st, reason)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("refused after %s, want at once", took)
		}
	}
	st := waitState(t, e.app, id, "status failed", func(s supervisor.State) bool { return s.Status == "failed" })
	if st.LastError == nil || !strings.Contains(*st.LastError, "HLS") {
		t.Fatalf("last_error %v", st.LastError)
	}
	if n := e.sim.CountCalls("GenerateRtspStream") + e.sim.CountCalls("GenerateWebRtcStream"); n != 0 {
		t.Fatalf("%d Generate calls for a camera nestmtx cannot serve, want 0", n)
	}
}

// TestRefusedCameraBacksOff: when Google refuses to stream a camera (400
// FAILED_PRECONDITION to Generate), the camera is failed with the reason;
// readers retrying get 503 at once without another Generate, and an edit of
// the camera tries again.
func TestRefusedCameraBacksOff(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	id := e.cams["Living Room"]
	// A row that does not say which protocols the camera has (an older
	// sync): only Google's answer tells.
	unknown := func() {
		row, err := e.app.Store().UpdateCamera(id, func(c *store.Camera) error { c.Protocols = nil; return nil })
		if err != nil {
			t.Fatal(err)
		}
		e.app.cameras.CameraChanged(row)
	}
	unknown()
	st, reason := describeReason(t, e.rtspURL("living-room"))
	if st != base.StatusServiceUnavailable || !strings.Contains(reason, "refused") {
		t.Fatalf("DESCRIBE: %d %q, want 503 saying Google refused", st, reason)
	}
	state := waitState(t, e.app, id, "status failed", func(s supervisor.State) bool { return s.Status == "failed" })
	if state.LastError == nil || !strings.Contains(*state.LastError, "FAILED_PRECONDITION") {
		t.Fatalf("last_error %v", state.LastError)
	}
	for range 5 {
		start := time.Now()
		if st, _ := describeReason(t, e.rtspURL("living-room")); st != base.StatusServiceUnavailable {
			t.Fatalf("retry: %d, want 503", st)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("retry refused after %s, want at once", took)
		}
	}
	if n := e.sim.CountCalls("GenerateRtspStream"); n != 1 {
		t.Fatalf("%d Generate calls after 6 readers, want 1 until the backoff ends", n)
	}
	unknown() // an edit (or a sync) tries again
	if st, _ := describeReason(t, e.rtspURL("living-room")); st != base.StatusServiceUnavailable {
		t.Fatalf("after the edit: %d, want 503", st)
	}
	if n := e.sim.CountCalls("GenerateRtspStream"); n != 2 {
		t.Fatalf("%d Generate calls after an edit, want 2", n)
	}
	var health struct {
		Details map[string]struct {
			Meta struct {
				Credentials []map[string]any `json:"credentials"`
			} `json:"meta"`
		} `json:"details"`
	}
	body := e.call("list", "health")
	_ = json.Unmarshal(body, &health)
	if q := health.Details["google_quota"].Meta.Credentials; len(q) != 1 || q[0]["commands_in_window"] != float64(2) {
		t.Fatalf("health's google_quota: %s", body)
	}
}
