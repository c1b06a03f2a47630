package credentials_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/credentials"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/store"
)

// A stored credential's loop renews the access token RefreshMargin before
// it expires (or, for a short-lived token, in the last quarter of its life),
// stores the new token and announces it, again and again.
func TestRefreshRenewsTokenBeforeExpiry(t *testing.T) {
	t.Parallel()
	const ttl, margin = time.Second, 500 * time.Millisecond
	e := newEnv(t, envOptions{TokenTTL: ttl, RefreshMargin: margin})
	refresh, access := e.sim.IssueRefreshToken(), e.sim.IssueAccessToken()
	expiry := time.Now().Add(ttl)
	c := e.addCredential("Home", func(c *store.Credential) {
		c.RefreshToken, c.AccessToken, c.TokenExpiry = refresh, access, expiry
	})
	e.start()
	if _, reason := e.svc.ClientFor(c.ID); reason != "" {
		t.Fatalf("ClientFor with a valid stored token: reason %q, want usable", reason)
	}

	ev := e.waitEvent(c.ID, events.CredentialsReauthenticated)
	e.assertRefreshedBefore(0, expiry, margin)
	first := e.credential(c.ID)
	if first.AccessToken == "" || first.AccessToken == access {
		t.Fatal("the renewed access token was not stored")
	}
	if first.RefreshToken != refresh {
		t.Error("the stored refresh token changed, though Google returned none")
	}
	if !first.TokenExpiry.After(expiry) {
		t.Errorf("stored expiry %s is not after the old one %s", first.TokenExpiry, expiry)
	}
	if got, want := ev.Details["expires_at"], first.TokenExpiry.UTC().Format(time.RFC3339); got != want {
		t.Errorf("event expires_at = %v, want the stored expiry %s", got, want)
	}
	if got := ev.Details["description"]; got != "Home" {
		t.Errorf("event description = %v, want Home", got)
	}
	if st := e.sdmStatus(first.AccessToken); st != http.StatusOK {
		t.Errorf("SDM answered %d to the stored access token", st)
	}

	// The new token lives one second, so a quarter of its life is less than
	// the margin: the next renewal comes in that last quarter (a token
	// shorter than the margin cannot make the loop spin), before it expires.
	e.waitEvent(c.ID, events.CredentialsReauthenticated)
	e.assertRefreshedBefore(1, first.TokenExpiry, ttl/4)
	second := e.credential(c.ID)
	if second.AccessToken == first.AccessToken {
		t.Error("the second renewal did not store a new access token")
	}
	if n := e.sim.CountCalls("token.refresh_token"); n != 2 {
		t.Errorf("the token endpoint saw %d refreshes, want 2", n)
	}
	if _, reason := e.svc.ClientFor(c.ID); reason != "" {
		t.Errorf("ClientFor after renewals: reason %q, want usable", reason)
	}
	e.assertNoSecrets(refresh, access, first.AccessToken, second.AccessToken, e.sim.ClientSecret())
}

