package app

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// frigateArgs are the input arguments of Frigate's preset-rtsp-restream.
var frigateArgs = []string{"-hide_banner", "-user_agent", "FFmpeg Frigate/0.14.1", "-rtsp_transport", "tcp", "-timeout", "5000000"}

var frameLine = regexp.MustCompile(`frame=\s*(\d+)`)

// ffmpegFrames reads url for d as Frigate does and returns the frames read.
func ffmpegFrames(t *testing.T, url string, d time.Duration) int {
	t.Helper()
	out, n, err := runFFmpeg(t, frigateArgs, url, d)
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	if n < 0 {
		t.Fatalf("no frame count in ffmpeg's output:\n%s", out)
	}
	return n
}

// decodeErrors are the lines of ffmpeg's output that say a reader would
// stumble: timestamps going back, parameter sets or slices missing.
func decodeErrors(out string) []string {
	var bad []string
	for _, line := range strings.Split(out, "\n") {
		for _, sign := range []string{"Non-monotonous DTS", "non-existing PPS", "decode_slice_header error", "no frame!"} {
			if strings.Contains(line, sign) {
				bad = append(bad, line)
				break
			}
		}
	}
	return bad
}

// runFFmpeg reads url for d with the input arguments args, copying to
// nowhere, and returns ffmpeg's output, the frames it read (-1 if it
// printed no count) and its error. A minute bounds a hung ffmpeg.
func runFFmpeg(t *testing.T, args []string, url string, d time.Duration) (string, int, error) {
	t.Helper()
	bin := testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+d)
	defer cancel()
	args = append(append([]string{}, args...), "-i", url, "-t", fmt.Sprint(d.Seconds()), "-c", "copy", "-f", "null", "-")
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	frames := -1
	if m := frameLine.FindAllSubmatch(out, -1); len(m) > 0 {
		frames, _ = strconv.Atoi(string(m[len(m)-1][1]))
	}
	return string(out), frames, err
}

