package app

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestConsentByPastedAddress: on a headless box the browser runs elsewhere
// and Google's redirect to http://localhost:2000/oauth/callback cannot
// load; the user pastes the whole address back with credentials update
// {redirect_url}, and the credential is authenticated. An address pasted
// for another credential, or a second time, is refused.
func TestConsentByPastedAddress(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	create := func(desc string) uint64 {
		var cred struct{ ID uint64 }
		body := e.call("create", "credentials", "payload", map[string]any{"description": desc,
			"oauth_client_id": e.sim.ClientID(), "oauth_client_secret": e.sim.ClientSecret(), "dac_project_id": e.sim.ProjectID()})
		if err := json.Unmarshal(body, &cred); err != nil {
			t.Fatal(err)
		}
		return cred.ID
	}
	home, other := create("Home"), create("Other")
	var authURL string
	if err := json.Unmarshal(e.call("update", "credentials", "entity", fmt.Sprint(home),
		"payload", map[string]any{"redirect_uri": "http://localhost:2000/oauth/callback"}), &authURL); err != nil {
		t.Fatal(err)
	}
	landed, err := testkit.ConsentUntilRedirect(authURL)
	if err != nil || !strings.HasPrefix(landed, "http://localhost:2000/oauth/callback?") {
		t.Fatalf("Google sent the browser to %q (%v)", landed, err)
	}
	// Pasted into the wrong credential: refused, and still good for the right one.
	r := e.rr.Call(t, req("update", "credentials", "entity", fmt.Sprint(other), "token", e.token,
		"payload", map[string]any{"redirect_url": landed}))
	if code, _, msg := r.Error(); code != "BAD_REQUEST" || !strings.Contains(msg, "authorization URL") {
		t.Fatalf("pasted into another credential: %s %s", code, msg)
	}
	var view struct {
		ID              uint64  `json:"id"`
		AuthenticatedAt *string `json:"authenticated_at"`
	}
	if err := json.Unmarshal(e.call("update", "credentials", "entity", fmt.Sprint(home),
		"payload", map[string]any{"redirect_url": landed}), &view); err != nil {
		t.Fatal(err)
	}
	if view.ID != home || view.AuthenticatedAt == nil {
		t.Fatalf("after the paste: %+v", view)
	}
	e.waitEvent("credentials", home, "authenticated")
	// Once used, the same address is refused.
	r = e.rr.Call(t, req("update", "credentials", "entity", fmt.Sprint(home), "token", e.token,
		"payload", map[string]any{"redirect_url": landed}))
	if code, _, _ := r.Error(); code != "BAD_REQUEST" {
		t.Fatalf("the same address twice: %s", code)
	}
	// An address without its code says what to paste.
	r = e.rr.Call(t, req("update", "credentials", "entity", fmt.Sprint(home), "token", e.token,
		"payload", map[string]any{"redirect_url": "http://localhost:2000/oauth/callback"}))
	if code, _, msg := r.Error(); code != "BAD_REQUEST" || !strings.Contains(msg, "whole address") {
		t.Fatalf("an address without a code: %s %s", code, msg)
	}
}

// TestFirstSignInIsAuthenticatedOnly: the first consent of a credential
// emits authenticated, and its fresh token is not refreshed at once (which
// would emit reauthenticated right after): by the end of the camera sync
// that follows, Google has seen no refresh.
func TestFirstSignInIsAuthenticatedOnly(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize() // waits for authenticated
	e.sync(map[string]string{})
	if n := e.sim.CountCalls("token.refresh_token"); n != 0 {
		t.Fatalf("%d token refreshes right after the first sign-in", n)
	}
}