// Google refusing the refresh token (invalid_grant) takes the credential
// down: an `unauthenticated` event, the tokens forgotten, the listener told,
// and ClientFor gives the reason.
func TestRefusedRefreshTokenUnauthenticates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{TokenTTL: time.Second})
	refresh := e.sim.IssueRefreshToken()
	c := e.addCredential("Cabin", func(c *store.Credential) { c.RefreshToken = refresh })
	e.start()

	// No stored access token: the loop renews at once.
	e.waitEvent(c.ID, events.CredentialsReauthenticated)
	access := e.credential(c.ID).AccessToken
	e.sim.Faults().RevokeRefreshTokens()

	ev := e.waitEvent(c.ID, events.CredentialsUnauthenticated)
	if msg, _ := ev.Details["error"].(string); !strings.Contains(msg, "invalid_grant") {
		t.Errorf("event error = %q, want it to name invalid_grant", msg)
	}
	if got := ev.Details["description"]; got != "Cabin" {
		t.Errorf("event description = %v, want Cabin", got)
	}
	e.listener.waitFor(t, "CredentialChanged", func(_ []store.Camera, ids []uint64) bool {
		return slices.Contains(ids, c.ID)
	})

	got := e.credential(c.ID)
	if got.AccessToken != "" || got.RefreshToken != "" || !got.TokenExpiry.IsZero() || got.AuthenticatedAt != nil {
		t.Errorf("tokens not forgotten: access %t, refresh %t, expiry %s, authenticated_at %v",
			got.AccessToken != "", got.RefreshToken != "", got.TokenExpiry, got.AuthenticatedAt)
	}
	client, reason := e.svc.ClientFor(c.ID)
	if reason == "" || client == nil {
		t.Fatalf("ClientFor after invalid_grant = (%v, %q), want the client and a reason", client, reason)
	}
	if !strings.Contains(reason, "authorize it again") {
		t.Errorf("reason %q does not tell the user to authorize again", reason)
	}
	// Its cameras fail at once instead of waiting for a token.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := client.ListDevices(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ListDevices on the refused credential: %v, want an immediate error", err)
	}
	// And the sync leaves it out.
	if n, err := e.svc.SyncAll(ctx); n != 0 || err != nil {
		t.Errorf("SyncAll = %d, %v; want the refused credential skipped", n, err)
	}
	e.assertNoSecrets(refresh, access, e.sim.ClientSecret())
}

