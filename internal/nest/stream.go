package nest

import (
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nestmtx/nestmtx/internal/redact"
)

// RTSPStream is one live RTSP session. URL, StreamToken and ExtensionToken
// are secrets: anyone holding the URL can watch the camera until ExpiresAt.
// String and LogValue therefore print the redacted URL only.
type RTSPStream struct {
	DeviceName     string
	URL            string // rtsps://...?auth=<StreamToken>
	StreamToken    string
	ExtensionToken string // the newest one; Extend and Stop must use it
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
func (s RTSPStream) LocalExpiry() time.Time {
	if s.ReceivedAt.IsZero() {
		return s.ExpiresAt
	}
	return s.ReceivedAt.Add(s.Lifetime)
}

// RedactedURL is URL with the auth value replaced by "REDACTED".
func (s RTSPStream) RedactedURL() string { return redact.AuthParams(s.URL) }

func (s RTSPStream) String() string {
	return "nest.RTSPStream{" + s.DeviceName + " " + s.RedactedURL() + " expires " + s.ExpiresAt.Format(time.RFC3339) + "}"
}

// LogValue keeps slog from reflecting the token fields.
func (s RTSPStream) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("device", s.DeviceName),
		slog.String("url", s.RedactedURL()),
		slog.Time("expiresAt", s.ExpiresAt),
	)
}

// withStreamToken rebuilds the URL after an extension, which returns no
// URL: the path (the opaque session) stays and the query becomes
// auth=<new token>, as python-google-nest-sdm does.
func withStreamToken(rawURL, token string) string {
	if rawURL == "" {
		return ""
	}
	base, _, _ := strings.Cut(rawURL, "?")
	return base + "?" + url.Values{"auth": {token}}.Encode()
}