// TestE2EFrigateReaderAcrossLifetimes is the core loop: an ffmpeg reader
// with Frigate's arguments reads for several Google session lifetimes and
// gets frames the whole time; the events come in lifecycle order; Google
// saw one Generate, the Extends, and one Stop.
func TestE2EFrigateReaderAcrossLifetimes(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{StreamTTL: 3 * time.Second}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]

	const readFor = 10 * time.Second
	frames := ffmpegFrames(t, e.rtspURL("front-door"), readFor)
	if want := int(readFor.Seconds() * 25 * 0.9); frames < want {
		t.Fatalf("ffmpeg read %d frames in %s, want at least %d", frames, readFor, want)
	}

	var got []string
	for len(got) == 0 || got[len(got)-1] != "notReady" {
		ev := e.nextEvent(15 * time.Second)
		if ev.Domain != "camera" || ev.Entity == nil || *ev.Entity != cam {
			continue
		}
		got = append(got, ev.Event)
		need := map[string][]string{
			"demand":           {"path", "reader_type", "reader_id", "query"},
			"ready":            {"path", "source_type", "source_id", "tracks"},
			"read":             {"path", "reader_type", "reader_id", "remote_addr"},
			"unread":           {"path", "reader_type", "reader_id", "remote_addr"},
			"extended":         {"name", "expires_at"},
			"unDemand":         {"path"},
			"notReady":         {"path", "source_type", "source_id", "reason"},
			"failed-extension": {"name", "error"},
		}[ev.Event]
		for _, k := range need {
			if _, ok := ev.Details[k]; !ok {
				t.Errorf("%s event lacks %s: %v", ev.Event, k, ev.Details)
			}
		}
		if ev.Event == "read" || ev.Event == "demand" || ev.Event == "unDemand" || ev.Event == "ready" {
			if ev.Details["path"] != "front-door" {
				t.Errorf("%s path %v", ev.Event, ev.Details["path"])
			}
		}
	}
	// demand, ready, read, extended..., unread, unDemand, notReady
	// The session stays alive through the close-after grace, so an
	// extension may also fall between unread and unDemand.
	re := regexp.MustCompile(`^demand ready read (extended )+unread (extended )?unDemand notReady$`)
	seq := fmt.Sprint(got)
	seq = seq[1 : len(seq)-1]
	if !re.MatchString(seq) {
		t.Fatalf("events in the wrong order: %s", seq)
	}
	if n := countOf(got, "extended"); n < 2 {
		t.Fatalf("%d extensions in %s of 3 s sessions", n, readFor)
	}
	testkit.Eventually(t, 10*time.Second, "the StopRtspStream call", func() bool {
		return e.sim.CountCalls("StopRtspStream") == 1
	})
	if g, x := e.sim.CountCalls("GenerateRtspStream"), e.sim.CountCalls("ExtendRtspStream"); g != 1 || x != countOf(got, "extended") {
		t.Fatalf("Google saw %d Generate and %d Extend calls; want 1 and %d", g, x, countOf(got, "extended"))
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

// reader is a gortsplib client reading a path, counting what it gets.
type reader struct {
	c       *gortsplib.Client
	packets atomic.Int64
	lastTS  atomic.Uint32 // RTP timestamp of the newest video packet
	mu      sync.Mutex
	ssrcs   map[uint32]bool
	err     chan error
}

func readPath(t *testing.T, url string) *reader {
	t.Helper()
	r, err := openReader(url, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.c.Close)
	return r
}

// openReader connects a reader; readTimeout 0 keeps gortsplib's 10 s. It
// may be called from any goroutine; the caller closes r.c.
func openReader(url string, readTimeout time.Duration) (*reader, error) {
	r := &reader{c: &gortsplib.Client{ReadTimeout: readTimeout}, ssrcs: map[uint32]bool{}, err: make(chan error, 1)}
	u, err := base.ParseURL(url)
	if err != nil {
		return nil, err
	}
	tcp := gortsplib.TransportTCP
	r.c.Transport = &tcp
	if err := r.c.Start(u.Scheme, u.Host); err != nil {
		return nil, err
	}
	desc, _, err := r.c.Describe(u)
	if err != nil {
		r.c.Close()
		return nil, fmt.Errorf("DESCRIBE %s: %w", url, err)
	}
	var h *format.H264
	medi := desc.FindFormat(&h)
	if medi == nil {
		r.c.Close()
		return nil, errors.New("no H.264 track")
	}
	if err := r.c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		r.c.Close()
		return nil, err
	}
	r.c.OnPacketRTP(medi, h, func(p *rtp.Packet) {
		r.packets.Add(1)
		r.lastTS.Store(p.Timestamp)
		r.mu.Lock()
		r.ssrcs[p.SSRC] = true
		r.mu.Unlock()
	})
	if _, err := r.c.Play(nil); err != nil {
		r.c.Close()
		return nil, err
	}
	go func() { r.err <- r.c.Wait() }()
	return r, nil
}

// ssrcSet returns the SSRCs seen so far.
func (r *reader) ssrcSet() map[uint32]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[uint32]bool{}
	for k := range r.ssrcs {
		out[k] = true
	}
	return out
}

// flowing waits until the reader has received more packets than before.
func (r *reader) flowing(t *testing.T, after int64) int64 {
	t.Helper()
	testkit.Eventually(t, 15*time.Second, "packets to flow", func() bool { return r.packets.Load() > after+25 })
	select {
	case err := <-r.err:
		t.Fatalf("the reader was disconnected: %v", err)
	default:
	}
	return r.packets.Load()
}

// TestE2EFailedExtensionRegenerates: Google refuses the extension; the
// camera reports failed-extension, regenerates, and the reader stays
// connected and keeps getting packets, with one SSRC throughout.
func TestE2EFailedExtensionRegenerates(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{StreamTTL: 3 * time.Second}, nil)
	e.authorize()
	e.sync(map[string]string{"Backyard": "backyard"})
	cam := e.cams["Backyard"]
	r := readPath(t, e.rtspURL("backyard"))
	n := r.flowing(t, 0)
	e.sim.Faults().FailExtensions(true)
	e.waitEvent("camera", cam, "failed-extension")
	e.sim.Faults().FailExtensions(false)
	e.waitEvent("camera", cam, "ready")
	r.flowing(t, n)
	if g := e.sim.CountCalls("GenerateRtspStream"); g != 2 {
		t.Fatalf("%d Generate calls, want 2 (the first and the regeneration)", g)
	}
	if s := r.ssrcSet(); len(s) != 1 {
		t.Fatalf("the reader saw SSRCs %v", s)
	}
}

