package transcode

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// AACConfig is the AAC the transcoder produces, for the RTSP SDP: AAC-LC,
// 48 kHz (the Opus clock, so timestamps need no rescaling), mono (camera
// microphones are mono; half the bits of stereo).
func AACConfig() *mpeg4audio.AudioSpecificConfig {
	return &mpeg4audio.AudioSpecificConfig{
		Type:         mpeg4audio.ObjectTypeAACLC,
		SampleRate:   48000,
		ChannelCount: 1,
	}
}

// FindFFmpeg resolves the ffmpeg binary: a bare name is looked up on PATH,
// anything with a slash is taken as a path that must be an executable file.
// It is the gate for `audio: aac`: call it at configuration time, so that a
// missing ffmpeg is a clear start-up error rather than a child that fails
// to start again and again.
func FindFFmpeg(nameOrPath string) (string, error) {
	if nameOrPath == "" {
		nameOrPath = "ffmpeg"
	}
	p, err := exec.LookPath(nameOrPath)
	if err == nil {
		return p, nil
	}
	if !strings.ContainsRune(nameOrPath, '/') {
		return "", fmt.Errorf("audio: aac needs ffmpeg, but %q was not found on PATH", nameOrPath)
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err
	}
	return "", fmt.Errorf("audio: aac needs ffmpeg, but %q is not an executable file: %w", nameOrPath, err)
}

// ffmpegArgs makes the child read Ogg Opus on stdin and write ADTS AAC on
// stdout as soon as each frame is encoded:
//   - -nostdin: stdin is the audio, never keyboard commands;
//   - -f ogg, -probesize 32: no format probing; the Ogg headers say all;
//   - -vn, -ac 1, -ar 48000, -b:a 64k: mono AAC-LC on the Opus clock;
//   - -f adts -flush_packets 1: each frame goes to the pipe at once, not
//     when an output buffer fills.
//
// Measured on ffmpeg 5.1 (TestLatency, packets written every 20 ms): a unit
// comes out a median 21 ms (p95 41 ms) after the packet that completes its
// audio. That is the AAC encoder's lookahead, which needs the next 1024
// samples; ffmpeg itself adds about 1 ms beyond it (p95 2-4 ms). The first unit of a new
// child comes 50-120 ms after its first packet (process start, and the
// three packets the encoder needs).
//
// Not used, on purpose: -fflags nobuffer throws away the packet that
// stream-info probing read, so every child lost its first 20 ms, all its
// audio came out 960 samples earlier than its timestamps said, and the
// median latency was 20 ms worse (TestTimestampsMatchAudio catches it).
// -analyzeduration 0 means "the default" (5 s) to libavformat: a no-op.
func ffmpegArgs() []string {
	return []string{
		"-hide_banner", "-nostdin", "-loglevel", "error",
		"-probesize", "32",
		"-f", "ogg", "-i", "pipe:0",
		"-vn", "-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "1",
		"-f", "adts", "-flush_packets", "1", "pipe:1",
	}
}
