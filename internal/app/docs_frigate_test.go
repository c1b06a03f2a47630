package app

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// Frigate's presets as its ffmpeg_presets.py expands them (0.14): the
// RTSP input preset and the record output presets.
var frigatePresets = map[string][]string{
	"preset-rtsp-generic": {"-avoid_negative_ts", "make_zero", "-fflags", "+genpts+discardcorrupt",
		"-rtsp_transport", "tcp", "-timeout", "5000000", "-use_wallclock_as_timestamps", "1"},
	"preset-record-generic": {"-f", "segment", "-segment_time", "10", "-segment_format", "mp4",
		"-reset_timestamps", "1", "-strftime", "1", "-c", "copy", "-an"},
	"preset-record-generic-audio-aac": {"-f", "segment", "-segment_time", "10", "-segment_format", "mp4",
		"-reset_timestamps", "1", "-strftime", "1", "-c:v", "copy", "-c:a", "aac"},
	"preset-record-generic-audio-copy": {"-f", "segment", "-segment_time", "10", "-segment_format", "mp4",
		"-reset_timestamps", "1", "-strftime", "1", "-c", "copy"},
}

// TestFrigateDocWorks: the camera block in docs/frigate.md parses, names a
// nestmtx URL with a login, and the ffmpeg commands Frigate would build
// from it (record with the doc's preset, detect as raw frames) read a
// camera served by nestmtx, with an account like the one the doc creates.
func TestFrigateDocWorks(t *testing.T) {
	t.Parallel()
	ffmpeg := testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "frigate.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(blocks) == 0 {
		t.Fatal("docs/frigate.md has no yaml block")
	}
	var cfg struct {
		Cameras map[string]struct {
			FFmpeg struct {
				InputArgs  string `yaml:"input_args"`
				OutputArgs struct {
					Record string `yaml:"record"`
				} `yaml:"output_args"`
				Inputs []struct {
					Path  string   `yaml:"path"`
					Roles []string `yaml:"roles"`
				} `yaml:"inputs"`
			} `yaml:"ffmpeg"`
		} `yaml:"cameras"`
	}
	if err := yaml.Unmarshal(blocks[0][1], &cfg); err != nil {
		t.Fatalf("the doc's Frigate config: %v", err)
	}
	cam, ok := cfg.Cameras["front_door"]
	if !ok || len(cam.FFmpeg.Inputs) != 1 {
		t.Fatalf("the doc's camera block: %+v", cfg)
	}
	in := cam.FFmpeg.Inputs[0]
	if strings.Join(in.Roles, ",") != "record,detect" {
		t.Fatalf("roles %v", in.Roles)
	}
	inputArgs, recordArgs := frigatePresets[cam.FFmpeg.InputArgs], frigatePresets[cam.FFmpeg.OutputArgs.Record]
	if inputArgs == nil || recordArgs == nil {
		t.Fatalf("unknown presets %q, %q", cam.FFmpeg.InputArgs, cam.FFmpeg.OutputArgs.Record)
	}
	docURL, err := url.Parse(strings.ReplaceAll(in.Path, "{FRIGATE_RTSP_PASSWORD}", "frigate-pass"))
	if err != nil || docURL.User.Username() != "frigate" || docURL.Port() != "8554" {
		t.Fatalf("the doc's input path %q: %v", in.Path, err)
	}

	// The same URL against a daemon serving the camera at the doc's path,
	// with the account the doc creates.
	e := startE2E(t, nestsim.Options{}, nil)
	e.call("create", "users", "payload", map[string]any{"username": "frigate", "password": "frigate-pass"})
	e.authorize()
	e.sync(map[string]string{"Front Door": strings.TrimPrefix(docURL.Path, "/")})
	docURL.Host = e.app.RTSPAddr()

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// One ffmpeg with both of Frigate's outputs, as Frigate runs one per
	// input with its roles.
	args := append(append([]string{"-hide_banner", "-loglevel", "warning"}, inputArgs...), "-i", docURL.String(), "-t", "6")
	args = append(append(args, recordArgs...), filepath.Join(dir, "%Y%m%d%H%M%S.mp4"))
	args = append(args, "-t", "6", "-r", "5", "-s", "640x360", "-f", "rawvideo", "-pix_fmt", "yuv420p", filepath.Join(dir, "detect.raw"))
	out, err := exec.CommandContext(ctx, ffmpeg, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg as Frigate runs it: %v\n%s", err, out)
	}
	for _, line := range decodeErrors(string(out)) {
		t.Errorf("ffmpeg: %s", line)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.mp4"))
	raw, _ := os.Stat(filepath.Join(dir, "detect.raw"))
	if len(segs) == 0 || raw == nil || raw.Size() < 640*360*3/2*10 {
		t.Fatalf("record segments %v, detect frames %v\n%s", segs, raw, out)
	}
}
