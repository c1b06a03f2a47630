// Package api is the transport-neutral L.C.R.U.D. API: a Request goes in, a
// result or an *Error comes out. Transports (MQTT now, HTTP later) only decode
// envelopes and deliver replies; they never know what a module does.
package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/nestmtx/nestmtx/internal/store"
)

// Call is what a handler sees: the request and, on routes that need it, the
// authenticated user, with the entity's id and the payload's values as
// the route's Spec accepted them.
type Call struct {
	Request
	User *store.User
	// ID is the entity's numeric id on routes whose Spec says it is one.
	ID uint64
	// Args are the payload's values on routes whose Spec has a payload.
	Args *Args
}

// HandlerFunc serves one command of one module. It returns a result to marshal
// as JSON, or an error: an *Error as it is, a store error mapped to its code,
// anything else as INTERNAL_SERVER_ERROR with nothing of its text leaked.
type HandlerFunc func(ctx context.Context, c *Call) (any, error)

type route struct {
	public bool
	admin  bool
	spec   Spec
	// fn checks the request against spec, then runs the handler.
	fn HandlerFunc
}

// Module maps commands to routes.
type Module map[string]route

// Authed is a route for logged-in users.
func Authed(spec Spec, fn HandlerFunc) route { return newRoute(false, false, spec, fn) }

// Admin is a route for logged-in admins only: users, credentials, and
// changes to cameras.
func Admin(spec Spec, fn HandlerFunc) route { return newRoute(false, true, spec, fn) }

// Public is a route that needs no token (auth, health, version).
func Public(spec Spec, fn HandlerFunc) route { return newRoute(true, false, spec, fn) }

// newRoute wraps fn in the checks its Spec declares: the handler runs only
// on an entity and a payload that meet them.
func newRoute(public, admin bool, spec Spec, fn HandlerFunc) route {
	checked := func(ctx context.Context, c *Call) (any, error) {
		if spec.Entity != nil {
			id, err := spec.Entity.check(c.Entity)
			if err != nil {
				return nil, err
			}
			c.ID = id
		}
		if spec.Payload != nil {
			args, err := spec.Payload.check(c.Payload)
			if err != nil {
				return nil, err
			}
			c.Args = args
		}
		return fn(ctx, c)
	}
	return route{public: public, admin: admin, spec: spec, fn: checked}
}

// Dispatcher routes requests to modules.
type Dispatcher struct {
	modules map[string]Module
	tokens  TokenChecker
	log     *slog.Logger
}

// TokenChecker resolves a bearer token to its user.
type TokenChecker interface {
	LookupToken(token string) (store.User, time.Time, error)
}

// NewDispatcher builds an empty dispatcher; Register adds modules.
func NewDispatcher(tokens TokenChecker, log *slog.Logger) *Dispatcher {
	return &Dispatcher{modules: map[string]Module{}, tokens: tokens, log: log}
}

// Register adds (or replaces) a module.
func (d *Dispatcher) Register(name string, m Module) { d.modules[name] = m }

// Handle runs one request. Every error it returns carries the request's context.
func (d *Dispatcher) Handle(ctx context.Context, req Request) (any, *Error) {
	res, err := d.handle(ctx, req)
	if err != nil {
		return nil, err.WithContext(req)
	}
	return res, nil
}

func (d *Dispatcher) handle(ctx context.Context, req Request) (any, *Error) {
	mod, ok := d.modules[req.Module]
	if !ok {
		return nil, NewError(CodeNotFound, "unknown module %q", req.Module)
	}
	rt, ok := mod[req.Command]
	if !ok {
		return nil, NewError(CodeNotFound, "module %s has no command %s", req.Module, req.Command)
	}
	call := &Call{Request: req}
	if !rt.public {
		if req.Token == "" {
			return nil, NewError(CodeUnauthorized, "a bearer token is required: log in with auth create (over HTTP: POST /api/auth), then send it as \"token\", "+
				"as the MQTT user property authorization: Bearer <token>, or as the HTTP header Authorization: Bearer <token>")
		}
		user, _, err := d.tokens.LookupToken(req.Token)
		if err != nil {
			if errors.Is(err, store.ErrTokenInvalid) {
				return nil, NewError(CodeUnauthorized, "the token is unknown or has expired; log in again")
			}
			return nil, d.internal(req, err)
		}
		call.User = &user
		if rt.admin && user.Role != store.RoleAdmin {
			return nil, NewError(CodeForbidden, "only an admin may %s %s", req.Command, req.Module)
		}
	}
	res, err := rt.fn(ctx, call)
	if err != nil {
		return nil, d.toError(req, err)
	}
	return res, nil
}

// toError maps a handler's error to the contract's codes.
func (d *Dispatcher) toError(req Request, err error) *Error {
	var apiErr *Error
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, store.ErrNotFound):
		return NewError(CodeNotFound, "%s", err.Error())
	case errors.Is(err, store.ErrConflict):
		return NewError(CodeConflict, "%s", err.Error())
	case errors.Is(err, store.ErrBadCredentials):
		return NewError(CodeUnauthorized, "wrong username or password")
	case errors.Is(err, store.ErrLastAdmin):
		return NewError(CodeForbidden, "%s", err.Error())
	case errors.Is(err, store.ErrTokenInvalid):
		return NewError(CodeUnauthorized, "the token is unknown or has expired; log in again")
	}
	return d.internal(req, err)
}

// internal logs the cause for the operator and tells the client only where
// to look: error texts can carry paths, hosts or worse.
func (d *Dispatcher) internal(req Request, err error) *Error {
	d.log.Error("api request failed", "module", req.Module, "command", req.Command,
		"request_id", req.RequestID, "error", err)
	msg := "the request failed unexpectedly; the daemon's log has the cause"
	if req.RequestID != "" {
		msg += " (request " + req.RequestID + ")"
	}
	return NewError(CodeInternal, "%s", msg)
}

// BearerFromHeader extracts the token of an `authorization: Bearer <t>` value.
func BearerFromHeader(v string) string {
	v = strings.TrimSpace(v)
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}