// TestE2EDroppedUpstreamRegenerates: the RTSPS connection to Google drops;
// the camera regenerates while the reader stays connected.
func TestE2EDroppedUpstreamRegenerates(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Backyard": "backyard"})
	cam := e.cams["Backyard"]
	r := readPath(t, e.rtspURL("backyard"))
	n := r.flowing(t, 0)
	e.sim.Faults().DropStreams()
	ev := e.waitEvent("camera", cam, "notReady")
	if ev.Details["reason"] == "" {
		t.Fatal("notReady without a reason")
	}
	e.waitEvent("camera", cam, "ready")
	r.flowing(t, n)
	if g := e.sim.CountCalls("GenerateRtspStream"); g != 2 {
		t.Fatalf("%d Generate calls, want 2", g)
	}
}

// TestE2ECredentialLifecycle: the code exchange emits authenticated, the
// refresh loop emits reauthenticated, and a revoked refresh token emits
// unauthenticated and takes the live camera down with a reason.
func TestE2ECredentialLifecycle(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{AccessTokenTTL: 4 * time.Second}, nil)
	e.authorize() // waits for authenticated
	ev := e.waitEvent("credentials", e.credID, "reauthenticated")
	if ev.Details["description"] != "Home" || ev.Details["expires_at"] == nil {
		t.Fatalf("reauthenticated details %v", ev.Details)
	}
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]
	r := readPath(t, e.rtspURL("front-door"))
	r.flowing(t, 0)

	e.sim.Faults().RevokeRefreshTokens()
	ev = e.waitEvent("credentials", e.credID, "unauthenticated")
	if ev.Details["error"] == nil || ev.Details["description"] != "Home" {
		t.Fatalf("unauthenticated details %v", ev.Details)
	}
	nr := e.waitEvent("camera", cam, "notReady")
	if reason, _ := nr.Details["reason"].(string); reason == "" {
		t.Fatal("notReady without a reason")
	}
	select {
	case <-r.err:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader was not disconnected when the camera went down")
	}
	// A new reader is refused with 503 at once, not held.
	c := gortsplib.Client{}
	u, _ := base.ParseURL(e.rtspURL("front-door"))
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, res, err := c.Describe(u); err == nil || res == nil || res.StatusCode != base.StatusServiceUnavailable {
		t.Fatalf("DESCRIBE after the credential died: %v %v", res, err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("the refusal must not wait for the start timeout")
	}
	var cred map[string]any
	e.rr.Call(t, req("read", "credentials", "token", e.token, "entity", fmt.Sprint(e.credID))).MustOK(t, &cred)
	if cred["is_authenticated"] != false {
		t.Fatalf("credential after revocation: %v", cred)
	}
}

// TestE2ESharedStartAndQuickReturn: a second reader arriving while the
// first waits for the camera gets the same stream from the same Google
// session; a reader that leaves and returns within the close-after delay
// costs no new Generate.
func TestE2ESharedStartAndQuickReturn(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.OnDemandCloseAfter = 5 * time.Second })
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]
	e.sim.Faults().SlowResponses(700 * time.Millisecond) // the start takes a while

	var wg sync.WaitGroup
	readers := make([]*reader, 2)
	for i := range readers {
		wg.Add(1)
		go func() { defer wg.Done(); readers[i] = readPath(t, e.rtspURL("front-door")) }()
		if i == 0 {
			e.waitEvent("camera", cam, "demand") // the second arrives mid-start
		}
	}
	wg.Wait()
	e.sim.Faults().SlowResponses(0)
	for _, r := range readers {
		r.flowing(t, 0)
	}
	if g := e.sim.CountCalls("GenerateRtspStream"); g != 1 {
		t.Fatalf("two readers cost %d Generate calls", g)
	}
	var a, b uint32
	for s := range readers[0].ssrcSet() {
		a = s
	}
	for s := range readers[1].ssrcSet() {
		b = s
	}
	if a != b {
		t.Fatalf("the readers got different streams (SSRC %d and %d)", a, b)
	}
	for _, r := range readers {
		r.c.Close()
	}
	e.waitEvent("camera", cam, "unread")
	e.waitEvent("camera", cam, "unread")
	// Back within the close-after delay, as Frigate's 10 s restarts are.
	r := readPath(t, e.rtspURL("front-door"))
	r.flowing(t, 0)
	if g := e.sim.CountCalls("GenerateRtspStream"); g != 1 {
		t.Fatalf("a quick return cost a Generate (%d calls)", g)
	}
}
