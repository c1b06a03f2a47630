package app

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nestmtx/nestmtx/internal/credentials"
	"github.com/nestmtx/nestmtx/internal/login"
	"github.com/nestmtx/nestmtx/internal/netguard"
	"github.com/nestmtx/nestmtx/internal/store"
)

// /oauth/start is Google's sign-in for a phone or laptop on the LAN, with
// no API client at hand: a form that takes an admin's login and the
// credential, then sends the browser to Google; and a second form that
// takes back the address the browser ended on when Google's redirect
// (http://localhost:2000/oauth/callback) could not load there. The login
// is asked on every submit (no cookie, so no session to steal or forge):
// without it anyone on the LAN could bind a credential to their own
// Google account.

const (
	oauthFormMaxBytes  = 16 << 10
	defaultRedirectURI = "http://localhost:2000/oauth/callback"
)

func (a *App) mountOAuthStart(mux *http.ServeMux) {
	mux.HandleFunc("GET /oauth/start", a.serveOAuthStartPage)
	mux.HandleFunc("POST /oauth/start", a.serveOAuthStart)
	mux.HandleFunc("POST /oauth/paste", a.serveOAuthPaste)
}

// pageHeaders keep the page out of caches and frames, and its forms on
// this daemon.
func pageHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action 'self' https:; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
}

const startPage = `<!doctype html><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>nestmtx: sign in with Google</title>
<h1>Sign in with Google</h1>
<form method="post" action="/oauth/start">
<p><label>nestmtx admin <input name="username" value="admin" autocomplete="username"></label>
<p><label>Password <input name="password" type="password" autocomplete="current-password"></label>
<p><label>Credential id <input name="credential" inputmode="numeric" value="%s"></label>
<p><label>Redirect URI <input name="redirect_uri" size="48" value="%s"></label>
<p><button>Continue to Google</button>
</form>
<h2>Then, if the page Google sent you to does not load</h2>
<p>Copy the whole address from the address bar (it starts with the redirect URI) and paste it here.
<form method="post" action="/oauth/paste">
<p><label>nestmtx admin <input name="username" value="admin" autocomplete="username"></label>
<p><label>Password <input name="password" type="password" autocomplete="current-password"></label>
<p><label>Credential id <input name="credential" inputmode="numeric" value="%s"></label>
<p><label>Address <input name="redirect_url" size="48"></label>
<p><button>Finish</button>
</form>`

func (a *App) serveOAuthStartPage(w http.ResponseWriter, r *http.Request) {
	pageHeaders(w)
	cred := r.URL.Query().Get("credential")
	if _, err := strconv.ParseUint(cred, 10, 64); err != nil {
		cred = ""
	}
	fmt.Fprintf(w, startPage, html.EscapeString(cred), html.EscapeString(defaultRedirectURI), html.EscapeString(cred))
}

// formAdmin reads a posted form and checks its admin login through the
// same gate (and throttling) as every other login; it answers the refusal
// itself and returns ok false then.
func (a *App) formAdmin(w http.ResponseWriter, r *http.Request) (credID uint64, ok bool) {
	r.Body = http.MaxBytesReader(w, r.Body, oauthFormMaxBytes)
	if err := r.ParseForm(); err != nil {
		a.oauthPage(w, http.StatusBadRequest, "The form could not be read", err.Error())
		return 0, false
	}
	host := netguard.ClientIPOf(r.RemoteAddr)
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	user, err := a.gate.Check(ctx, r.PostForm.Get("username"), r.PostForm.Get("password"), host)
	var throttled *login.ThrottledError
	switch {
	case errors.As(err, &throttled):
		w.Header().Set("Retry-After", strconv.Itoa(int(throttled.RetryAfter.Seconds())+1))
		a.oauthPage(w, http.StatusTooManyRequests, "Too many failed logins", "Wait a minute and try again.")
		return 0, false
	case errors.Is(err, store.ErrBadCredentials):
		a.oauthPage(w, http.StatusUnauthorized, "Wrong username or password", "")
		return 0, false
	case err != nil:
		a.log.Warn("oauth start: checking the login failed", "error", err)
		a.oauthPage(w, http.StatusServiceUnavailable, "The login could not be checked", "Try again.")
		return 0, false
	case user.Role != store.RoleAdmin:
		a.oauthPage(w, http.StatusForbidden, "Only an admin may sign a credential in", "")
		return 0, false
	}
	id, err := strconv.ParseUint(strings.TrimSpace(r.PostForm.Get("credential")), 10, 64)
	if err != nil {
		a.oauthPage(w, http.StatusBadRequest, "Which credential?", "Give the credential's id (credentials list shows it).")
		return 0, false
	}
	return id, true
}

func (a *App) serveOAuthStart(w http.ResponseWriter, r *http.Request) {
	id, ok := a.formAdmin(w, r)
	if !ok {
		return
	}
	redirect := strings.TrimSpace(r.PostForm.Get("redirect_uri"))
	if u, err := url.Parse(redirect); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		a.oauthPage(w, http.StatusBadRequest, "The redirect URI is not an http(s) address", "")
		return
	}
	authURL, err := a.creds.AuthURL(id, redirect)
	if err != nil {
		a.oauthPage(w, http.StatusBadRequest, "The sign-in could not start", err.Error())
		return
	}
	a.log.Info("Google sign-in started from /oauth/start", "credential_id", id)
	http.Redirect(w, r, authURL, http.StatusSeeOther)
}

func (a *App) serveOAuthPaste(w http.ResponseWriter, r *http.Request) {
	id, ok := a.formAdmin(w, r)
	if !ok {
		return
	}
	u, err := url.Parse(strings.TrimSpace(r.PostForm.Get("redirect_url")))
	if err != nil {
		a.oauthPage(w, http.StatusBadRequest, "That is not an address", "")
		return
	}
	q := u.Query()
	if e := q.Get("error"); e != "" {
		a.oauthPage(w, http.StatusBadRequest, "Authorization cancelled", "Google answered: "+e)
		return
	}
	if q.Get("code") == "" || q.Get("state") == "" {
		a.oauthPage(w, http.StatusBadRequest, "That address has no code", "Paste the whole address the browser ended on.")
		return
	}
	cred, err := a.creds.ExchangeFor(r.Context(), id, q.Get("state"), q.Get("code"))
	if err != nil {
		msg := err.Error()
		if errors.Is(err, credentials.ErrBadState) {
			msg += " (the address must come from this credential's sign-in)"
		}
		a.oauthPage(w, http.StatusBadRequest, "Authorization failed", msg)
		return
	}
	a.oauthPage(w, http.StatusOK, "Authorized", "nestmtx can now reach the cameras of "+cred.Description+". You can close this tab.")
}

func (a *App) oauthPage(w http.ResponseWriter, status int, title, text string) {
	pageHeaders(w)
	w.WriteHeader(status)
	fmt.Fprintf(w, page, html.EscapeString(title), html.EscapeString(text))
}