// A token endpoint that does not answer in time is retried; a camera asking
// for a token wakes the loop from its backoff, and no `unauthenticated` is
// emitted. (nestsim has no 5xx fault for the token endpoint: ServerErrors
// covers SDM only, so the transient failure here is a timeout.)
func TestTransientRefreshFailureIsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{HTTPTimeout: 500 * time.Millisecond})
	refresh := e.sim.IssueRefreshToken()
	c := e.addCredential("Shed", func(c *store.Credential) { c.RefreshToken = refresh })
	e.sim.Faults().SlowResponses(time.Minute)
	e.start()

	e.logs.waitFor(t, "refreshing the Google access token failed; retrying")
	e.sim.Faults().SlowResponses(0)
	client, reason := e.svc.ClientFor(c.ID)
	if reason != "" {
		t.Fatalf("ClientFor during a Google outage: reason %q, want the credential still usable", reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	asked := time.Now()
	devices, err := client.ListDevices(ctx)
	if err != nil {
		t.Fatalf("ListDevices after Google recovered: %v", err)
	}
	if len(devices) == 0 {
		t.Error("ListDevices listed no devices")
	}
	// The first retry waits 2.5 to 5 s unless a camera asks.
	if d := time.Since(asked); d > 2*time.Second {
		t.Errorf("ListDevices waited %s for a token: the loop was not woken", d)
	}

	e.waitEvent(c.ID, events.CredentialsReauthenticated) // fails on an `unauthenticated`
	if n := e.sim.CountCalls("token.refresh_token"); n < 2 {
		t.Errorf("the token endpoint saw %d refreshes, want a failed one and a retry", n)
	}
	got := e.credential(c.ID)
	if got.AccessToken == "" || got.RefreshToken != refresh || got.AuthenticatedAt == nil {
		t.Errorf("after the retry: access %t, refresh kept %t, authenticated_at %v",
			got.AccessToken != "", got.RefreshToken == refresh, got.AuthenticatedAt)
	}
	if strings.Contains(e.logs.String(), "credential unauthenticated") {
		t.Error("a transient failure was logged as lost authentication")
	}
	e.assertNoSecrets(refresh, got.AccessToken, e.sim.ClientSecret())
}

// Close stops every credential's loop: none of its goroutines is left and
// Google sees no refresh afterwards, though the tokens run out.
func TestCloseStopsEveryLoop(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	e := newEnv(t, envOptions{TokenTTL: ttl, RefreshMargin: 800 * time.Millisecond})
	var ids []uint64
	for _, name := range []string{"One", "Two"} {
		refresh, access := e.sim.IssueRefreshToken(), e.sim.IssueAccessToken()
		c := e.addCredential(name, func(c *store.Credential) {
			c.RefreshToken, c.AccessToken, c.TokenExpiry = refresh, access, time.Now().Add(ttl)
		})
		ids = append(ids, c.ID)
	}
	e.start()
	for _, id := range ids {
		e.waitEvent(id, events.CredentialsReauthenticated)
	}
	if n := e.serviceGoroutines("refreshLoop"); n != len(ids) {
		t.Fatalf("%d refresh loops running, want %d", n, len(ids))
	}

	e.svc.Close()
	closed := time.Now()
	// Close returns once every loop has called wg.Done, so none is inside
	// a refresh or a sync any more (a goroutine may still be unwinding the
	// deferred Done).
	for _, fn := range []string{"refreshLoop", "Sync"} {
		if n := e.serviceGoroutines(fn); n != 0 {
			t.Errorf("%d goroutines left in %s after Close", n, fn)
		}
	}
	calls := e.sim.CountCalls("token.refresh_token")
	// A running loop renews each token before it expires.
	var last time.Time
	for _, id := range ids {
		if exp := e.credential(id).TokenExpiry; exp.After(last) {
			last = exp
		}
	}
	window := time.NewTimer(time.Until(last))
	defer window.Stop()
	for wait := true; wait; {
		select {
		case m := <-e.sub.C():
			// Events emitted before Close returned may still be queued.
			if m.Event != nil && m.Event.Domain == events.DomainCredentials && m.Event.At.After(closed) {
				t.Errorf("event %q of credential %d after Close", m.Event.Event, *m.Event.Entity)
			}
		case <-window.C:
			wait = false
		}
	}
	if n := e.sim.CountCalls("token.refresh_token"); n != calls {
		t.Errorf("the token endpoint saw %d refreshes after Close", n-calls)
	}
}

// The consent flow stores the tokens, announces `authenticated`, tells the
// listener, runs the loop and syncs the cameras; its state is single-use.
func TestConsentAuthenticates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.addCredential("New", func(c *store.Credential) { c.AuthenticatedAt = nil })
	e.start()
	if _, reason := e.svc.ClientFor(c.ID); reason == "" {
		t.Fatal("ClientFor before consent: want a reason")
	}

	const callback = "http://127.0.0.1:1/oauth/callback"
	authURL, err := e.svc.AuthURL(c.ID, callback)
	if err != nil {
		t.Fatal(err)
	}
	// The browser's part: the simulated consent page grants at once and
	// redirects to the callback with the code and state.
	noFollow := &http.Client{Timeout: waitTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("consent page: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	q := loc.Query()

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	got, err := e.svc.ExchangeState(ctx, q.Get("state"), q.Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	if got.RefreshToken == "" || got.AccessToken == "" || got.AuthenticatedAt == nil {
		t.Fatal("the exchanged tokens were not stored")
	}
	if stored := e.credential(c.ID); stored.RefreshToken != got.RefreshToken {
		t.Error("the store does not hold the new refresh token")
	}
	ev := e.waitEvent(c.ID, events.CredentialsAuthenticated)
	if ev.Details["description"] != "New" {
		t.Errorf("event description = %v, want New", ev.Details["description"])
	}
	e.listener.waitFor(t, "CredentialChanged and the synced cameras", func(cams []store.Camera, ids []uint64) bool {
		return slices.Contains(ids, c.ID) && len(cams) > 0
	})
	if _, reason := e.svc.ClientFor(c.ID); reason != "" {
		t.Errorf("ClientFor after consent: reason %q, want usable", reason)
	}
	if _, err := e.svc.ExchangeState(ctx, q.Get("state"), q.Get("code")); !errors.Is(err, credentials.ErrBadState) {
		t.Errorf("replayed state: %v, want ErrBadState", err)
	}
	e.assertNoSecrets(got.RefreshToken, got.AccessToken, e.sim.ClientSecret())
}
