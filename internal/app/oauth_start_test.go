package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestOAuthStartPage: a phone on the LAN signs a credential in from
// /oauth/start: the form asks an admin's login on every submit (a wrong
// one is 401, a viewer's 403, and guessing is throttled), sends the
// browser to Google, and the second form takes back the address the
// browser ended on.
func TestOAuthStartPage(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	var cred struct{ ID uint64 }
	if err := json.Unmarshal(e.call("create", "credentials", "payload", map[string]any{"description": "Home",
		"oauth_client_id": e.sim.ClientID(), "oauth_client_secret": e.sim.ClientSecret(), "dac_project_id": e.sim.ProjectID()}), &cred); err != nil {
		t.Fatal(err)
	}
	e.call("create", "users", "payload", map[string]any{"username": "guest", "password": "guest-pass"})
	base := "http://" + e.app.HTTPAddr()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(path string, form url.Values) (*http.Response, string) {
		t.Helper()
		resp, err := noFollow.PostForm(base+path, form)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	id := fmt.Sprint(cred.ID)

	resp, err := http.Get(base + "/oauth/start?credential=" + id)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `name="password"`) ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("GET /oauth/start: %d %s", resp.StatusCode, page)
	}

	form := url.Values{"username": {"admin"}, "password": {"wrong"}, "credential": {id}, "redirect_uri": {"http://localhost:2000/oauth/callback"}}
	if r, _ := post("/oauth/start", form); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong password: %d", r.StatusCode)
	}
	form.Set("username", "guest")
	form.Set("password", "guest-pass")
	if r, _ := post("/oauth/start", form); r.StatusCode != http.StatusForbidden {
		t.Fatalf("a viewer: %d", r.StatusCode)
	}
	form.Set("username", "admin")
	form.Set("password", adminPassword)
	r, _ := post("/oauth/start", form)
	authURL := r.Header.Get("Location")
	if r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(authURL, e.sim.AuthURL()) {
		t.Fatalf("an admin: %d to %q", r.StatusCode, authURL)
	}
	landed, err := testkit.ConsentUntilRedirect(authURL)
	if err != nil {
		t.Fatal(err)
	}
	paste := url.Values{"username": {"admin"}, "password": {adminPassword}, "credential": {id}, "redirect_url": {landed}}
	if r, body := post("/oauth/paste", paste); r.StatusCode != http.StatusOK || !strings.Contains(body, "Authorized") {
		t.Fatalf("the pasted address: %d %s", r.StatusCode, body)
	}
	e.waitEvent("credentials", cred.ID, "authenticated")

	// Guessing the password through the form is throttled like any login.
	form.Set("password", "guess")
	var last int
	for range 7 {
		r, _ := post("/oauth/start", form)
		last = r.StatusCode
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("after 7 wrong passwords: %d", last)
	}
}
