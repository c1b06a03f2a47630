package app

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestE2EStallRegenerates: Google's stream stays connected but sends
// nothing; after the stall timeout the camera says notReady with a reason,
// regenerates, and the reader, still connected, gets frames again.
func TestE2EStallRegenerates(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.StallTimeout = time.Second })
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]
	r := readPath(t, e.rtspURL("front-door"))
	n := r.flowing(t, 0)
	start := time.Now()
	e.sim.Faults().FreezeStreams(true)
	ev := e.waitEvent("camera", cam, "notReady")
	if reason, _ := ev.Details["reason"].(string); !strings.Contains(reason, "no media") {
		t.Fatalf("notReady reason %q", reason)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("stall noticed after %s with a 1 s stall timeout", took)
	}
	e.sim.Faults().FreezeStreams(false)
	e.waitEvent("camera", cam, "ready")
	r.flowing(t, n)
	if g := e.sim.CountCalls("GenerateRtspStream"); g < 2 {
		t.Fatalf("%d Generate calls: the stall did not regenerate", g)
	}
}

// TestRecoveryServerErrors: Google answers 500 twice; the start backs off
// and retries, and the held reader gets the stream within the start timeout.
func TestRecoveryServerErrors(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	e.sim.Faults().ServerErrors(2)
	start := time.Now()
	readPath(t, e.rtspURL("front-door")).flowing(t, 0)
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("recovered after %s", took)
	}
	if g := e.sim.CountCalls("GenerateRtspStream"); g != 1 {
		// The two 500s hit the first SDM calls (Generate and its retry);
		// the third call succeeds.
		t.Logf("%d successful Generate calls", g)
	}
}

// TestRecoveryRateLimited: a 429 is not a failure to report to the reader
// at once: the camera waits for Google's quota window (holding the reader
// up to the start timeout), and its state says why.
func TestRecoveryRateLimited(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.OnDemandStartTimeout = 3 * time.Second })
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door", "Backyard": "backyard"})
	e.sim.Faults().RateLimitEveryOther(true)
	readPath(t, e.rtspURL("front-door")).flowing(t, 0) // this command passes
	start := time.Now()
	st, reason := describeReason(t, e.rtspURL("backyard")) // this one gets 429
	if st != base.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503 after the start timeout", st)
	}
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Fatalf("refused after %s: a rate-limited start must hold the reader", took)
	}
	// The reader, the state and health all say why.
	if !strings.Contains(reason, "429") {
		t.Fatalf("503 reason %q does not say Google answered 429", reason)
	}
	state, _ := cameraState(e.app, e.cams["Backyard"])
	if state.LastError == nil || !strings.Contains(*state.LastError, "RESOURCE_EXHAUSTED") {
		t.Fatalf("state's last_error %v", state.LastError)
	}
	if health := string(e.call("list", "health")); !strings.Contains(health, `"penalized_until":"`) {
		t.Fatalf("health does not show the 429 penalty: %s", health)
	}
	if e.sim.CountCalls("GenerateRtspStream") < 2 {
		t.Fatal("no second Generate call was made")
	}
}

// TestRecoveryRTSPSRefused: the stream URL Google handed out is refused
// (dropcam's 404); the camera regenerates and the reader gets the stream.
func TestRecoveryRTSPSRefused(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	e.sim.Faults().RefuseStreams(1)
	readPath(t, e.rtspURL("front-door")).flowing(t, 0)
	if g := e.sim.CountCalls("GenerateRtspStream"); g != 2 {
		t.Fatalf("%d Generate calls, want 2 (the refused URL is not reused)", g)
	}
	if s := e.sim.CountCalls("StopRtspStream"); s < 1 {
		t.Fatal("the refused session was not stopped")
	}
}

// TestRecoveryTLSFailure: the camera's certificate cannot be verified (no
// CA configured); the reader gets 503 at the start timeout and the camera's
// state names the cause.
func TestRecoveryTLSFailure(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) {
		c.GoogleCAFile = ""
		c.OnDemandStartTimeout = 2 * time.Second
	})
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	state := e.mqtt.Subscribe(fmt.Sprintf("nestmtx/state/camera/%d", e.cams["Front Door"]))
	if st, _ := describe(t, e.rtspURL("front-door")); st != base.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", st)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-state:
			if strings.Contains(string(p.Payload), "certificate") {
				return
			}
		case <-deadline:
			t.Fatal("the state never named the certificate problem")
		}
	}
}

