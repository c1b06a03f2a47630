package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/logstream"
	"github.com/nestmtx/nestmtx/internal/store"
)

// reserved are the event names Socket.IO clients keep for themselves: an
// answer emitted on one would not reach the client's handler.
var reserved = map[string]bool{"connect": true, "connect_error": true, "disconnect": true,
	"disconnecting": true, "newListener": true, "removeListener": true}

// failureEvent carries the errors of requests that cannot be answered
// otherwise (NestMTX's "failure").
const failureEvent = "failure"

// replyTo is where an answer goes.
type replyTo struct {
	event string     // the requestId; "" when none
	ack   socket.Ack // the client's acknowledgement callback; nil when none
}

// splitAck separates the acknowledgement callback Socket.IO appends to an
// event's arguments when the client asked for one.
func splitAck(args []any) ([]any, socket.Ack) {
	if n := len(args); n > 0 {
		if ack, ok := args[n-1].(socket.Ack); ok {
			return args[:n-1], ack
		}
	}
	return args, nil
}

// onRequest runs on the socket's own event goroutine, so it never waits:
// the request runs on a goroutine of its own, within the bounds, or is
// refused at once.
func (c *conn) onRequest(args ...any) {
	args, ack := splitAck(args)
	to := replyTo{ack: ack}
	var v any
	if len(args) > 0 {
		v = args[0]
	}
	raw := requestJSON(v)
	if len(raw) > c.s.opts.MaxRequestBytes {
		to.event = api.ScanRequestID(raw)
		if reserved[to.event] {
			to.event = ""
		}
		c.answer(to, nil, api.NewError(api.CodePayloadTooLarge, "the request is %d bytes; the limit is %d", len(raw), c.s.opts.MaxRequestBytes))
		return
	}
	req, decErr := api.DecodeRequest(raw)
	to.event = req.RequestID
	if reserved[req.RequestID] {
		to.event = ""
		if decErr == nil {
			decErr = api.Invalid(api.FieldError{Path: "requestId", Message: "must not be an event name Socket.IO clients " +
				"reserve (connect, connect_error, disconnect, disconnecting, newListener, removeListener)"})
		}
	}
	if decErr != nil {
		c.answer(to, nil, decErr.WithContext(req))
		return
	}
	if to.event == "" && to.ack == nil {
		err := api.Invalid(api.FieldError{Path: "requestId",
			Message: "is required: the answer is emitted on the event it names (or pass an acknowledgement callback)"})
		c.answer(to, nil, err.WithContext(req))
		return
	}
	if err := c.acquire(); err != nil {
		c.s.refused.Add(1)
		c.answer(to, nil, err.WithContext(req))
		return
	}
	c.mu.Lock()
	if req.Token == "" {
		req.Token = c.token
	}
	c.mu.Unlock()
	req.Remote, req.Client = c.remote, c.client
	if !c.s.spawn(func() {
		ctx, cancel := context.WithTimeout(c.s.ctx, c.s.opts.RequestTimeout)
		res, apiErr := c.s.opts.Handler.Handle(ctx, req)
		cancel()
		// Free the slot before answering: a client that sends its next
		// request on the answer must find it free.
		c.release()
		c.answer(to, res, apiErr)
	}) {
		c.release() // shutting down: no answer
	}
}

