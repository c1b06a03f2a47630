package app

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nestmtx/nestmtx/internal/config"
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
// minute used to lock the real admin out, from anywhere.
func TestAdminLockoutByStrangerFails(t *testing.T) {
	a := startApp(t, nil)
	// The attacker fails from the API over MQTT and from RTSP's door alike:
	// one gate counts them all, per (username, address).
	for i := 0; i < 10; i++ {
		_, _ = a.gate.Check(t.Context(), "admin", "guess", "192.0.2.66")
	}
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	rr.Login(t, "admin", adminPassword) // from 127.0.0.1: never blocked
	r := rr.Call(t, req("create", "auth", "payload", map[string]any{"username": "admin", "password": "guess"}))
	wantCode(t, r, "UNAUTHORIZED")
}
