package nest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// SDM WebRTC command names.
const (
	CmdGenerateWebRtcStream = "sdm.devices.commands.CameraLiveStream.GenerateWebRtcStream"
	CmdExtendWebRtcStream   = "sdm.devices.commands.CameraLiveStream.ExtendWebRtcStream"
	CmdStopWebRtcStream     = "sdm.devices.commands.CameraLiveStream.StopWebRtcStream"
)

// ErrInvalidOffer is wrapped when GenerateWebRtcStream is handed an offer
// that Google is known to reject: an empty one, or one without a host ICE
// candidate. The latter gets a 500 INTERNAL from Google, which would look
// transient and be retried against the quota for nothing, so it is refused
// here, before a command slot is spent. Retrying the same offer cannot help.
var ErrInvalidOffer = errors.New("nest: invalid WebRTC offer")

// WebRTCStream is one live WebRTC session. AnswerSDP holds Google's ICE
// password and DTLS fingerprint, so String and LogValue never print it;
// they print the device, a prefix of the media session id and the expiry.
// The media session id alone does not let anyone watch the camera, but it
// does let its holder extend or stop the session.
type WebRTCStream struct {
	DeviceName string
	// AnswerSDP is Google's answer to the offer. Extensions return no new
	// answer: it stays the one GenerateWebRtcStream returned.
	AnswerSDP string
	// MediaSessionID names the session to Extend and Stop; the newest one
	// Google returned.
	MediaSessionID string
	// ExpiresAt is Google's expiresAt, on Google's clock.
	ExpiresAt time.Time
	// Lifetime is how long the session had left when Google answered,
	// measured on Google's clock (expiresAt minus the answer's Date).
	Lifetime time.Duration
	// ReceivedAt is when the answer arrived, on this host's clock with its
	// monotonic reading, so LocalExpiry is immune to wall-clock steps.
	ReceivedAt time.Time
	// ClockSkew is this host's clock minus Google's, to whole seconds; zero
	// when Google sent no Date header.
	ClockSkew time.Duration
}

// LocalExpiry is when the session expires, on this host's clock: Lifetime
// after the answer arrived. Timers and expiry checks must use it rather
// than ExpiresAt, which a skewed local clock misreads.
func (s WebRTCStream) LocalExpiry() time.Time {
	if s.ReceivedAt.IsZero() {
		return s.ExpiresAt
	}
	return s.ReceivedAt.Add(s.Lifetime)
}

func (s *WebRTCStream) setTiming(t streamTiming) {
	s.ExpiresAt, s.Lifetime, s.ReceivedAt, s.ClockSkew = t.ExpiresAt, t.Lifetime, t.ReceivedAt, t.ClockSkew
}

func (s WebRTCStream) String() string {
	return "nest.WebRTCStream{" + s.DeviceName + " session " + sessionPrefix(s.MediaSessionID) +
		" expires " + s.ExpiresAt.Format(time.RFC3339) + "}"
}

// GoString keeps %#v from printing the answer SDP.
func (s WebRTCStream) GoString() string { return s.String() }

// LogValue keeps slog from reflecting the SDP field.
func (s WebRTCStream) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("device", s.DeviceName),
		slog.String("session", sessionPrefix(s.MediaSessionID)),
		slog.Time("expiresAt", s.ExpiresAt),
	)
}

// sessionPrefixLen is how much of a media session id logs show: enough to
// tell sessions apart, short enough to keep lines readable.
const sessionPrefixLen = 8

func sessionPrefix(id string) string {
	if id == "" {
		return "none"
	}
	if utf8.RuneCountInString(id) <= sessionPrefixLen {
		return id
	}
	n := 0
	for i := range id {
		if n == sessionPrefixLen {
			return id[:i] + "…"
		}
		n++
	}
	return id
}

type webrtcResults struct {
	AnswerSDP      string `json:"answerSdp"`
	ExpiresAt      string `json:"expiresAt"`
	MediaSessionID string `json:"mediaSessionId"`
}

// GenerateWebRtcStream sends offerSDP (non-trickle: ICE fully gathered, with
// at least one host candidate) and returns Google's answer and session. The
// offer's ICE password is scrubbed from any error, as Google may quote the
// offer back. An offer refused locally wraps ErrInvalidOffer; one Google
// refuses is an APIError for which IsRefused holds (400 INVALID_ARGUMENT).
func (c *Client) GenerateWebRtcStream(ctx context.Context, deviceName, offerSDP string) (WebRTCStream, error) {
	const op = "GenerateWebRtcStream"
	name, err := c.deviceName(deviceName)
	if err != nil {
		return WebRTCStream{}, fmt.Errorf("nest: %s: %w", op, err)
	}
	if err := checkOffer(offerSDP); err != nil {
		return WebRTCStream{}, fmt.Errorf("nest: %s: %w", op, err)
	}
	secrets := sdpSecrets(offerSDP)
	raw, ans, err := c.executeDated(ctx, op, name, CmdGenerateWebRtcStream,
		map[string]string{"offerSdp": offerSDP}, secrets...)
	if err != nil {
		return WebRTCStream{}, scrubSDPError(err, secrets)
	}
	var r webrtcResults
	if err := decodeResults(op, raw, &r); err != nil {
		return WebRTCStream{}, err
	}
	if r.AnswerSDP == "" || r.MediaSessionID == "" {
		return WebRTCStream{}, fmt.Errorf("nest: %s: response lacks answerSdp or mediaSessionId", op)
	}
	s := WebRTCStream{DeviceName: name, AnswerSDP: r.AnswerSDP, MediaSessionID: r.MediaSessionID}
	s.setTiming(c.timing(r.ExpiresAt, ans))
	return s, nil
}

