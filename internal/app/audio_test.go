package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/supervisor"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// probeStreams lists the codecs ffprobe finds at url, as Home Assistant's
// stream and Frigate's ffprobe see them.
func probeStreams(t *testing.T, url string) []string {
	t.Helper()
	bin := testkit.RequireTool(t, "ffprobe", "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-v", "error", "-rtsp_transport", "tcp",
		"-show_entries", "stream=codec_name,sample_rate", "-of", "json", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s%s", url, err, out, stderr.String())
	}
	var probe struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
		}
	}
	if err := json.Unmarshal(out, &probe); err != nil {
		t.Fatalf("ffprobe output %s: %v", out, err)
	}
	var codecs []string
	for _, s := range probe.Streams {
		codecs = append(codecs, s.CodecName)
	}
	return codecs
}

// decodeAudio decodes d of the audio at url with Frigate's input arguments
// and returns ffmpeg's output, the audio frames decoded (from -stats'
// last "size=" line we cannot count frames, so ffmpeg reports them with
// -progress) and its error.
func decodeAudio(t *testing.T, url string, d time.Duration) (string, int, error) {
	t.Helper()
	bin := testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+d)
	defer cancel()
	args := append(append([]string{}, frigateInputArgs...), "-i", url, "-t", fmt.Sprint(d.Seconds()),
		"-map", "0:a", "-f", "framecrc", "-")
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	frames := 0
	for _, line := range strings.Split(string(out), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			frames++
		}
	}
	return stderr.String(), frames, err
}

// TestWebRTCAudioOpusPassthrough: by default a WebRTC camera's Opus is
// served as it comes, as an RTSP Opus track that ffprobe names and ffmpeg
// decodes (50 frames a second) without an error; the state says opus.
func TestWebRTCAudioOpusPassthrough(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	id := e.cams["Living Room"]
	if st := waitState(t, e.app, id, "audio opus", func(s supervisor.State) bool { return s.Audio != "" }); st.Audio != "opus" || st.AudioError != nil {
		t.Fatalf("state audio %q, error %v; want opus", st.Audio, st.AudioError)
	}
	if codecs := probeStreams(t, e.rtspURL("living-room")); !slices.Equal(sorted(codecs), []string{"h264", "opus"}) {
		t.Fatalf("ffprobe found %v, want h264 and opus", codecs)
	}
	const d = 4 * time.Second
	out, frames, err := decodeAudio(t, e.rtspURL("living-room"), d)
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	if errs := audioErrors(out); len(errs) > 0 {
		t.Fatalf("ffmpeg decoding errors:\n%s", strings.Join(errs, "\n"))
	}
	t.Logf("%d Opus frames decoded in %s", frames, d)
	if want := int(d.Seconds() * 50 * 0.8); frames < want {
		t.Fatalf("%d Opus frames decoded in %s, want at least %d\n%s", frames, d, want, out)
	}
}

