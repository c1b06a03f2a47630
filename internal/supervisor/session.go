package supervisor

import (
	"context"
	"time"

	"github.com/nestmtx/nestmtx/internal/nest"
)

// session is one live Google stream session of either kind: an RTSP one
// (a URL the source dials) or a WebRTC one (an answer the source applied).
// Exactly one of the two is set.
type session struct {
	rtsp *nest.RTSPStream
	rtc  *nest.WebRTCStream
}

func rtspSession(s nest.RTSPStream) session  { return session{rtsp: &s} }
func rtcSession(s nest.WebRTCStream) session { return session{rtc: &s} }

// localExpiry is when the session ends, on this host's monotonic clock.
func (s session) localExpiry() time.Time {
	if s.rtc != nil {
		return s.rtc.LocalExpiry()
	}
	return s.rtsp.LocalExpiry()
}

// expiresAt is Google's expiresAt, on Google's clock.
func (s session) expiresAt() time.Time {
	if s.rtc != nil {
		return s.rtc.ExpiresAt
	}
	return s.rtsp.ExpiresAt
}

func (s session) clockSkew() time.Duration {
	if s.rtc != nil {
		return s.rtc.ClockSkew
	}
	return s.rtsp.ClockSkew
}

func (s session) extend(ctx context.Context, g SessionAPI) (session, error) {
	if s.rtc != nil {
		next, err := g.ExtendWebRtcStream(ctx, *s.rtc)
		return rtcSession(next), err
	}
	next, err := g.ExtendRtspStream(ctx, *s.rtsp)
	return rtspSession(next), err
}

func (s session) stop(ctx context.Context, g SessionAPI) error {
	if s.rtc != nil {
		return g.StopWebRtcStream(ctx, *s.rtc)
	}
	return g.StopRtspStream(ctx, *s.rtsp)
}
