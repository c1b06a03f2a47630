package nestsim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// authCodeTTL is how long an authorization code can be exchanged, as with
// Google (about 10 minutes).
const authCodeTTL = 10 * time.Minute

type authCode struct {
	clientID    string
	redirectURI string
	scope       string
	offline     bool
	expires     time.Time
	used        bool
}

type refreshToken struct {
	clientID string
	scope    string
	revoked  bool
}

type accessToken struct {
	scope   string
	expires time.Time
}

// reply is an answer computed by a handler; the wrapper applies the slow
// fault and records the call before writing it, so a delayed answer has
// already taken effect, as a slow Google would.
type reply struct {
	status   int
	body     []byte
	ctype    string
	location string
	method   string
	device   string
}

func jsonReply(status int, v any) *reply {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return &reply{status: status, body: append(b, '\n'), ctype: "application/json; charset=UTF-8"}
}

func textReply(status int, msg string) *reply {
	return &reply{status: status, body: []byte(msg + "\n"), ctype: "text/plain; charset=utf-8"}
}

func oauthError(status int, code, desc string) *reply {
	return jsonReply(status, map[string]string{"error": code, "error_description": desc})
}

func (s *Sim) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /partnerconnections/{project}/auth", s.wrap(s.handleAuth))
	mux.Handle("POST /oauth2/v4/token", s.wrap(s.handleToken))
	// oauth2.googleapis.com/token is the standard equivalent of the v4 path.
	mux.Handle("POST /token", s.wrap(s.handleToken))
	mux.Handle("/v1/", s.wrap(s.handleSDM))
	return mux
}

func (s *Sim) wrap(h func(*http.Request) *reply) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := h(r)
		s.recordCall(rep.method, rep.device, rep.status)
		if d := s.faults.slowDelay(); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			case <-s.ctx.Done():
				t.Stop()
				return
			}
		}
		if rep.location != "" {
			w.Header().Set("Location", rep.location)
		}
		if rep.ctype != "" {
			w.Header().Set("Content-Type", rep.ctype)
		}
		w.Header().Set("Cache-Control", "no-store")
		// The Date header comes from the simulator's own clock, as Google's
		// comes from Google's: a daemon that derives session lifetimes from
		// it must agree with the expiresAt values whatever its clock says.
		w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
		w.WriteHeader(rep.status)
		w.Write(rep.body)
	})
}

// handleAuth stands in for the Partner Connections consent page: every
// device is shared and consent is given at once, so a test "browser" only
// follows the redirect.
func (s *Sim) handleAuth(r *http.Request) *reply {
	rep := s.auth(r)
	rep.method = "auth"
	return rep
}

func (s *Sim) auth(r *http.Request) *reply {
	if r.PathValue("project") != s.o.ProjectID {
		return textReply(http.StatusNotFound, "Error 404: the Device Access project "+r.PathValue("project")+" was not found.")
	}
	q := r.URL.Query()
	if q.Get("client_id") != s.o.ClientID {
		return textReply(http.StatusBadRequest, "Error 401: invalid_client\nThe OAuth client was not found.")
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		return textReply(http.StatusBadRequest, "Error 400: invalid_request\nMissing required parameter: redirect_uri")
	}
	ru, err := url.Parse(redirect)
	if err != nil || !ru.IsAbs() {
		return textReply(http.StatusBadRequest, "Error 400: invalid_request\nInvalid parameter value for redirect_uri: "+redirect)
	}
	if rt := q.Get("response_type"); rt != "code" {
		return textReply(http.StatusBadRequest, "Error 400: invalid_request\nUnsupported response_type: "+rt)
	}
	scope := strings.Join(strings.Fields(q.Get("scope")), " ")
	if scope == "" {
		scope = ScopeSDM
	}
	code := "4/0Sim" + randToken(32)
	s.mu.Lock()
	s.pruneCodesLocked()
	s.codes[code] = &authCode{
		clientID:    s.o.ClientID,
		redirectURI: redirect,
		scope:       scope,
		// Google issues a refresh token only for offline access.
		offline: q.Get("access_type") == "offline",
		expires: s.now().Add(authCodeTTL),
	}
	s.mu.Unlock()

	rq := ru.Query()
	rq.Set("code", code)
	if st := q.Get("state"); st != "" {
		rq.Set("state", st)
	}
	rq.Set("scope", scope)
	ru.RawQuery = rq.Encode()
	return &reply{status: http.StatusFound, location: ru.String()}
}

func (s *Sim) pruneCodesLocked() {
	now := s.now()
	for k, c := range s.codes {
		if now.After(c.expires) {
			delete(s.codes, k)
		}
	}
}

