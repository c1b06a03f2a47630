package source

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/nestmtx/nestmtx/internal/relay"
)

// Parent is what a running source reports to (the camera's supervisor),
// in the order a run goes through.
type Parent interface {
	// Connected gives the upstream's tracks; the parent answers with the
	// relay segment the media must go to, or an error to end the run.
	Connected(ctx context.Context, p relay.Params) (*relay.Segment, error)
	// Ready says the first picture arrived: frames flow from now on.
	Ready(p relay.Params)
}

// RunParams are what one run of a source needs.
type RunParams struct {
	// URL is the stream's address; it holds the session's token, a secret.
	URL string
	// StallTimeout ends a run that brings no first picture, or no media at
	// all, for this long (NestMTX #39: streams that looked alive for hours).
	StallTimeout time.Duration
	// Negotiate trades a WebRTC offer for Google's answer: it generates the
	// session (WebRTC runs only; the URL is empty then).
	Negotiate func(ctx context.Context, offerSDP string) (answerSDP string, err error)
	// Audio is what to do with the camera's audio: AudioOpus (also "")
	// passes it through as it comes, AudioAAC serves AAC (Google's RTSP
	// streams carry AAC already; WebRTC's Opus is transcoded), AudioNone
	// leaves it out.
	Audio string
}

// The camera audio settings.
const (
	AudioOpus = "opus"
	AudioAAC  = "aac"
	AudioNone = "none"
)

// Runner runs one upstream session: it connects, feeds the segment its
// parent gives it, says when frames flow, and returns when the upstream
// fails (with the reason) or ctx ends (nil). The supervisor keeps
// everything about Google's session; a runner only moves media.
type Runner interface {
	Run(ctx context.Context, p RunParams, parent Parent) error
}

// RTSPS runs Google's RTSPS streams.
type RTSPS struct {
	// TLS verifies Google's (or the simulator's) certificate.
	TLS *tls.Config
	Log *slog.Logger
}

// Run implements Runner.
func (r RTSPS) Run(ctx context.Context, p RunParams, parent Parent) error {
	up, err := Dial(ctx, p.URL, Options{TLS: r.TLS, Log: r.Log, NoAudio: p.Audio == AudioNone})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("connecting to the stream: %w", err)
	}
	defer up.Close()
	seg, err := parent.Connected(ctx, up.Params())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := up.Play(seg); err != nil {
		return err
	}
	// Ready means frames flow: wait for the segment's first IDR.
	first := time.NewTimer(p.StallTimeout)
	defer first.Stop()
	select {
	case <-seg.FirstFrame():
	case <-first.C:
		return fmt.Errorf("no picture from Google within %s of connecting", p.StallTimeout)
	case <-ctx.Done():
		return nil
	}
	parent.Ready(up.Params())

	ended := make(chan error, 1)
	go func() { ended <- up.Wait() }()
	watch := time.NewTicker(max(p.StallTimeout/4, 100*time.Millisecond))
	defer watch.Stop()
	for {
		select {
		case err := <-ended:
			return fmt.Errorf("the upstream ended: %w", err)
		case <-watch.C:
			if quiet := time.Since(up.LastPacket()); quiet > p.StallTimeout {
				return fmt.Errorf("no media from Google for %s", quiet.Round(time.Second))
			}
		case <-ctx.Done():
			// Superseded (a regeneration, unDemand): hang up now, not when
			// Google ends the old session.
			up.Close()
			<-ended
			return nil
		}
	}
}
