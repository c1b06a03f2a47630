// Package source pulls a camera's upstream RTSP(S) stream and hands its
// access units to a sink. It knows nothing of Google or of readers.
package source

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/relay"
)

// Sink receives access units with their upstream RTP timestamps, from the
// upstream's reading goroutine.
type Sink interface {
	WriteVideo(ts uint32, au [][]byte) error
	WriteAudio(ts uint32, au []byte) error
	// Received counts a packet received, forwarded or not.
	Received(payloadBytes int)
}

// Upstream is one connected upstream session.
type Upstream struct {
	client *gortsplib.Client
	desc   *description.Session
	params relay.Params
	log    *slog.Logger

	video      *description.Media
	videoFmt   *format.H264
	audio      *description.Media
	audioFmt   *format.MPEG4Audio
	lastPacket atomic.Int64 // unix nanoseconds

	closeOnce sync.Once
}

// Options for Dial.
type Options struct {
	// TLS is used for rtsps URLs (Google's streams); nil uses the system CAs.
	TLS *tls.Config
	// ReadTimeout ends the session when the upstream stops sending.
	ReadTimeout time.Duration
	// NoAudio leaves the audio track out (the camera's audio setting is
	// none).
	NoAudio bool
	Log     *slog.Logger
}

// Dial connects, describes and sets up the upstream's H.264 and AAC tracks.
// It returns before PLAY so that the caller can prepare the output first.
func Dial(ctx context.Context, rawURL string, o Options) (*Upstream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u, err := base.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("upstream URL: %w", redactErr(err))
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 10 * time.Second
	}
	tcp := gortsplib.TransportTCP
	up := &Upstream{log: o.Log}
	var tlsConf *tls.Config
	if o.TLS != nil {
		// gortsplib writes ServerName into the config it is given.
		tlsConf = o.TLS.Clone()
	}
	up.client = &gortsplib.Client{
		Scheme:      u.Scheme,
		Host:        u.Host,
		TLSConfig:   tlsConf,
		Transport:   &tcp, // Google serves RTSPS interleaved over TCP
		ReadTimeout: o.ReadTimeout,
		UserAgent:   "nestmtx",
		// Without these, gortsplib logs every event through the standard log.
		OnPacketsLost: func(lost uint64) { o.Log.Debug("upstream packets lost", "count", lost) },
		OnDecodeError: func(err error) { o.Log.Debug("upstream decode error", "error", err) },
	}
	if err := up.client.Start2(); err != nil {
		return nil, err
	}
	// Watch ctx only once the client has started: Close before Start2 has
	// finished would race with it.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			up.Close()
		case <-done:
		}
	}()
	desc, _, err := up.client.Describe(u)
	if err != nil {
		up.Close()
		return nil, fmt.Errorf("upstream DESCRIBE: %w", redactErr(err))
	}
	up.desc = desc
	up.video = desc.FindFormat(&up.videoFmt)
	if up.video == nil {
		up.Close()
		return nil, errors.New("upstream has no H.264 track")
	}
	sps, pps := up.videoFmt.SafeParams()
	up.params = relay.Params{SPS: sps, PPS: pps}
	medias := []*description.Media{up.video}
	if up.audio = desc.FindFormat(&up.audioFmt); up.audio != nil && up.audioFmt.Config != nil && !o.NoAudio {
		up.params.Audio = up.audioFmt.Config
		medias = append(medias, up.audio)
	} else {
		up.audio = nil
	}
	// Over RTSPS the TCP connection is already TLS. Google's SDP offers
	// plain RTP/AVP; a server that offers RTP/SAVP (gortsplib's, such as
	// our simulator) would have every packet encrypted a second time with
	// SRTP, which costs CPU and protects nothing more.
	for _, m := range medias {
		m.Secure = false
	}
	if err := up.client.SetupAll(desc.BaseURL, medias); err != nil {
		up.Close()
		return nil, fmt.Errorf("upstream SETUP: %w", redactErr(err))
	}
	if ctx.Err() != nil {
		up.Close()
		return nil, ctx.Err()
	}
	return up, nil
}

// Params are the upstream's codec parameters (from its SDP).
func (up *Upstream) Params() relay.Params { return up.params }

// Play starts the media flowing into sink.
func (up *Upstream) Play(sink Sink) error {
	vdec, err := up.videoFmt.CreateDecoder()
	if err != nil {
		return err
	}
	up.lastPacket.Store(time.Now().UnixNano())
	up.client.OnPacketRTP(up.video, up.videoFmt, func(pkt *rtp.Packet) {
		up.lastPacket.Store(time.Now().UnixNano())
		sink.Received(len(pkt.Payload))
		au, err := vdec.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtph264.ErrMorePacketsNeeded) && !errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) {
				up.log.Debug("upstream H.264 depacketising", "error", err)
			}
			return
		}
		if err := sink.WriteVideo(pkt.Timestamp, au); err != nil {
			up.log.Debug("relaying video", "error", err)
		}
	})
	if up.audio != nil {
		adec, err := up.audioFmt.CreateDecoder()
		if err != nil {
			return err
		}
		up.client.OnPacketRTP(up.audio, up.audioFmt, func(pkt *rtp.Packet) {
			up.lastPacket.Store(time.Now().UnixNano())
			sink.Received(len(pkt.Payload))
			aus, err := adec.Decode(pkt)
			if err != nil {
				if !errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) {
					up.log.Debug("upstream AAC depacketising", "error", err)
				}
				return
			}
			for i, au := range aus {
				if err := sink.WriteAudio(pkt.Timestamp+uint32(i*mpeg4audio.SamplesPerAccessUnit), au); err != nil {
					up.log.Debug("relaying audio", "error", err)
				}
			}
		})
	}
	if _, err := up.client.Play(nil); err != nil {
		return fmt.Errorf("upstream PLAY: %w", redactErr(err))
	}
	return nil
}

// LastPacket is when the upstream last sent media.
func (up *Upstream) LastPacket() time.Time { return time.Unix(0, up.lastPacket.Load()) }

// Wait blocks until the upstream session ends, and returns why.
func (up *Upstream) Wait() error { return redactErr(up.client.Wait()) }

// Close ends the upstream session.
func (up *Upstream) Close() {
	up.closeOnce.Do(up.client.Close)
}

// redact removes stream tokens from errors that quote the URL: Google's
// stream URLs carry the session's credential in their auth parameter.
func redactErr(err error) error {
	if err == nil {
		return nil
	}
	return redactedError{err}
}

type redactedError struct{ err error }

func (e redactedError) Error() string { return RedactURLs(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }
