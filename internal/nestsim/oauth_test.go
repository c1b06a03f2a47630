package nestsim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

const redirectURI = "http://127.0.0.1:9/oauth/callback"

// consent plays the browser: it opens the auth page and returns the
// redirect it is sent to, without following it.
func consent(t *testing.T, s *Sim, clientID, state string) (*http.Response, url.Values) {
	t.Helper()
	q := url.Values{
		"redirect_uri":  {redirectURI},
		"client_id":     {clientID},
		"state":         {state},
		"response_type": {"code"},
		"access_type":   {"offline"},
		"prompt":        {"consent"},
		"scope":         {ScopeSDM},
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := hc.Get(s.AuthURL() + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusFound {
		return res, nil
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != redirectURI {
		t.Fatalf("redirected to %s, want %s", got, redirectURI)
	}
	return res, loc.Query()
}

func postToken(t *testing.T, s *Sim, form url.Values) (int, map[string]any) {
	t.Helper()
	res, err := http.PostForm(s.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("token answer has Content-Type %q", ct)
	}
	var m map[string]any
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, m
}

func wantOAuthError(t *testing.T, code int, m map[string]any, wantCode int, wantErr, wantDesc string) {
	t.Helper()
	if code != wantCode || m["error"] != wantErr || m["error_description"] != wantDesc {
		t.Fatalf("got %d %v, want %d error=%s error_description=%q", code, m, wantCode, wantErr, wantDesc)
	}
}

func TestOAuthConsentExchangeRefresh(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})

	_, q := consent(t, s, s.ClientID(), "xyz-state")
	code := q.Get("code")
	if code == "" || q.Get("state") != "xyz-state" || q.Get("scope") != ScopeSDM {
		t.Fatalf("redirect query %v: want code, state=xyz-state, scope=%s", q, ScopeSDM)
	}

	exchange := url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI},
		"client_id": {s.ClientID()}, "client_secret": {"wrong"},
	}
	st, m := postToken(t, s, exchange)
	wantOAuthError(t, st, m, http.StatusUnauthorized, "invalid_client", "Unauthorized")

	exchange.Set("client_secret", s.ClientSecret())
	exchange.Set("redirect_uri", "http://127.0.0.1:9/elsewhere")
	st, m = postToken(t, s, exchange)
	if st != http.StatusBadRequest || m["error"] != "redirect_uri_mismatch" {
		t.Fatalf("mismatched redirect_uri: %d %v", st, m)
	}

	exchange.Set("redirect_uri", redirectURI)
	st, m = postToken(t, s, exchange)
	if st != http.StatusOK {
		t.Fatalf("code exchange: %d %v", st, m)
	}
	access, _ := m["access_token"].(string)
	refresh, _ := m["refresh_token"].(string)
	if access == "" || refresh == "" || m["token_type"] != "Bearer" || m["scope"] != ScopeSDM || m["expires_in"] != float64(3600) {
		t.Fatalf("token answer %v lacks Google's fields", m)
	}

	a := &api{t: t, s: s, token: access}
	if code, b := a.do(http.MethodGet, "/enterprises/"+s.ProjectID()+"/devices", nil); code != http.StatusOK {
		t.Fatalf("SDM call with the new token: %d %s", code, b)
	}

	// Codes are single-use.
	st, m = postToken(t, s, exchange)
	wantOAuthError(t, st, m, http.StatusBadRequest, "invalid_grant", "Bad Request")

	st, m = postToken(t, s, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {refresh},
		"client_id": {s.ClientID()}, "client_secret": {s.ClientSecret()},
	})
	if st != http.StatusOK || m["access_token"] == "" || m["access_token"] == access {
		t.Fatalf("refresh: %d %v", st, m)
	}
	if _, has := m["refresh_token"]; has {
		t.Fatalf("refresh answer carries a refresh_token: %v", m)
	}

	s.Faults().RevokeRefreshTokens()
	st, m = postToken(t, s, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {refresh},
		"client_id": {s.ClientID()}, "client_secret": {s.ClientSecret()},
	})
	wantOAuthError(t, st, m, http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked.")

	st, m = postToken(t, s, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {"1//unknown"},
		"client_id": {s.ClientID()}, "client_secret": {s.ClientSecret()},
	})
	wantOAuthError(t, st, m, http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked.")

	// A token issued after the revocation works.
	st, _ = postToken(t, s, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {s.IssueRefreshToken()},
		"client_id": {s.ClientID()}, "client_secret": {s.ClientSecret()},
	})
	if st != http.StatusOK {
		t.Fatalf("refresh with a freshly issued token: %d", st)
	}

	if n := s.CountCalls("token.authorization_code"); n != 4 {
		t.Errorf("call log has %d code exchanges, want 4", n)
	}
	if n := s.CountCalls("token.refresh_token"); n != 4 {
		t.Errorf("call log has %d refreshes, want 4", n)
	}
}

