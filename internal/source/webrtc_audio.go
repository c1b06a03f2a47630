package source

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/transcode"
)

// audioPump takes a WebRTC camera's Opus track where the camera's audio
// setting says: into the relay as it is (AudioOpus), through the AAC
// transcoder (AudioAAC), or nowhere (AudioNone: the packets are read and
// dropped so that they do not pile up).
type audioPump struct {
	mode string
	aac  *transcode.AAC // AudioAAC only
	// seg is the relay segment once the video has connected; audio before
	// it has nowhere to go (the relay would drop it before the first IDR
	// anyway).
	seg atomic.Pointer[relay.Segment]
	log *slog.Logger
}

// aacEncoderDelay is the priming ffmpeg's AAC encoder puts before the
// first sample (one frame of 1024 samples), measured by the transcoder's
// TestTimestampsMatchAudio.
const aacEncoderDelay = 1024

// audioFor prepares the audio side of a run. The AAC transcoder starts
// with the run, before the first packet, so that ffmpeg is up by the time
// the picture is.
func (w WebRTC) audioFor(ctx context.Context, mode string, log *slog.Logger) (*audioPump, error) {
	a := &audioPump{mode: mode, log: log}
	if mode == "" {
		a.mode = AudioOpus
	}
	if a.mode != AudioAAC {
		return a, nil
	}
	aac, err := transcode.StartAAC(ctx, transcode.Options{FFmpeg: w.FFmpeg, Log: log,
		Out: func(ts uint32, au []byte) {
			if seg := a.seg.Load(); seg != nil {
				// AAC's encoder delay: each unit's sound was heard one frame
				// before its count says.
				seg.WriteAudio(ts-aacEncoderDelay, au) //nolint:errcheck // a superseded segment drops it
			}
		}})
	if err != nil {
		// The camera's state already said whether ffmpeg was found; one
		// that vanished since costs the audio, not the picture.
		log.Error("the camera's audio cannot be transcoded to AAC; serving video only", "error", err)
		a.mode = AudioNone
		return a, nil
	}
	a.aac = aac
	return a, nil
}

// describe adds the output's audio track to p.
func (a *audioPump) describe(p *relay.Params) {
	switch a.mode {
	case AudioOpus:
		p.OpusChannels = 2 // Google offers opus/48000/2; a mono camera's packets say so themselves
	case AudioAAC:
		p.Audio = transcode.AACConfig()
	}
}

// run reads the audio track until it ends (the run is over).
func (a *audioPump) run(tr *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if a.mode == AudioNone || pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		if seg := a.seg.Load(); seg != nil {
			seg.Received(len(pkt.Payload))
		}
		switch a.mode {
		case AudioAAC:
			a.aac.WriteOpus(&pkt)
		case AudioOpus:
			if seg := a.seg.Load(); seg != nil {
				seg.WriteAudio(pkt.Timestamp, pkt.Payload) //nolint:errcheck // a superseded segment drops it
			}
		}
	}
}

func (a *audioPump) close() {
	if a.aac != nil {
		a.aac.Close()
	}
}
