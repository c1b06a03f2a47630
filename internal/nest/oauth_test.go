package nest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testClientID     = "123-abc.apps.googleusercontent.com"
	testClientSecret = "GOCSPX-supersecret"
	testProject      = "3f1e0c9a-0000-4000-8000-000000000001"
	testRefresh      = "1//0refresh-token-old"
)

func TestAuthCodeURL(t *testing.T) {
	app := OAuthApp{ClientID: testClientID, ClientSecret: testClientSecret, ProjectID: testProject}
	raw := app.AuthCodeURL("https://nestmtx.example/callback", "st-42")
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "https" || u.Host != "nestservices.google.com" || u.Path != "/partnerconnections/"+testProject+"/auth" {
		t.Fatalf("base = %s://%s%s", u.Scheme, u.Host, u.Path)
	}
	q := u.Query()
	want := map[string]string{
		"redirect_uri":  "https://nestmtx.example/callback",
		"access_type":   "offline",
		"prompt":        "consent",
		"client_id":     testClientID,
		"response_type": "code",
		"scope":         ScopeSDM,
		"state":         "st-42",
	}
	for k, v := range want {
		if got := q.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if q.Has("client_secret") || strings.Contains(raw, testClientSecret) {
		t.Error("the client secret leaked into the auth URL")
	}

	// The simulator overrides the endpoint; {project_id} still applies.
	app.Endpoints.AuthURL = "http://127.0.0.1:9/pcm/{project_id}/auth"
	if u, _ := url.Parse(app.AuthCodeURL("http://x/cb", "s")); u.Host != "127.0.0.1:9" || u.Path != "/pcm/"+testProject+"/auth" {
		t.Fatalf("custom endpoint gave %s", u)
	}
}

// tokenServer answers like Google's token endpoint and records each form.
type tokenServer struct {
	*httptest.Server
	mu     sync.Mutex
	forms  []url.Values
	auths  []string
	answer func(w http.ResponseWriter, form url.Values)
}

func newTokenServer(t *testing.T, answer func(w http.ResponseWriter, form url.Values)) *tokenServer {
	ts := &tokenServer{answer: answer}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/oauth2/v4/token" {
			t.Errorf("token request %s %s", r.Method, r.URL.Path)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
			t.Errorf("content type %q", ct)
		}
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		ts.mu.Lock()
		ts.forms = append(ts.forms, r.PostForm)
		ts.auths = append(ts.auths, r.Header.Get("Authorization"))
		ts.mu.Unlock()
		ts.answer(w, r.PostForm)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) app() OAuthApp {
	return OAuthApp{ClientID: testClientID, ClientSecret: testClientSecret, ProjectID: testProject,
		Endpoints: Endpoints{TokenURL: ts.URL + "/oauth2/v4/token"}}
}

func (ts *tokenServer) requests() []url.Values {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]url.Values(nil), ts.forms...)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func TestExchange(t *testing.T) {
	ts := newTokenServer(t, func(w http.ResponseWriter, f url.Values) {
		writeJSON(w, 200, `{"access_token":"ya29.first","expires_in":3599,"refresh_token":"1//0new","scope":"https://www.googleapis.com/auth/sdm.service","token_type":"Bearer"}`)
	})
	before := time.Now()
	tok, err := ts.app().Exchange(context.Background(), ts.Client(), "4/0code", "https://nestmtx.example/callback")
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "ya29.first" || tok.RefreshToken != "1//0new" {
		t.Fatalf("token = %#v", tok)
	}
	if d := tok.Expiry.Sub(before); d < 3590*time.Second || d > 3600*time.Second {
		t.Fatalf("expiry in %v, want ≈3599s", d)
	}
	reqs := ts.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d token requests, want 1 (no auth-style probe)", len(reqs))
	}
	want := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {"4/0code"},
		"redirect_uri":  {"https://nestmtx.example/callback"},
		"client_id":     {testClientID},
		"client_secret": {testClientSecret},
	}
	if fmt.Sprint(reqs[0]) != fmt.Sprint(want) {
		t.Fatalf("form = %v\nwant %v", reqs[0], want)
	}
	if ts.auths[0] != "" {
		t.Fatalf("credentials also sent in a header: %q", ts.auths[0])
	}
}