func TestOAuthUnknownClientAuthPage(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	res, _ := consent(t, s, "someone-else", "s")
	if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
		t.Fatalf("unknown client: %d Location=%q, want 400 and no redirect", res.StatusCode, res.Header.Get("Location"))
	}
}

// TestOAuthWithXOAuth2 drives the sim with golang.org/x/oauth2 in both
// client-authentication styles, since the daemon may use either.
func TestOAuthWithXOAuth2(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
		conf := &oauth2.Config{
			ClientID: s.ClientID(), ClientSecret: s.ClientSecret(), RedirectURL: redirectURI,
			Scopes:   []string{ScopeSDM},
			Endpoint: oauth2.Endpoint{AuthURL: s.AuthURL(), TokenURL: s.TokenURL(), AuthStyle: style},
		}
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err := hc.Get(conf.AuthCodeURL("st", oauth2.AccessTypeOffline, oauth2.ApprovalForce))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		loc, err := url.Parse(res.Header.Get("Location"))
		if err != nil || res.StatusCode != http.StatusFound {
			t.Fatalf("auth page: %d %v", res.StatusCode, err)
		}
		ctx := context.Background()
		tok, err := conf.Exchange(ctx, loc.Query().Get("code"))
		if err != nil {
			t.Fatalf("style %d: exchange: %v", style, err)
		}
		if tok.RefreshToken == "" || time.Until(tok.Expiry) < 50*time.Minute {
			t.Fatalf("style %d: token %+v", style, tok)
		}
		// Force a refresh through the token source.
		tok.Expiry = time.Now().Add(-time.Minute)
		fresh, err := conf.TokenSource(ctx, tok).Token()
		if err != nil || fresh.AccessToken == tok.AccessToken || fresh.RefreshToken != tok.RefreshToken {
			t.Fatalf("style %d: refresh gave %+v, %v", style, fresh, err)
		}
	}
}

func TestAccessTokenExpiry(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := startSim(t, Options{AccessTokenTTL: 30 * time.Second, Now: clock.Now})
	a := newAPI(t, s)
	list := "/enterprises/" + s.ProjectID() + "/devices"
	if code, b := a.do(http.MethodGet, list, nil); code != http.StatusOK {
		t.Fatalf("fresh token: %d %s", code, b)
	}
	clock.Advance(31 * time.Second)
	code, b := a.do(http.MethodGet, list, nil)
	e := wantGoogleError(t, code, b, http.StatusUnauthorized, "UNAUTHENTICATED")
	if e.Error.Message != "Request had invalid authentication credentials." {
		t.Fatalf("message %q", e.Error.Message)
	}
	a.token = ""
	code, b = a.do(http.MethodGet, list, nil)
	wantGoogleError(t, code, b, http.StatusUnauthorized, "UNAUTHENTICATED")
	if calls := s.Calls(); len(calls) != 3 || calls[2].Status != http.StatusUnauthorized || calls[2].Method != "devices.list" {
		t.Fatalf("call log %+v", calls)
	}
}
