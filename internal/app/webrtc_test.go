package app

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestWebRTCFrigateReaderAcrossSessions: ffmpeg with Frigate's input
// arguments reads a WebRTC-only camera for 20 s across 3 s Google sessions:
// nearly every frame, no DTS, PPS or slice error, the events in lifecycle
// order with the extensions, and Google saw one Generate, the Extends and
// one Stop, all WebRTC.
func TestWebRTCFrigateReaderAcrossSessions(t *testing.T) {
	t.Parallel()
	// Eight extensions in 20 s are more than Google's 5 a minute per
	// camera would allow; the quota is not what this test is about.
	e := startE2EWith(t, nestsim.Options{StreamTTL: 3 * time.Second}, nil, func(a *App) { a.googleLimits = benchLimits })
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	cam := e.cams["Living Room"]

	const readFor = 20 * time.Second
	out, frames, err := runFFmpeg(t, frigateInputArgs, e.rtspURL("living-room"), readFor)
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	for _, line := range decodeErrors(out) {
		t.Errorf("ffmpeg: %s", line)
	}
	if want := int(readFor.Seconds() * 25 * 0.9); frames < want {
		t.Fatalf("ffmpeg read %d frames in %s, want at least %d\n%s", frames, readFor, want, out)
	}

	var got []string
	for len(got) == 0 || got[len(got)-1] != "notReady" {
		ev := e.nextEvent(15 * time.Second)
		if ev.Domain != "camera" || ev.Entity == nil || *ev.Entity != cam {
			continue
		}
		if ev.Event == "ready" && ev.Details["source_type"] != "webrtcSource" {
			t.Errorf("ready from %v", ev.Details["source_type"])
		}
		got = append(got, ev.Event)
		if ev.Event == "notReady" || ev.Event == "failed-extension" {
			t.Logf("%s: %v", ev.Event, ev.Details)
		}
	}
	seq := strings.Join(got, " ")
	if !regexp.MustCompile(`^demand ready read (extended )+unread (extended )?unDemand notReady$`).MatchString(seq) {
		t.Fatalf("events in the wrong order: %s", seq)
	}
	if n := countOf(got, "extended"); n < 4 {
		t.Fatalf("%d extensions in %s of 3 s sessions", n, readFor)
	}
	testkit.Eventually(t, 10*time.Second, "the StopWebRtcStream call", func() bool {
		return e.sim.CountCalls("StopWebRtcStream") == 1
	})
	if g, x, r := e.sim.CountCalls("GenerateWebRtcStream"), e.sim.CountCalls("ExtendWebRtcStream"), e.sim.CountCalls("GenerateRtspStream"); g != 1 || r != 0 || x != countOf(got, "extended") {
		t.Fatalf("Google saw %d WebRTC Generates, %d Extends and %d RTSP Generates; want 1, %d and 0", g, x, r, countOf(got, "extended"))
	}
	t.Logf("%d frames in %s; %s", frames, readFor, fmt.Sprint(countOf(got, "extended"), " extensions"))
}

// TestWebRTCBatteryDoorbell: a battery doorbell refuses every extension;
// the camera connects a new session before the refused one expires and
// hands over to it, so ffmpeg, reading with Frigate's arguments, gets its
// frames without DTS, PPS or slice errors, and the camera never says
// notReady while it is read.
func TestWebRTCBatteryDoorbell(t *testing.T) {
	t.Parallel()
	bell := nestsim.BatteryDoorbell()
	e := startE2EWith(t, nestsim.Options{StreamTTL: 3 * time.Second, Cameras: []nestsim.Device{bell}}, nil,
		func(a *App) { a.googleLimits = benchLimits })
	e.authorize()
	e.sync(map[string]string{bell.CustomName: "doorbell"})
	cam := e.cams[bell.CustomName]

	const readFor = 10 * time.Second
	out, frames, err := runFFmpeg(t, frigateInputArgs, e.rtspURL("doorbell"), readFor)
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	for _, line := range decodeErrors(out) {
		t.Errorf("ffmpeg: %s", line)
	}
	generates := e.sim.CountCalls("GenerateWebRtcStream")
	t.Logf("%d frames in %s over %d sessions", frames, readFor, generates)
	if want := int(readFor.Seconds() * 25 * 0.9); frames < want {
		t.Fatalf("ffmpeg read %d frames in %s, want at least %d\n%s", frames, readFor, want, out)
	}
	if generates < 3 {
		t.Fatalf("%d Generates in %s of 3 s sessions that cannot be extended", generates, readFor)
	}
	var got []string
	for len(got) == 0 || got[len(got)-1] != "notReady" {
		ev := e.nextEvent(15 * time.Second)
		if ev.Domain == "camera" && ev.Entity != nil && *ev.Entity == cam {
			got = append(got, ev.Event)
		}
	}
	seq := strings.Join(got, " ")
	if !regexp.MustCompile(`^demand ready read (failed-extension )+unread (failed-extension )?unDemand notReady$`).MatchString(seq) {
		t.Fatalf("events: %s; want one ready and one notReady, with the refused extensions between", seq)
	}
}

// TestWebRTCRecoversFromICEFailureAndStall: the WebRTC connection fails
// (ICE), then Google's media stalls; each time the camera says notReady
// with the reason and starts a new session, while the RTSP reader stays
// connected and gets frames again.
func TestWebRTCRecoversFromICEFailureAndStall(t *testing.T) {
	t.Parallel()
	e := startE2EWith(t, nestsim.Options{}, func(c *config.Config) { c.StallTimeout = time.Second },
		func(a *App) { a.googleLimits = benchLimits })
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	cam := e.cams["Living Room"]
	r := readPath(t, e.rtspURL("living-room"))
	n := r.flowing(t, 0)
	e.waitEvent("camera", cam, "ready")

	e.sim.Faults().FailICE(nestsim.LivingRoomID)
	ev := e.waitEvent("camera", cam, "notReady")
	t.Logf("after the ICE failure: %v", ev.Details["reason"])
	e.waitEvent("camera", cam, "ready")
	n = r.flowing(t, n)

	e.sim.Faults().FreezeStreams(true)
	ev = e.waitEvent("camera", cam, "notReady")
	if reason, _ := ev.Details["reason"].(string); !strings.Contains(reason, "no media") {
		t.Fatalf("notReady after a stall: %q", reason)
	}
	e.sim.Faults().FreezeStreams(false)
	e.waitEvent("camera", cam, "ready")
	r.flowing(t, n)
	if ssrcs := r.ssrcSet(); len(ssrcs) != 1 {
		t.Fatalf("the reader saw %d SSRCs across the swaps, want 1", len(ssrcs))
	}
}

// TestWebRTCAsksForAKeyframe: a camera that sends no IDR until asked (as
// some do after joining mid-GOP) gets a keyframe request, and the reader
// gets a picture.
func TestWebRTCAsksForAKeyframe(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.sim.Faults().WithholdIDR(true)
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	readPath(t, e.rtspURL("living-room")).flowing(t, 0)
}