func TestRefresh(t *testing.T) {
	newRT := ""
	ts := newTokenServer(t, func(w http.ResponseWriter, f url.Values) {
		body := `{"access_token":"ya29.refreshed","expires_in":3599,"scope":"https://www.googleapis.com/auth/sdm.service","token_type":"Bearer"`
		if newRT != "" {
			body += `,"refresh_token":"` + newRT + `"`
		}
		writeJSON(w, 200, body+"}")
	})
	app := ts.app()
	tok, err := app.Refresh(context.Background(), ts.Client(), testRefresh)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "ya29.refreshed" || tok.RefreshToken != testRefresh {
		t.Fatalf("token = %#v, want the old refresh token kept", tok)
	}
	f := ts.requests()[0]
	if f.Get("grant_type") != "refresh_token" || f.Get("refresh_token") != testRefresh ||
		f.Get("client_id") != testClientID || f.Get("client_secret") != testClientSecret {
		t.Fatalf("form = %v", f)
	}

	newRT = "1//0rotated"
	tok, err = app.Refresh(context.Background(), ts.Client(), testRefresh)
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "1//0rotated" {
		t.Fatalf("refresh token = %q, want the rotated one", tok.RefreshToken)
	}
}

func assertNoSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	msg := err.Error()
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			t.Errorf("error %q contains secret %q", msg, s)
		}
	}
}

func TestTokenErrors(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		ctype     string
		body      string
		grant     bool
		client    bool
		transient bool
	}{
		{"invalid_grant", 400, "application/json", `{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`, true, false, false},
		{"invalid_client", 401, "application/json", `{"error":"invalid_client","error_description":"The OAuth client was not found."}`, false, true, false},
		{"server error", 503, "text/html", `<html>Service Unavailable refresh_token=` + testRefresh + `</html>`, false, false, true},
		{"rate limited", 429, "application/json", `{"error":"rate_limit_exceeded"}`, false, false, true},
		{"bad request", 400, "application/json", `{"error":"invalid_request","error_description":"Missing required parameter: refresh_token"}`, false, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTokenServer(t, func(w http.ResponseWriter, f url.Values) {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			_, err := ts.app().Refresh(context.Background(), ts.Client(), testRefresh)
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrInvalidGrant) != tc.grant {
				t.Errorf("Is(ErrInvalidGrant) = %v for %v", !tc.grant, err)
			}
			if errors.Is(err, ErrInvalidClient) != tc.client {
				t.Errorf("Is(ErrInvalidClient) = %v for %v", !tc.client, err)
			}
			if IsTransient(err) != tc.transient {
				t.Errorf("IsTransient = %v for %v", !tc.transient, err)
			}
			assertNoSecrets(t, err, testRefresh, testClientSecret)
			if tc.grant {
				var ig *InvalidGrantError
				if !errors.As(err, &ig) || ig.Description != "Token has been expired or revoked." {
					t.Fatalf("InvalidGrantError = %#v", ig)
				}
			}
		})
	}
}

func TestExchangeInvalidGrantHidesCode(t *testing.T) {
	ts := newTokenServer(t, func(w http.ResponseWriter, f url.Values) {
		writeJSON(w, 400, `{"error":"invalid_grant","error_description":"Malformed auth code: 4/0secretcode"}`)
	})
	_, err := ts.app().Exchange(context.Background(), ts.Client(), "4/0secretcode", "http://x/cb")
	if !errors.Is(err, ErrInvalidGrant) {
		t.Fatalf("err = %v", err)
	}
	assertNoSecrets(t, err, "4/0secretcode")
}

func TestTokenTransportErrorsAreTransient(t *testing.T) {
	// Connection refused: a server that has gone away.
	ts := newTokenServer(t, nil)
	app := ts.app()
	hc := ts.Client()
	ts.Close()
	_, err := app.Refresh(context.Background(), hc, testRefresh)
	if err == nil || !IsTransient(err) {
		t.Fatalf("refused connection: err = %v, transient = %v", err, IsTransient(err))
	}
	assertNoSecrets(t, err, testRefresh, testClientSecret)

	// Client timeout: the handler holds the request until the client gives up.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server notices a client hang-up only once the body is read.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) }) // runs first: Close waits for handlers
	slowApp := OAuthApp{ClientID: testClientID, ClientSecret: testClientSecret, Endpoints: Endpoints{TokenURL: slow.URL + "/oauth2/v4/token"}}
	hc = slow.Client()
	hc.Timeout = 50 * time.Millisecond
	_, err = slowApp.Refresh(context.Background(), hc, testRefresh)
	if err == nil || !IsTransient(err) {
		t.Fatalf("timeout: err = %v, transient = %v", err, IsTransient(err))
	}

	// Our own cancellation is not something to retry.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = slowApp.Refresh(ctx, slow.Client(), testRefresh)
	if err == nil || IsTransient(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: err = %v", err)
	}
}

func TestTokenStringHidesSecrets(t *testing.T) {
	tok := Token{AccessToken: "ya29.secret", RefreshToken: testRefresh, Expiry: time.Now()}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v", tok), tok.LogValue().String()} {
		if strings.Contains(s, "ya29.secret") || strings.Contains(s, testRefresh) {
			t.Fatalf("token printed as %q", s)
		}
	}
}