// TestWebRTCAudioAAC: with audio set to aac, the camera's Opus is made AAC
// by a supervised ffmpeg child: ffprobe sees h264 and aac, ffmpeg decodes
// the AAC without an error; killing the child costs a moment of audio,
// not the stream; and when the camera stops, no child is left.
func TestWebRTCAudioAAC(t *testing.T) {
	t.Parallel()
	testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	id := e.cams["Living Room"]
	e.call("update", "cameras", "entity", fmt.Sprint(id), "payload", map[string]any{"audio": "aac"})
	if st := waitState(t, e.app, id, "audio aac", func(s supervisor.State) bool { return s.Audio == "aac" }); st.AudioError != nil {
		t.Fatalf("audio error %q with ffmpeg on PATH", *st.AudioError)
	}
	if codecs := probeStreams(t, e.rtspURL("living-room")); !slices.Equal(sorted(codecs), []string{"aac", "h264"}) {
		t.Fatalf("ffprobe found %v, want h264 and aac", codecs)
	}

	// A reader that stays while the transcoder is killed under it.
	done := make(chan struct{})
	var out string
	var frames int
	var readErr error
	const d = 8 * time.Second
	go func() {
		defer close(done)
		out, frames, readErr = decodeAudio(t, e.rtspURL("living-room"), d)
	}()
	var pid int
	testkit.Eventually(t, 10*time.Second, "the AAC transcoder", func() bool {
		pids := transcoders(t)
		if len(pids) == 1 {
			pid = pids[0]
		}
		return len(pids) == 1
	})
	// Let it run a while, then kill it: it must come back by itself.
	testkit.Eventually(t, 10*time.Second, "AAC on the stream", func() bool {
		st, _ := cameraState(e.app, id)
		return st.Ready && st.Readers == 1
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "a new transcoder", func() bool {
		pids := transcoders(t)
		return len(pids) == 1 && pids[0] != pid
	})
	<-done
	if readErr != nil {
		t.Fatalf("ffmpeg: %v\n%s", readErr, out)
	}
	if errs := audioErrors(out); len(errs) > 0 {
		t.Fatalf("ffmpeg decoding errors:\n%s", strings.Join(errs, "\n"))
	}
	t.Logf("%d AAC frames decoded in %s, the transcoder killed once", frames, d)
	// 46.875 AAC frames a second at 48 kHz; the kill costs a little.
	if want := int(d.Seconds() * 46.875 * 0.7); frames < want {
		t.Fatalf("%d AAC frames decoded in %s, want at least %d\n%s", frames, d, want, out)
	}
	waitIdle(t, e, id)
	testkit.Eventually(t, 10*time.Second, "no transcoder left once the camera stopped", func() bool {
		return len(transcoders(t)) == 0
	})
}

// TestWebRTCAudioAACWithoutFFmpeg: with audio set to aac and no ffmpeg to
// transcode with, the state says why there is no audio, and the video is
// served alone.
func TestWebRTCAudioAACWithoutFFmpeg(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) {
		c.FFmpegPath = filepath.Join(t.TempDir(), "no-ffmpeg-here")
		c.CameraAudio = config.AudioAAC
	})
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	id := e.cams["Living Room"]
	st := waitState(t, e.app, id, "an audio error", func(s supervisor.State) bool { return s.AudioError != nil })
	if st.Audio != "none" || !strings.Contains(*st.AudioError, "no-ffmpeg-here") || !strings.Contains(*st.AudioError, "video only") {
		t.Fatalf("state audio %q, error %q", st.Audio, *st.AudioError)
	}
	if codecs := probeStreams(t, e.rtspURL("living-room")); !slices.Equal(codecs, []string{"h264"}) {
		t.Fatalf("ffprobe found %v, want h264 alone", codecs)
	}
	// An RTSP camera needs no ffmpeg for AAC: Google sends it.
	e.sync(map[string]string{"Front Door": "front-door"})
	fd := waitState(t, e.app, e.cams["Front Door"], "audio", func(s supervisor.State) bool { return s.Audio != "" })
	if fd.Audio != "aac" || fd.AudioError != nil {
		t.Fatalf("RTSP camera: audio %q, error %v", fd.Audio, fd.AudioError)
	}
}

// TestAudioNone: audio none serves video alone, for an RTSP camera too.
func TestAudioNone(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.CameraAudio = config.AudioNone })
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room", "Front Door": "front-door"})
	for _, path := range []string{"living-room", "front-door"} {
		if codecs := probeStreams(t, e.rtspURL(path)); !slices.Equal(codecs, []string{"h264"}) {
			t.Fatalf("%s: ffprobe found %v, want h264 alone", path, codecs)
		}
	}
	if st, _ := cameraState(e.app, e.cams["Front Door"]); st.Audio != "none" {
		t.Fatalf("state audio %q", st.Audio)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// audioErrors picks ffmpeg's complaints about the audio out of its output.
func audioErrors(out string) []string {
	var errs []string
	for _, line := range strings.Split(out, "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "error") || strings.Contains(l, "invalid") || strings.Contains(l, "corrupt") ||
			strings.Contains(l, "non-monoton") {
			errs = append(errs, line)
		}
	}
	return errs
}

// transcoders lists this process's ffmpeg children that transcode audio
// (not the ffmpeg readers the tests run).
func transcoders(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var pids []int
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 || f[1] != strconv.Itoa(self) || f[0] == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if strings.Contains(string(cmdline), "pipe:0") && strings.Contains(string(cmdline), "adts") {
			pids = append(pids, pid)
		}
	}
	return pids
}
