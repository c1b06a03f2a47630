package app

import (
	"context"
	"errors"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/nestmtx/nestmtx/internal/login"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
	"github.com/nestmtx/nestmtx/internal/store"
)

// rtspAuthenticator is what checks RTSP logins, against the nestmtx
// accounts: nil (anyone plays) with NESTMTX_RTSP_ANONYMOUS, said once at
// start since it opens every camera to the network.
func (a *App) rtspAuthenticator() rtspserver.Authenticator {
	if a.cfg.RTSPAnonymous {
		a.log.Warn("RTSP is open to anyone on the network (NESTMTX_RTSP_ANONYMOUS=true)")
		return nil
	}
	return &rtspAuth{gate: a.gate, store: a.store, app: a}
}

// rtspAuth checks Basic through the login gate (argon2id, throttling, a
// cache for Frigate's reconnects) and Digest against the sealed HA1 the
// store keeps, with the gate's throttling.
type rtspAuth struct {
	gate  *login.Gate
	store *store.Store
	app   *App
}

// Basic implements rtspserver.Authenticator.
func (r *rtspAuth) Basic(ctx context.Context, username, password, remote string) (rtspserver.Account, error) {
	u, err := r.gate.Check(ctx, username, password, remote)
	if errors.Is(err, login.ErrBusy) {
		// Not a wrong password: 503, at once, so the client retries.
		return rtspserver.Account{}, &rtspserver.StatusError{Status: base.StatusServiceUnavailable, Reason: err.Error()}
	}
	if err != nil {
		return rtspserver.Account{}, err
	}
	return rtspserver.Account{Username: u.Username}, nil
}

// DigestHA1 implements rtspserver.Authenticator.
func (r *rtspAuth) DigestHA1(username string) (string, rtspserver.Account, bool) {
	ha1, u, ok, err := r.store.DigestHA1(username)
	if err != nil {
		r.app.log.Error("rtsp digest login: reading the account", "username", username, "error", err)
		return "", rtspserver.Account{}, false
	}
	return ha1, rtspserver.Account{Username: u.Username}, ok
}

// Succeeded implements rtspserver.Authenticator.
func (r *rtspAuth) Succeeded(username, remote string) { r.gate.Succeeded(username, remote) }

// Failed implements rtspserver.Authenticator.
func (r *rtspAuth) Failed(username, remote string) { r.gate.Failed(username, remote) }

// Blocked implements rtspserver.Authenticator.
func (r *rtspAuth) Blocked(username, remote string) bool { return r.gate.Blocked(username, remote) }