// TestRecoveryCameraUnshared: the device is removed from sharing while it
// streams; its session dies, Google answers 404 for it, the camera goes
// down with a reason and is marked missing, and readers get 404 at once
// instead of costing a Generate each.
func TestRecoveryCameraUnshared(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{StreamTTL: 2 * time.Second}, nil)
	e.authorize()
	e.sync(map[string]string{"Backyard": "backyard"})
	cam := e.cams["Backyard"]
	state := e.mqtt.Subscribe(fmt.Sprintf("nestmtx/state/camera/%d", cam))
	r := readPath(t, e.rtspURL("backyard"))
	r.flowing(t, 0)
	if err := e.sim.Faults().RemoveDevice(nestsim.BackyardID); err != nil {
		t.Fatal(err)
	}
	e.waitEvent("camera", cam, "failed-extension") // Google: NOT_FOUND
	e.waitEvent("camera", cam, "notReady")
	expectDisconnect(t, r) // the regeneration found no device: down for good
	for p := testkit.Next(t, state, 10*time.Second); !strings.Contains(string(p.Payload), "no longer shares"); {
		p = testkit.Next(t, state, 10*time.Second)
	}
	testkit.Eventually(t, 10*time.Second, "the camera to be marked missing", func() bool {
		var c map[string]any
		_ = json.Unmarshal(e.call("read", "cameras", "entity", fmt.Sprint(cam)), &c)
		return c["missing"] == true
	})
	before := e.sim.CountCalls("GenerateRtspStream")
	for range 3 {
		if st, _ := describe(t, e.rtspURL("backyard")); st != base.StatusNotFound {
			t.Fatalf("status %d for an unshared camera", st)
		}
	}
	if after := e.sim.CountCalls("GenerateRtspStream"); after != before {
		t.Fatalf("readers of an unshared camera cost %d Generate calls", after-before)
	}
}

// TestRecoveryResumesAfterReauthorization: a credential that lost Google's
// consent works again, cameras included, once it is authorized again.
func TestRecoveryResumesAfterReauthorization(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{AccessTokenTTL: 3 * time.Second}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	e.sim.Faults().RevokeRefreshTokens()
	e.waitEvent("credentials", e.credID, "unauthenticated")
	if st, _ := describe(t, e.rtspURL("front-door")); st != base.StatusServiceUnavailable {
		t.Fatalf("status %d while unauthenticated", st)
	}
	e.consent(e.credID, "authenticated") // a fresh exchange after the loss
	readPath(t, e.rtspURL("front-door")).flowing(t, 0)
}

// TestRecoveryCodecChange: the camera's encoder settings change between
// sessions (here 640x360 becomes 320x180). Feeding the old readers the new
// stream would wedge their decoders, so their sessions end cleanly, and a
// reconnecting reader gets the new parameters in its SDP.
func TestRecoveryCodecChange(t *testing.T) {
	t.Parallel()
	ffmpeg := testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	dir := t.TempDir()
	out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error",
		"-t", "4", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
		"-t", "4", "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000",
		"-map", "0:v", "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast", "-g", "25", "-bf", "0",
		"-x264-params", "repeat-headers=1", "-pix_fmt", "yuv420p", "-f", "h264", filepath.Join(dir, "clip.h264"),
		"-map", "1:a", "-c:a", "aac", "-b:a", "48k", "-f", "adts", filepath.Join(dir, "clip.aac")).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	small, err := nestsim.LoadClipFiles(filepath.Join(dir, "clip.h264"), filepath.Join(dir, "clip.aac"))
	if err != nil {
		t.Fatal(err)
	}
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	before := spsOf(t, e.rtspURL("front-door"))
	r := readPath(t, e.rtspURL("front-door"))
	r.flowing(t, 0)
	if err := e.sim.Faults().SetCameraClip(nestsim.FrontDoorID, small); err != nil {
		t.Fatal(err)
	}
	e.sim.Faults().DropStreams()
	expectDisconnect(t, r)
	after := spsOf(t, e.rtspURL("front-door"))
	if bytes.Equal(before, after) || !bytes.Equal(after, small.SPS) {
		t.Fatalf("SPS after the change: %x (before %x, camera %x)", after, before, small.SPS)
	}
	readPath(t, e.rtspURL("front-door")).flowing(t, 0)
}

