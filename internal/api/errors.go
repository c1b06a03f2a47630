package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Error codes of the contract (docs/mqtt-api.md §2). Each has one HTTP-like status.
const (
	CodeBadRequest      = "BAD_REQUEST"
	CodeUnauthorized    = "UNAUTHORIZED"
	CodeForbidden       = "FORBIDDEN"
	CodeNotFound        = "NOT_FOUND"
	CodeConflict        = "CONFLICT"
	CodePayloadTooLarge = "PAYLOAD_TOO_LARGE"
	CodeTooManyRequests = "TOO_MANY_REQUESTS"
	CodeInternal        = "INTERNAL_SERVER_ERROR"

	// Codes only the HTTP binding answers: MQTT has no methods or
	// content types.
	CodeMethodNotAllowed     = "METHOD_NOT_ALLOWED"
	CodeUnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE"
)

var statusOf = map[string]int{
	CodeBadRequest:      http.StatusBadRequest,
	CodeUnauthorized:    http.StatusUnauthorized,
	CodeForbidden:       http.StatusForbidden,
	CodeNotFound:        http.StatusNotFound,
	CodeConflict:        http.StatusConflict,
	CodePayloadTooLarge: http.StatusRequestEntityTooLarge,
	CodeTooManyRequests: http.StatusTooManyRequests,
	CodeInternal:        http.StatusInternalServerError,

	CodeMethodNotAllowed:     http.StatusMethodNotAllowed,
	CodeUnsupportedMediaType: http.StatusUnsupportedMediaType,
}

// Codes lists every error code with its status, in the contract's order.
func Codes() []string {
	return []string{CodeBadRequest, CodeUnauthorized, CodeForbidden, CodeNotFound, CodeMethodNotAllowed,
		CodeConflict, CodePayloadTooLarge, CodeUnsupportedMediaType, CodeTooManyRequests, CodeInternal}
}

// StatusOf is the status that belongs to code.
func StatusOf(code string) int { return statusOf[code] }

// FieldError names one failing field, by its path in the request
// (`payload.mtx_path`, `command`).
type FieldError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Context echoes what the request was, so a client that sent many can match
// an error to its cause.
type Context struct {
	Command   string `json:"command,omitempty"`
	Module    string `json:"module,omitempty"`
	RequestID string `json:"requestId,omitempty"`
	Entity    string `json:"entity,omitempty"`
}

// Error is the one error shape every transport returns.
type Error struct {
	Code    string       `json:"code"`
	Status  int          `json:"status"`
	Message string       `json:"message"`
	Details []FieldError `json:"details,omitempty"`
	Context *Context     `json:"context,omitempty"`
	// RetryAfter, when known, is how long a TOO_MANY_REQUESTS should wait
	// (HTTP's Retry-After); not part of the JSON.
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// MarshalJSON wraps the error in {"error": ...}: the contract never sends a
// bare error object or string.
func (e *Error) MarshalJSON() ([]byte, error) {
	type plain Error
	return json.Marshal(struct {
		Error plain `json:"error"`
	}{plain(*e)})
}

// NewError builds an error with the status that belongs to code.
func NewError(code, format string, args ...any) *Error {
	return &Error{Code: code, Status: statusOf[code], Message: fmt.Sprintf(format, args...)}
}

// Invalid is a BAD_REQUEST listing each failing field.
func Invalid(details ...FieldError) *Error {
	e := NewError(CodeBadRequest, "the request is invalid")
	if len(details) == 1 {
		e.Message = details[0].Path + ": " + details[0].Message
	}
	e.Details = details
	return e
}

// WithContext returns a copy of e carrying the request's context.
func (e *Error) WithContext(r Request) *Error {
	c := *e
	c.Context = &Context{Command: r.Command, Module: r.Module, RequestID: r.RequestID, Entity: r.Entity}
	return &c
}

// MarshalResult encodes a result for any transport. Unlike json.Marshal it
// leaves &, < and > as they are: a Google sign-in URL copied from a reply
// must work in a browser, and "\u0026" in it does not.
func MarshalResult(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