// ExtendWebRtcStream extends s and returns it with the new expiry and the
// media session id Google returned (the same one, as a rule), keeping the
// original answer. Battery doorbells refuse every extension with 400
// FAILED_PRECONDITION, as does Google for a dead session: IsRefused and
// IsSessionLost hold, and the caller must stop and regenerate.
func (c *Client) ExtendWebRtcStream(ctx context.Context, s WebRTCStream) (WebRTCStream, error) {
	const op = "ExtendWebRtcStream"
	if s.MediaSessionID == "" {
		return s, fmt.Errorf("nest: %s: stream has no media session id", op)
	}
	secrets := sdpSecrets(s.AnswerSDP)
	raw, ans, err := c.executeDated(ctx, op, s.DeviceName, CmdExtendWebRtcStream,
		map[string]string{"mediaSessionId": s.MediaSessionID}, secrets...)
	if err != nil {
		return s, scrubSDPError(err, secrets)
	}
	var r webrtcResults
	if err := decodeResults(op, raw, &r); err != nil {
		return s, err
	}
	if r.MediaSessionID != "" {
		s.MediaSessionID = r.MediaSessionID
	}
	s.setTiming(c.timing(r.ExpiresAt, ans))
	return s, nil
}

// StopWebRtcStream ends the session; Google answers {}.
func (c *Client) StopWebRtcStream(ctx context.Context, s WebRTCStream) error {
	const op = "StopWebRtcStream"
	if s.MediaSessionID == "" {
		return fmt.Errorf("nest: %s: stream has no media session id", op)
	}
	secrets := sdpSecrets(s.AnswerSDP)
	_, err := c.execute(ctx, op, s.DeviceName, CmdStopWebRtcStream,
		map[string]string{"mediaSessionId": s.MediaSessionID}, secrets...)
	return scrubSDPError(err, secrets)
}

// decodeResults decodes a command's results, which Generate and Extend
// must carry: a missing or null results object is an error, not a session.
func decodeResults(op string, raw json.RawMessage, out any) error {
	if t := bytes.TrimSpace(raw); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return fmt.Errorf("nest: %s: response has no results", op)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		// json errors name types and offsets, never the value: the answer
		// SDP stays out of the message.
		return fmt.Errorf("nest: %s: decode results: %w", op, err)
	}
	return nil
}

// checkOffer refuses offers Google is known to refuse in a way that would
// look transient. Everything else (m-line order, directions, codecs) is
// left to Google, whose 400 INVALID_ARGUMENT is already classified right.
func checkOffer(offer string) error {
	if strings.TrimSpace(offer) == "" {
		return fmt.Errorf("%w: empty offer", ErrInvalidOffer)
	}
	for line := range strings.Lines(offer) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "a=candidate:")
		if !ok {
			continue
		}
		// foundation component transport priority address port "typ" type ...
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "typ" && f[i+1] == "host" {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: no host ICE candidate (gather ICE fully before offering; Google answers 500 INTERNAL)", ErrInvalidOffer)
}

// icePwdValue finds an ICE password however it is quoted: a line of an
// SDP, the same flattened into an error message, or JSON-escaped.
var icePwdValue = regexp.MustCompile(`(?i)(ice-pwd:)(?:[A-Za-z0-9+/=_\-]|\\/)+`)

// sdpSecrets returns the ICE passwords of an SDP, for scrubbing.
func sdpSecrets(sdp string) []string {
	var out []string
	for line := range strings.Lines(sdp) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "a=ice-pwd:"); ok {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// scrubSDPError removes ICE passwords from an APIError that Google built
// from an SDP-carrying request: the exact values this request sent were
// already replaced in the message (doInto's secrets); this also catches
// any other ice-pwd quoted there, and cleans Details, which doInto keeps raw.
func scrubSDPError(err error, secrets []string) error {
	ae := apiError(err)
	if ae == nil {
		return err
	}
	ae.Message = icePwdValue.ReplaceAllString(ae.Message, "${1}REDACTED")
	for i, d := range ae.Details {
		for _, sec := range secrets {
			if len(sec) >= 4 {
				d = bytes.ReplaceAll(d, []byte(sec), []byte("REDACTED"))
			}
		}
		d = icePwdValue.ReplaceAll(d, []byte("${1}REDACTED"))
		if !json.Valid(d) {
			d = json.RawMessage(`"REDACTED"`)
		}
		ae.Details[i] = d
	}
	return err
}