// requestJSON is the request as JSON: Socket.IO decoded the client's
// object, which is encoded again (a string is taken as JSON text, as
// NestMTX does).
func requestJSON(v any) []byte {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []byte(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// acquire takes a request slot of the connection and one of the server, or
// says why not.
func (c *conn) acquire() *api.Error {
	limit := int32(c.s.opts.MaxInFlightPerSocket)
	for {
		n := c.inflight.Load()
		if n >= limit {
			return api.NewError(api.CodeTooManyRequests, "this connection has %d requests in progress, as many as it may; "+
				"wait for their answers", n)
		}
		if c.inflight.CompareAndSwap(n, n+1) {
			break
		}
	}
	select {
	case c.s.slots <- struct{}{}:
		return nil
	default:
		c.inflight.Add(-1)
		return api.NewError(api.CodeTooManyRequests, "the daemon is busy: %d Socket.IO requests are in progress; "+
			"try again in a moment", cap(c.s.slots))
	}
}

func (c *conn) release() {
	<-c.s.slots
	c.inflight.Add(-1)
}

// answer delivers a result or an error: on the requestId's event and
// through the acknowledgement, whichever the client gave; an error with
// neither goes to "failure".
func (c *conn) answer(to replyTo, result any, apiErr *api.Error) {
	body := encodeAnswer(c.s.log, result, apiErr)
	delivered := false
	if to.event != "" {
		c.send(frame(to.event, body), false)
		delivered = true
	}
	if to.ack != nil {
		to.ack([]any{json.RawMessage(body)}, nil)
		delivered = true
	}
	if !delivered {
		c.send(frame(failureEvent, body), false)
	}
}

// encodeAnswer is the JSON of a result, or of the error envelope.
func encodeAnswer(log *slog.Logger, result any, apiErr *api.Error) []byte {
	var body []byte
	var err error
	if apiErr != nil {
		body, err = json.Marshal(apiErr)
	} else {
		body, err = api.MarshalResult(result)
	}
	if err != nil {
		log.Error("Socket.IO: encoding an answer", "error", err)
		body, _ = json.Marshal(api.NewError(api.CodeInternal, "the response could not be encoded"))
	}
	return body
}

// control serves authenticate and log:level: their argument is a bare
// value, or an object with the value under key and an optional requestId;
// the answer goes where a request's would.
func (c *conn) control(args []any, key string, run func(v any) (any, *api.Error)) {
	args, ack := splitAck(args)
	to := replyTo{ack: ack}
	var v any
	if len(args) > 0 {
		v = args[0]
	}
	if m, ok := v.(map[string]any); ok {
		if id, ok := m["requestId"]; ok && id != nil {
			s, _ := id.(string)
			if !api.ValidRequestID(s) || reserved[s] {
				c.answer(to, nil, api.Invalid(api.FieldError{Path: "requestId",
					Message: "must be 1 to 128 characters of [A-Za-z0-9_.:-], and no name Socket.IO reserves"}))
				return
			}
			to.event = s
		}
		v = m[key]
	}
	res, err := run(v)
	if err == nil && to.event == "" && to.ack == nil {
		return // done, and nobody asked to hear so
	}
	c.answer(to, res, err)
}

// Login is what authenticate answers.
type Login struct {
	User       api.UserView `json:"user"`
	Expiration time.Time    `json:"expiration"`
}

// onAuthenticate gives the connection a new token (a refreshed login):
// from then on its requests, events and log go with it. A bad token leaves
// the connection as it was.
func (c *conn) onAuthenticate(args ...any) {
	c.control(args, "token", func(v any) (any, *api.Error) {
		tok, _ := v.(string)
		if tok = bareToken(tok); tok == "" {
			return nil, api.Invalid(api.FieldError{Path: "token", Message: "is required: the new bearer token, from auth create"})
		}
		user, exp, err := c.s.opts.Tokens.LookupToken(tok)
		if err != nil {
			if errors.Is(err, store.ErrTokenInvalid) {
				return nil, api.NewError(api.CodeUnauthorized, "the token is unknown or has expired; the connection keeps its current token")
			}
			c.s.log.Error("Socket.IO: looking up a new token", "error", err)
			return nil, api.NewError(api.CodeInternal, "the token could not be checked; the daemon's log has the cause")
		}
		c.mu.Lock()
		c.token, c.user, c.expires = tok, user, exp
		c.applyLogsLocked()
		c.mu.Unlock()
		return Login{User: api.ViewUser(user), Expiration: exp.UTC()}, nil
	})
}

// LogLevel is what log:level answers.
type LogLevel struct {
	Level int    `json:"level"` // 0 when off
	Name  string `json:"name"`
}

// onLogLevel changes the level of the connection's log stream.
func (c *conn) onLogLevel(args ...any) {
	c.control(args, "level", func(v any) (any, *api.Error) {
		level, ok := parseLevel(v)
		if !ok {
			return nil, api.Invalid(api.FieldError{Path: "level", Message: levelRule})
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.user.Role != store.RoleAdmin {
			return nil, api.NewError(api.CodeForbidden, "only an admin may follow the daemon's log")
		}
		c.logLevel = level
		c.applyLogsLocked()
		return levelView(level), nil
	})
}

func levelView(level int) LogLevel {
	if level == 0 {
		return LogLevel{Name: "off"}
	}
	return LogLevel{Level: level, Name: logstream.LevelName(level)}
}