// spsOf DESCRIBEs a path and returns the H.264 SPS of its SDP.
func spsOf(t *testing.T, url string) []byte {
	t.Helper()
	u, _ := base.ParseURL(url)
	c := gortsplib.Client{}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	var h *format.H264
	if desc.FindFormat(&h) == nil {
		t.Fatal("no H.264 track")
	}
	sps, _ := h.SafeParams()
	return sps
}

// TestRecoverySessionPastExpiry: Google is slow to answer the extension
// and the session passes its expiresAt while the camera still sends (the
// stream looks alive, NestMTX #39). The watchdog regenerates at expiry
// instead of trusting the media.
func TestRecoverySessionPastExpiry(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{StreamTTL: 3 * time.Second}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]
	r := readPath(t, e.rtspURL("front-door"))
	n := r.flowing(t, 0)
	e.sim.Faults().LingerExpired(true)
	e.sim.Faults().SlowResponses(4 * time.Second) // the extension at 80% hangs past expiry
	ev := e.waitEvent("camera", cam, "notReady")
	for !strings.Contains(fmt.Sprint(ev.Details["reason"]), "expired at") || !strings.Contains(fmt.Sprint(ev.Details["reason"]), "without an extension") {
		ev = e.waitEvent("camera", cam, "notReady")
	}
	e.sim.Faults().SlowResponses(0)
	e.waitEvent("camera", cam, "ready")
	r.flowing(t, n)
}

// TestFailedSetupLeavesNoReader: a SETUP sent without DESCRIBE (as some
// clients do) that times out must not stay counted as a reader, or the
// camera would be demanded forever and never close.
func TestFailedSetupLeavesNoReader(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.OnDemandStartTimeout = time.Second })
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]
	e.sim.Faults().SlowResponses(3 * time.Second)
	conn, err := net.Dial("tcp", e.app.RTSPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "SETUP %s/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nAuthorization: Basic %s\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
		rtspURLAs(e.app, nil, "front-door"), base64.StdEncoding.EncodeToString([]byte("admin:"+adminPassword)))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(status, "503") {
		t.Fatalf("SETUP answered %q (%v), want 503", status, err)
	}
	e.waitEvent("camera", cam, "unDemand")
	e.sim.Faults().SlowResponses(0)
	waitIdle(t, e, cam)
}

// TestRecoveryGoogleTimeout: Google accepts the Generate but never answers
// within the client's 10 s HTTP timeout. The attempt is abandoned with a
// reason in the camera's state, the start backs off and retries, and the
// reader, held all along, gets the stream once Google answers again.
func TestRecoveryGoogleTimeout(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.OnDemandStartTimeout = 40 * time.Second })
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]
	states := e.mqtt.Subscribe(fmt.Sprintf("nestmtx/state/camera/%d", cam))
	e.sim.Faults().SlowResponses(time.Minute)
	start := time.Now()
	type opened struct {
		r   *reader
		err error
	}
	got := make(chan opened, 1)
	go func() {
		r, err := openReader(e.rtspURL("front-door"), 45*time.Second)
		if err == nil {
			t.Cleanup(r.c.Close) // closed even if the test fails before taking it
		}
		got <- opened{r, err}
	}()
	// Wait for the state to report the abandoned attempt.
	deadline := time.After(30 * time.Second)
	for {
		var st struct {
			LastError *string `json:"last_error"`
		}
		select {
		case p := <-states:
			_ = json.Unmarshal(p.Payload, &st)
		case <-deadline:
			t.Fatal("no state reported the timed-out Generate")
		}
		if st.LastError != nil && strings.Contains(*st.LastError, "Timeout") {
			t.Logf("after %s: last_error %q", time.Since(start).Round(time.Millisecond), *st.LastError)
			break
		}
	}
	if took := time.Since(start); took < 9*time.Second {
		t.Fatalf("the Generate was given up after %s, before the 10 s HTTP timeout", took)
	}
	e.sim.Faults().SlowResponses(0)
	o := <-got
	if o.err != nil {
		t.Fatalf("the held reader was refused: %v", o.err)
	}
	o.r.flowing(t, 0)
	t.Logf("stream flowing %s after the first DESCRIBE", time.Since(start).Round(time.Millisecond))
}
