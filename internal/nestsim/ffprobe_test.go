package nestsim

import (
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestFFprobeReadsStream checks that a real third-party RTSPS client can
// read a generated URL. ffmpeg 5.1's RTSP demuxer does not verify the
// server certificate at all (-tls_verify defaults to 0, and measured: even
// "-tls_verify 1 -ca_file <wrong CA>" on the command line still connects,
// as the option does not reach the RTSP demuxer's TLS layer), so the
// self-signed certificate needs nothing; -tls_verify 0 states the intent.
func TestFFprobeReadsStream(t *testing.T) {
	t.Parallel()
	ffprobe := testkit.RequireTool(t, "ffprobe", "ffmpeg")
	s := startSim(t, Options{})
	g := newAPI(t, s).generate(FrontDoorID).Results

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ffprobe, "-v", "error", "-rtsp_transport", "tcp", "-tls_verify", "0",
		"-show_streams", "-of", "json", g.StreamURLs.RTSPURL)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("ffprobe: %v\n%s", err, stderr)
	}
	var probe struct {
		Streams []struct {
			CodecName  string `json:"codec_name"`
			CodecType  string `json:"codec_type"`
			Profile    string `json:"profile"`
			Width      int    `json:"width"`
			Height     int    `json:"height"`
			SampleRate string `json:"sample_rate"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &probe); err != nil {
		t.Fatalf("ffprobe output %s: %v", out, err)
	}
	var video, audio bool
	for _, st := range probe.Streams {
		switch {
		case st.CodecType == "video" && st.CodecName == "h264" && st.Width == 640 && st.Height == 360 && st.Profile == "High":
			video = true
		case st.CodecType == "audio" && st.CodecName == "aac" && st.SampleRate == "48000":
			audio = true
		}
	}
	if !video || !audio {
		t.Fatalf("ffprobe saw %s; want h264 High 640x360 and aac 48000 Hz", out)
	}
}
