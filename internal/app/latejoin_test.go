package app

import (
	"context"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// timestampWarnings picks ffmpeg's timestamp complaints out of its output,
// split into those about video (stream 0) and the rest.
func timestampWarnings(out string) (video, other []string) {
	for _, line := range strings.Split(out, "\n") {
		l := strings.ToLower(line)
		if !strings.Contains(l, "non-monoton") && !strings.Contains(l, "dts discontinuity") &&
			!strings.Contains(l, "non monotonically") && !strings.Contains(l, "invalid dts") {
			continue
		}
		if strings.Contains(line, "stream 0:0") || strings.Contains(line, "st:0 ") {
			video = append(video, line)
		} else {
			other = append(other, line)
		}
	}
	return video, other
}

// TestLateJoinerRecordsCleanly: Frigate reads each camera twice (record and
// detect), so its recorder often joins a camera that already streams. One
// reader keeps the camera live; 4 s later ffmpeg with Frigate's exact
// input arguments (timestamps by arrival) joins and records 20 s of 10 s
// segments. Its timestamps must stay monotonic and plausible: at most 3
// warnings, none on video, and every segment decodable. The joiner's first
// picture is the relay's cached IDR, not the camera's next one.
//
// Not parallel: ffmpeg stamps by arrival, so a machine starved by the
// package's other tests would make any relay's frames arrive in bursts.
func TestLateJoinerRecordsCleanly(t *testing.T) {
	ffmpeg := testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	ffprobe := testkit.RequireTool(t, "ffprobe", "ffmpeg")
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	keeper := readPath(t, e.rtspURL("front-door"))
	n := keeper.flowing(t, 0)
	for start := time.Now(); time.Since(start) < 4*time.Second; {
		n = keeper.flowing(t, n) // the camera streams on for 4 s
	}

	// A picture at once: the joiner's first IDR is the cached one, older
	// than what the keeper has already seen, not the camera's next.
	live := keeper.lastTS.Load()
	wait, idrTS := firstIDR(t, e.rtspURL("front-door"))
	t.Logf("late joiner: first IDR %s after PLAY, %.2f s behind live", wait.Round(time.Millisecond), float64(int32(live-idrTS))/90000)
	if int32(idrTS-live) > 0 {
		t.Errorf("the joiner's first IDR (ts %d) is newer than live (ts %d): it waited for the camera's next", idrTS, live)
	}

	dir := t.TempDir()
	const seconds = 20
	args := append(append([]string{}, frigateInputArgs...), "-loglevel", "warning",
		"-t", strconv.Itoa(seconds), "-i", e.rtspURL("front-door"),
		"-map", "0", "-c", "copy", "-f", "segment", "-segment_time", "10", "-reset_timestamps", "1",
		filepath.Join(dir, "seg%03d.mp4"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffmpeg, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	video, other := timestampWarnings(string(out))
	t.Logf("timestamp warnings: %d on video, %d others", len(video), len(other))
	for _, w := range append(video, other...) {
		t.Logf("  %s", w)
	}
	if len(video) > 0 || len(video)+len(other) > 3 {
		t.Errorf("%d video and %d other timestamp warnings; want none on video and at most 3 in all", len(video), len(other))
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg*.mp4"))
	sort.Strings(segs)
	if len(segs) < 2 {
		t.Fatalf("%d segments for %d s", len(segs), seconds)
	}
	for _, seg := range segs {
		// Every video packet decodes to a frame, and the decoder says
		// nothing.
		probe, err := exec.Command(ffprobe, "-v", "error", "-count_frames", "-count_packets", "-select_streams", "v:0",
			"-show_entries", "stream=nb_read_frames,nb_read_packets", "-of", "csv=p=0", seg).CombinedOutput()
		f := strings.Split(strings.TrimSpace(string(probe)), ",")
		if err != nil || len(f) != 2 || f[0] != f[1] || f[0] == "0" {
			t.Errorf("segment %s does not decode cleanly (frames,packets = %s): %v", filepath.Base(seg), probe, err)
		}
		t.Logf("%s: %s video frames", filepath.Base(seg), f[0])
	}
}

// firstIDR plays url with gortsplib and returns how long after PLAY the
// first complete IDR access unit arrived, and its RTP timestamp.
func firstIDR(t *testing.T, url string) (time.Duration, uint32) {
	t.Helper()
	c := &gortsplib.Client{}
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	c.Transport = &tcp
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	var h *format.H264
	medi := desc.FindFormat(&h)
	if medi == nil {
		t.Fatal("no H.264")
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	dec, err := h.CreateDecoder()
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		at time.Time
		ts uint32
	}
	got := make(chan seen, 1)
	c.OnPacketRTP(medi, h, func(p *rtp.Packet) {
		au, err := dec.Decode(p)
		if err == nil && h264.IsRandomAccess(au) {
			select {
			case got <- seen{time.Now(), p.Timestamp}:
			default:
			}
		}
	})
	start := time.Now()
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		return s.at.Sub(start), s.ts
	case <-time.After(10 * time.Second):
		t.Fatal("no IDR within 10 s of PLAY")
		return 0, 0
	}
}
