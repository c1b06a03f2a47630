package app

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// wantCode checks an error reply's code.
func wantCode(t *testing.T, r testkit.Response, code string) {
	t.Helper()
	if got, _, msg := r.Error(); got != code {
		t.Fatalf("got %s (%s), want %s: %s", got, msg, code, r)
	}
}

// TestViewerCannotEscalate: a second account used to have every right; it
// could change the admin's password without the old one, or disable it.
func TestViewerCannotEscalate(t *testing.T) {
	a := startApp(t, nil)
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	admin := rr.Login(t, "admin", adminPassword)
	var viewer struct {
		ID   uint64
		Role string
	}
	rr.Call(t, req("create", "users", "token", admin, "payload",
		map[string]any{"username": "guest", "password": "guest-pw"})).MustOK(t, &viewer)
	if viewer.Role != "viewer" {
		t.Fatalf("a new user is %q, want viewer (least privilege)", viewer.Role)
	}
	guest := rr.Login(t, "guest", "guest-pw")
	self := fmt.Sprint(viewer.ID)
	for name, r := range map[string]map[string]any{
		"change the admin's password": req("update", "users", "token", guest, "entity", "1", "payload", map[string]any{"password": "owned-now"}),
		"disable the admin":           req("update", "users", "token", guest, "entity", "1", "payload", map[string]any{"can_login": false}),
		"promote itself":              req("update", "users", "token", guest, "entity", self, "payload", map[string]any{"role": "admin"}),
		"rename itself":               req("update", "users", "token", guest, "entity", self, "payload", map[string]any{"username": "admin2"}),
		"create a user":               req("create", "users", "token", guest, "payload", map[string]any{"username": "x1x", "password": "xxxxxx"}),
		"delete the admin":            req("delete", "users", "token", guest, "entity", "1"),
		"list users":                  req("list", "users", "token", guest),
		"read the admin":              req("read", "users", "token", guest, "entity", "1"),
		"list credentials":            req("list", "credentials", "token", guest),
		"create a credential":         req("create", "credentials", "token", guest, "payload", map[string]any{"description": "d", "oauth_client_id": "i", "oauth_client_secret": "s", "dac_project_id": "p"}),
		"sync cameras":                req("create", "cameras", "token", guest, "payload", map[string]any{"sync": true}),
	} {
		t.Run(name, func(t *testing.T) { wantCode(t, rr.Call(t, r), "FORBIDDEN") })
	}
	// What a viewer may do: read cameras, its own account, and change its
	// own password with the old one.
	rr.Call(t, req("list", "cameras", "token", guest)).MustOK(t, nil)
	rr.Call(t, req("read", "users", "token", guest, "entity", self)).MustOK(t, nil)
	wantCode(t, rr.Call(t, req("update", "users", "token", guest, "entity", self, "payload",
		map[string]any{"password": "guest-pw-2"})), "BAD_REQUEST")
	wantCode(t, rr.Call(t, req("update", "users", "token", guest, "entity", self, "payload",
		map[string]any{"password": "guest-pw-2", "old_password": "wrong"})), "UNAUTHORIZED")
	rr.Call(t, req("update", "users", "token", guest, "entity", self, "payload",
		map[string]any{"password": "guest-pw-2", "old_password": "guest-pw"})).MustOK(t, nil)
	rr.Login(t, "guest", "guest-pw-2")
	// The admin still logs in with its own password.
	rr.Login(t, "admin", adminPassword)
}

func TestLastAdminStays(t *testing.T) {
	a := startApp(t, nil)
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	admin := rr.Login(t, "admin", adminPassword)
	var second struct{ ID uint64 }
	rr.Call(t, req("create", "users", "token", admin, "payload",
		map[string]any{"username": "second", "password": "second-pw", "role": "admin"})).MustOK(t, &second)
	other := rr.Login(t, "second", "second-pw")
	// The second admin demotes the first: allowed, one admin remains.
	rr.Call(t, req("update", "users", "token", other, "entity", "1", "payload", map[string]any{"role": "viewer"})).MustOK(t, nil)
	// Now the second is the last admin: nobody can remove it.
	rr.Call(t, req("update", "users", "token", other, "entity", "1", "payload", map[string]any{"role": "admin"})).MustOK(t, nil)
	rr.Call(t, req("delete", "users", "token", other, "entity", "1")).MustOK(t, nil)
	id := fmt.Sprint(second.ID)
	wantCode(t, rr.Call(t, req("update", "users", "token", other, "entity", id, "payload", map[string]any{"role": "viewer"})), "FORBIDDEN")
	wantCode(t, rr.Call(t, req("delete", "users", "token", other, "entity", id)), "FORBIDDEN")
}

