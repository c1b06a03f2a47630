package nest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"
)

var (
	// ErrInvalidGrant means the refresh token or authorization code is dead
	// (expired, revoked, 7-day Testing-app expiry, ...). Retrying cannot help:
	// the user has to run the consent flow again.
	ErrInvalidGrant = errors.New("nest: invalid_grant")
	// ErrInvalidClient means the OAuth client id/secret pair was rejected;
	// like ErrInvalidGrant it needs a human, not a retry.
	ErrInvalidClient = errors.New("nest: invalid_client")
	// ErrInvalidDeviceName is wrapped when a device name is not of the form
	// enterprises/{p}/devices/{id}; it is checked before anything is sent so
	// a malformed name cannot be spliced into a request path.
	ErrInvalidDeviceName = errors.New("nest: invalid device name")
)

// InvalidGrantError is the token endpoint's invalid_grant answer.
// errors.Is(err, ErrInvalidGrant) holds for it.
type InvalidGrantError struct {
	// Description is Google's error_description, e.g. "Token has been
	// expired or revoked.", truncated and scrubbed of anything token-like.
	Description string
}

func (e *InvalidGrantError) Error() string {
	if e.Description == "" {
		return "nest: grant rejected (invalid_grant)"
	}
	return "nest: grant rejected (invalid_grant): " + e.Description
}

// Is lets callers test with errors.Is(err, ErrInvalidGrant) without caring
// about the concrete type.
func (e *InvalidGrantError) Is(target error) bool { return target == ErrInvalidGrant }

// TokenError is any other failure answered by the token endpoint.
type TokenError struct {
	HTTPStatus  int
	Code        string // RFC 6749 "error", may be empty for non-OAuth bodies
	Description string // scrubbed and truncated
}