func (s *Sim) handleToken(r *http.Request) *reply {
	if err := r.ParseForm(); err != nil {
		return oauthError(http.StatusBadRequest, "invalid_request", "Could not parse the request body.")
	}
	grant := r.PostForm.Get("grant_type")
	rep := s.token(r, grant)
	rep.method = "token." + grant
	return rep
}

func (s *Sim) token(r *http.Request, grant string) *reply {
	// golang.org/x/oauth2 sends the client either in the body or as
	// Basic auth with URL-encoded parts, depending on its AuthStyle.
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, secret = u, p
		if v, err := url.QueryUnescape(u); err == nil {
			id = v
		}
		if v, err := url.QueryUnescape(p); err == nil {
			secret = v
		}
	}
	if id != s.o.ClientID {
		return oauthError(http.StatusUnauthorized, "invalid_client", "The OAuth client was not found.")
	}
	if secret != s.o.ClientSecret {
		return oauthError(http.StatusUnauthorized, "invalid_client", "Unauthorized")
	}

	switch grant {
	case "authorization_code":
		code := r.PostForm.Get("code")
		if code == "" {
			return oauthError(http.StatusBadRequest, "invalid_request", "Missing required parameter: code")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		c := s.codes[code]
		if c == nil || c.used || s.now().After(c.expires) || c.clientID != id {
			return oauthError(http.StatusBadRequest, "invalid_grant", "Bad Request")
		}
		if r.PostForm.Get("redirect_uri") != c.redirectURI {
			return oauthError(http.StatusBadRequest, "redirect_uri_mismatch", "Bad Request")
		}
		c.used = true
		access, ttl := s.newAccessLocked(c.scope)
		resp := map[string]any{
			"access_token": access,
			"expires_in":   ttl,
			"scope":        c.scope,
			"token_type":   "Bearer",
		}
		if c.offline {
			rt := "1//0Sim" + randToken(48)
			s.refresh[rt] = &refreshToken{clientID: id, scope: c.scope}
			resp["refresh_token"] = rt
		}
		return jsonReply(http.StatusOK, resp)

	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		if rt == "" {
			return oauthError(http.StatusBadRequest, "invalid_request", "Missing required parameter: refresh_token")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		t := s.refresh[rt]
		if t == nil || t.revoked {
			return oauthError(http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked.")
		}
		if t.clientID != id {
			return oauthError(http.StatusBadRequest, "unauthorized_client", "Unauthorized")
		}
		access, ttl := s.newAccessLocked(t.scope)
		return jsonReply(http.StatusOK, map[string]any{
			"access_token": access,
			"expires_in":   ttl,
			"scope":        t.scope,
			"token_type":   "Bearer",
		})

	case "":
		return oauthError(http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: ")
	default:
		return oauthError(http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+grant)
	}
}

func (s *Sim) newAccessLocked(scope string) (string, int) {
	now := s.now()
	for k, a := range s.access {
		if now.After(a.expires) {
			delete(s.access, k)
		}
	}
	tok := "ya29.Sim" + randToken(48)
	s.access[tok] = &accessToken{scope: scope, expires: now.Add(s.o.AccessTokenTTL)}
	ttl := int(s.o.AccessTokenTTL / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	return tok, ttl
}

// IssueRefreshToken returns a valid refresh token for the sim's client with
// the sdm.service scope, skipping the consent dance (demo mode).
func (s *Sim) IssueRefreshToken() string {
	rt := "1//0Sim" + randToken(48)
	s.mu.Lock()
	s.refresh[rt] = &refreshToken{clientID: s.o.ClientID, scope: ScopeSDM}
	s.mu.Unlock()
	return rt
}

// IssueAccessToken returns a valid access token with the sdm.service scope
// and the configured lifetime, for tests that skip OAuth.
func (s *Sim) IssueAccessToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, _ := s.newAccessLocked(ScopeSDM)
	return tok
}

func (s *Sim) revokeRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.refresh {
		t.revoked = true
	}
}

// checkBearer validates the SDM request's access token; nil means allowed.
func (s *Sim) checkBearer(r *http.Request) *reply {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		// The scheme is case-insensitive in RFC 6750.
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			tok, ok = h[7:], true
		}
	}
	s.mu.Lock()
	a := s.access[strings.TrimSpace(tok)]
	expired := a != nil && !s.now().Before(a.expires)
	s.mu.Unlock()
	if !ok || a == nil || expired {
		return googleError(http.StatusUnauthorized, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
	}
	if !strings.Contains(" "+a.scope+" ", " "+ScopeSDM+" ") {
		return googleError(http.StatusForbidden, "Request had insufficient authentication scopes.", "PERMISSION_DENIED")
	}
	return nil
}
