package app

import (
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestRecordingAcrossSwaps records as Frigate does (10 s MP4 segments, copy,
// reset timestamps) for over a minute while Google refuses every extension
// and drops the RTSPS connection every 20 s, so the upstream is swapped
// several times. Every segment must be readable, ffmpeg must report no DTS,
// PPS or slice errors (a second output decodes every frame to see them), and
// the frames received must be at least 90% of those the camera sent.
func TestRecordingAcrossSwaps(t *testing.T) {
	if testing.Short() {
		t.Skip("records for over a minute")
	}
	t.Parallel()
	ffmpeg := testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	ffprobe := testkit.RequireTool(t, "ffprobe", "ffmpeg")
	// Sessions of 30 s whose extensions all fail (at 24 s), and a drop every
	// 45 s: a swap every 22 s or so. That is what Google's quota (5 Generates
	// a minute per camera, 10 commands per user) sustains; a harsher mix
	// makes every swap wait for the quota instead of testing the swap.
	e := startE2E(t, nestsim.Options{StreamTTL: 30 * time.Second}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]
	e.sim.Faults().Apply(nestsim.FaultSpec{ExtendFail: true, DropEvery: 45 * time.Second})

	dir := t.TempDir()
	const seconds = 75
	args := append(append([]string{}, frigateArgs...),
		"-loglevel", "warning",
		// -t before -i bounds the input, so both outputs end together.
		"-t", strconv.Itoa(seconds), "-i", e.rtspURL("front-door"),
		"-map", "0", "-c", "copy", "-f", "segment", "-segment_time", "10", "-reset_timestamps", "1",
		filepath.Join(dir, "seg%03d.mp4"),
		"-map", "0:v", "-f", "null", "-")
	out, err := exec.Command(ffmpeg, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	sent := e.sim.FramesSent(nestsim.FrontDoorID)
	for _, line := range decodeErrors(string(out)) {
		t.Errorf("ffmpeg: %s", line)
	}

	segs, _ := filepath.Glob(filepath.Join(dir, "seg*.mp4"))
	sort.Strings(segs)
	if len(segs) < 6 {
		t.Fatalf("%d segments for %d s", len(segs), seconds)
	}
	received := 0
	for _, seg := range segs {
		probe, err := exec.Command(ffprobe, "-v", "error", "-count_packets", "-select_streams", "v:0",
			"-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", seg).CombinedOutput()
		n, perr := strconv.Atoi(strings.TrimSpace(string(probe)))
		if err != nil || perr != nil {
			t.Errorf("segment %s unreadable: %v %s", filepath.Base(seg), err, probe)
			continue
		}
		received += n
	}
	// Count the swaps so the test proves it crossed several.
	swaps := 0
	for len(e.events) > 0 {
		if ev := e.nextEvent(time.Second); ev.Domain == "camera" && ev.Event == "ready" && ev.Entity != nil && *ev.Entity == cam {
			swaps++
		}
	}
	t.Logf("segments %d, frames received %d, sent %d, readies %d", len(segs), received, sent, swaps)
	if swaps < 1+3 { // the first ready and at least three swaps
		t.Errorf("only %d ready events: the recording did not cross several swaps", swaps)
	}
	if calls := e.sim.CountCalls("GenerateRtspStream"); calls > swaps+1 {
		t.Errorf("%d Generate calls for %d sessions", calls, swaps)
	}
	if received < sent*9/10 {
		t.Errorf("received %d frames, under 90%% of the %d sent", received, sent)
	}
}