func (e *TokenError) Error() string {
	s := fmt.Sprintf("nest: token endpoint: HTTP %d", e.HTTPStatus)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// Is maps invalid_client onto ErrInvalidClient.
func (e *TokenError) Is(target error) bool {
	return target == ErrInvalidClient && e.Code == "invalid_client"
}

// APIError is a non-2xx answer from the SDM API.
type APIError struct {
	Op         string // e.g. "GenerateRtspStream", "ListDevices"
	HTTPStatus int
	Status     string // Google's canonical status, e.g. "NOT_FOUND"; empty for non-JSON bodies
	Message    string // scrubbed and truncated; safe to log
	// Details is Google's error.details, raw, for callers that want to dig.
	Details []json.RawMessage
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("nest: %s: HTTP %d", e.Op, e.HTTPStatus)
	if e.Status != "" {
		s += " " + e.Status
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// transientError marks failures that are known to be worth retrying but do
// not carry a type IsTransient could otherwise recognise.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func apiError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

// IsRateLimited reports a 429 / RESOURCE_EXHAUSTED answer from SDM.
func IsRateLimited(err error) bool {
	ae := apiError(err)
	return ae != nil && (ae.HTTPStatus == http.StatusTooManyRequests || ae.Status == "RESOURCE_EXHAUSTED")
}

// IsNotFound reports a 404 / NOT_FOUND answer: the device was unshared or removed.
func IsNotFound(err error) bool {
	ae := apiError(err)
	return ae != nil && (ae.HTTPStatus == http.StatusNotFound || ae.Status == "NOT_FOUND")
}

// IsUnauthenticated reports a 401 / UNAUTHENTICATED answer that survived the
// client's one refresh-and-retry.
func IsUnauthenticated(err error) bool {
	ae := apiError(err)
	return ae != nil && (ae.HTTPStatus == http.StatusUnauthorized || ae.Status == "UNAUTHENTICATED")
}

// IsPermissionDenied reports a 403 / PERMISSION_DENIED answer: the device or
// trait is not granted in Partner Connections.
func IsPermissionDenied(err error) bool {
	ae := apiError(err)
	return ae != nil && (ae.HTTPStatus == http.StatusForbidden || ae.Status == "PERMISSION_DENIED")
}

// ErrNotAuthenticated is returned for operations that need Google's
// consent on a credential first.
var ErrNotAuthenticated = errors.New("the credential is not authenticated with Google yet")

// IsRefused reports an answer that asking again will not change: 400
// (INVALID_ARGUMENT, FAILED_PRECONDITION: say, RTSP asked of a camera that
// streams only over WebRTC) or 403 (PERMISSION_DENIED). A 404 is reported by
// IsNotFound instead, as it means the device itself is gone.
func IsRefused(err error) bool {
	ae := apiError(err)
	if ae == nil {
		return false
	}
	switch ae.HTTPStatus {
	case http.StatusBadRequest, http.StatusForbidden:
		return true
	}
	return ae.Status == "FAILED_PRECONDITION" || ae.Status == "INVALID_ARGUMENT" || ae.Status == "PERMISSION_DENIED"
}

// IsSessionLost reports any 4xx other than 401 and 429. Google documents no
// single code for an expired extension token, so an Extend refused this way
// means the stream session is gone and must be regenerated.
func IsSessionLost(err error) bool {
	ae := apiError(err)
	if ae == nil || ae.HTTPStatus < 400 || ae.HTTPStatus > 499 {
		return false
	}
	return ae.HTTPStatus != http.StatusUnauthorized && ae.HTTPStatus != http.StatusTooManyRequests
}

// IsTransient reports failures that may succeed if simply retried later:
// 5xx answers (SDM or token endpoint), a 429 from the token endpoint,
// timeouts and connection-level errors. A cancelled context is not
// transient: the caller gave up on purpose.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if ae := apiError(err); ae != nil {
		return ae.HTTPStatus >= 500
	}
	var te *TokenError
	if errors.As(err, &te) {
		// The token endpoint has no limiter in front of it, so its 429
		// just means "later", which is what transient tells the caller.
		return te.HTTPStatus >= 500 || te.HTTPStatus == http.StatusTooManyRequests
	}
	if errors.Is(err, ErrInvalidGrant) || errors.Is(err, ErrInvalidClient) {
		return false
	}
	var tr *transientError
	if errors.As(err, &tr) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		// Every net.Error (timeouts, DNS, dial, reset) is a transport
		// failure rather than an answer, so another attempt may work.
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

const maxMessageLen = 300

var secretPatterns = []struct {
	re   *regexp.Regexp
	repl string
}{
	// The RTSP stream token travels as the auth= query value.
	{regexp.MustCompile(`(?i)(\bauth=)[^&\s"'<>]+`), "${1}REDACTED"},
	{regexp.MustCompile(`(?i)(\bbearer\s+)[^\s"'<>,]+`), "${1}REDACTED"},
	{regexp.MustCompile(`(?i)("?\b(?:access_token|refresh_token|id_token|client_secret|streamToken|streamExtensionToken)"?\s*[:=]\s*"?)[^"&\s,}]+`), "${1}REDACTED"},
	// Google access tokens and refresh tokens have recognisable prefixes.
	{regexp.MustCompile(`\bya29\.[\w.\-]+`), "REDACTED"},
	{regexp.MustCompile(`\b1//[\w.\-]+`), "REDACTED"},
}

// scrub makes text from a remote body fit for an error string: known
// secrets and token-shaped substrings are replaced, control characters and
// runs of whitespace collapse to one space, and the result is truncated.
func scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "REDACTED")
		}
	}
	for _, p := range secretPatterns {
		s = p.re.ReplaceAllString(s, p.repl)
	}
	var b strings.Builder
	space := false
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsSpace(r) || unicode.IsControl(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > maxMessageLen {
		cut := maxMessageLen
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "…"
	}
	return out
}

// googleErrorBody is Google's standard error envelope.
type googleErrorBody struct {
	Error *struct {
		Code    int               `json:"code"`
		Message string            `json:"message"`
		Status  string            `json:"status"`
		Details []json.RawMessage `json:"details"`
	} `json:"error"`
}

// newAPIError builds an APIError from a non-2xx body. secrets are values
// this request sent (access token, extension token) that must not be echoed
// back into logs even if Google quotes them.
func newAPIError(op string, status int, body []byte, secrets ...string) *APIError {
	ae := &APIError{Op: op, HTTPStatus: status}
	var g googleErrorBody
	if err := json.Unmarshal(body, &g); err == nil && g.Error != nil {
		ae.Status = g.Error.Status
		ae.Message = scrub(g.Error.Message, secrets...)
		ae.Details = g.Error.Details
		return ae
	}
	ae.Message = scrub(string(body), secrets...)
	if ae.Message == "" {
		ae.Message = http.StatusText(status)
	}
	return ae
}