func TestLogoutAndPasswordChangeRevokeTokens(t *testing.T) {
	a := startApp(t, nil)
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	first := rr.Login(t, "admin", adminPassword)
	second := rr.Login(t, "admin", adminPassword)
	third := rr.Login(t, "admin", adminPassword)
	// Logout ends exactly the token that asks.
	var out struct {
		LoggedOut bool `json:"logged_out"`
	}
	rr.Call(t, req("delete", "auth", "token", first, "entity", "current")).MustOK(t, &out)
	if !out.LoggedOut {
		t.Fatal("logout did not say so")
	}
	wantCode(t, rr.Call(t, req("list", "users", "token", first)), "UNAUTHORIZED")
	rr.Call(t, req("list", "users", "token", second)).MustOK(t, nil)
	// A password change keeps the session that made it and ends the others.
	rr.Call(t, req("update", "users", "token", second, "entity", "1", "payload",
		map[string]any{"password": "a new one", "old_password": adminPassword})).MustOK(t, nil)
	rr.Call(t, req("list", "users", "token", second)).MustOK(t, nil)
	wantCode(t, rr.Call(t, req("list", "users", "token", third)), "UNAUTHORIZED")
}

func TestInitialPasswordFileGoesWhenThePasswordChanges(t *testing.T) {
	a := startApp(t, func(c *config.Config) { c.AdminPassword = "" })
	file := filepath.Join(a.cfg.DataDir, "initial-admin-password")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pw := string(raw[:len(raw)-1])
	c := testkit.Dial(t, a.MQTTAddr(), "admin", pw)
	rr, err := c.NewRR("nestmtx/requests")
	if err != nil {
		t.Fatal(err)
	}
	tok := rr.Login(t, "admin", pw)
	rr.Call(t, req("update", "users", "token", tok, "entity", "1", "payload",
		map[string]any{"password": "chosen by the owner", "old_password": pw})).MustOK(t, nil)
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("the initial password file outlived the password: %v", err)
	}
}

// TestAdminLockoutByStrangerFails: five wrong passwords for admin in a
// minute used to lock the real admin out, from anywhere. The stranger, a
// guest account on the LAN, guesses from 127.0.0.2; the owner logs in from
// 127.0.0.1.
func TestAdminLockoutByStrangerFails(t *testing.T) {
	a := startApp(t, nil)
	addViewer(t, a, "guest", "guest-pw")
	c, err := testkit.DialFrom("127.0.0.2", a.MQTTAddr(), "guest", "guest-pw", "stranger")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stranger, err := c.NewRR("nestmtx/requests")
	if err != nil {
		t.Fatal(err)
	}
	guess := req("create", "auth", "payload", map[string]any{"username": "admin", "password": "guess"})
	for i := 0; i < 5; i++ {
		wantCode(t, stranger.Call(t, guess), "UNAUTHORIZED")
	}
	wantCode(t, stranger.Call(t, guess), "TOO_MANY_REQUESTS")
	// Even the right password waits, from the address that guessed.
	wantCode(t, stranger.Call(t, req("create", "auth", "payload",
		map[string]any{"username": "admin", "password": adminPassword})), "TOO_MANY_REQUESTS")
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	rr.Login(t, "admin", adminPassword)
}

// TestChangedAccountLosesItsLogins: disabling an account, deleting it or
// changing its password ends its tokens, and also its open RTSP readers and
// MQTT connections, but the connection that made its own change.
func TestChangedAccountLosesItsLogins(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	guest, err := e.app.Store().CreateUser("guest", "guest-pw", true, store.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	play := func(pw string) *reader {
		r := readPath(t, rtspURLAs(e.app, url.UserPassword("guest", pw), "front-door"))
		r.flowing(t, 0)
		return r
	}
	// The guest changes its own password: its other connections end, the
	// one it asked from stays.
	r := play("guest-pw")
	other := testkit.Dial(t, e.app.MQTTAddr(), "guest", "guest-pw")
	own := testkit.Dial(t, e.app.MQTTAddr(), "guest", "guest-pw")
	ownRR, err := own.NewRR("nestmtx/requests")
	if err != nil {
		t.Fatal(err)
	}
	tok := ownRR.Login(t, "guest", "guest-pw")
	ownRR.Call(t, req("update", "users", "token", tok, "entity", fmt.Sprint(guest.ID), "payload",
		map[string]any{"password": "guest-pw-2", "old_password": "guest-pw"})).MustOK(t, nil)
	expectDisconnect(t, r)
	expectGone(t, other)
	ownRR.Call(t, req("read", "users", "token", tok, "entity", fmt.Sprint(guest.ID))).MustOK(t, nil)

	// An admin disables it: everything ends, the asking client included
	// (it is the guest's, not the admin's).
	r = play("guest-pw-2")
	e.call("update", "users", "entity", fmt.Sprint(guest.ID), "payload", map[string]any{"can_login": false})
	expectDisconnect(t, r)
	expectGone(t, own)
	if _, err := openReader(rtspURLAs(e.app, url.UserPassword("guest", "guest-pw-2"), "front-door"), 0); err == nil {
		t.Fatal("a disabled account still plays")
	}
}

func expectGone(t *testing.T, c *testkit.Client) {
	t.Helper()
	select {
	case <-c.Gone():
	case <-time.After(10 * time.Second):
		t.Fatal("the MQTT client is still connected")
	}
}
