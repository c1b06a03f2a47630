package app

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// exerciseAPI walks every module through one broker.
func exerciseAPI(t *testing.T, a *App, brokerAddr string) {
	_, rr := client(t, brokerAddr, "nestmtx")

	// Public modules need no token.
	var ver map[string]string
	rr.Call(t, req("list", "version")).MustOK(t, &ver)
	if ver["release"] != "test" || ver["commit"] != "abc123" {
		t.Fatalf("version = %v", ver)
	}
	var health struct {
		Healthy string                     `json:"healthy"`
		Details map[string]json.RawMessage `json:"details"`
	}
	rr.Call(t, req("list", "health")).MustOK(t, &health)
	if health.Healthy != "degraded" || health.Details["mqtt"] == nil {
		t.Fatalf("health = %+v (no credential yet: degraded)", health)
	}

	// Everything else does.
	if code, _, _ := rr.Call(t, req("list", "users")).Error(); code != "UNAUTHORIZED" {
		t.Fatalf("users list without token: %s", code)
	}
	var login struct {
		Bearer     string    `json:"bearer"`
		Expiration time.Time `json:"expiration"`
		User       struct {
			ID       uint64 `json:"id"`
			Username string `json:"username"`
			CanLogin bool   `json:"can_login"`
		} `json:"user"`
	}
	rr.Call(t, req("create", "auth", "payload", map[string]any{"username": "admin", "password": adminPassword})).MustOK(t, &login)
	if login.Bearer == "" || login.User.Username != "admin" || !login.User.CanLogin ||
		time.Until(login.Expiration) < 23*time.Hour {
		t.Fatalf("login = %+v", login)
	}
	tok := login.Bearer

	// users
	var bob struct {
		ID       uint64 `json:"id"`
		Username string `json:"username"`
		CanLogin bool   `json:"can_login"`
	}
	rr.Call(t, req("create", "users", "token", tok, "payload", map[string]any{"username": "bob", "password": "bobs-password"})).MustOK(t, &bob)
	if bob.ID == 0 || bob.Username != "bob" || !bob.CanLogin {
		t.Fatalf("created %+v", bob)
	}
	var list struct {
		Page, ItemsPerPage, Total int
		Items                     []map[string]any
	}
	rr.Call(t, req("list", "users", "token", tok)).MustOK(t, &list)
	if list.Total != 2 || len(list.Items) != 2 || list.Page != 1 {
		t.Fatalf("users list = %+v", list)
	}
	for _, u := range list.Items {
		for k := range u {
			if strings.Contains(k, "password") || strings.Contains(k, "hash") {
				t.Fatalf("user view leaks %s", k)
			}
		}
	}
	rr.Call(t, req("list", "users", "token", tok, "payload", map[string]any{"search": "BO", "itemsPerPage": 1})).MustOK(t, &list)
	if list.Total != 1 || list.Items[0]["username"] != "bob" || list.ItemsPerPage != 1 {
		t.Fatalf("search = %+v", list)
	}
	bobID := fmt.Sprint(bob.ID)
	rr.Call(t, req("read", "users", "token", tok, "entity", bobID)).MustOK(t, &bob)
	rr.Call(t, req("update", "users", "token", tok, "entity", bobID, "payload", map[string]any{"can_login": false})).MustOK(t, &bob)
	if bob.CanLogin {
		t.Fatal("update did not disable bob")
	}
	if code, _, _ := rr.Call(t, req("create", "auth", "payload", map[string]any{"username": "bob", "password": "bobs-password"})).Error(); code != "UNAUTHORIZED" {
		t.Fatalf("disabled user logged in: %s", code)
	}
	adminID := fmt.Sprint(login.User.ID)
	if code, _, _ := rr.Call(t, req("delete", "users", "token", tok, "entity", adminID)).Error(); code != "FORBIDDEN" {
		t.Fatalf("self delete: %s", code)
	}
	if code, _, _ := rr.Call(t, req("update", "users", "token", tok, "entity", adminID, "payload", map[string]any{"can_login": false})).Error(); code != "FORBIDDEN" {
		t.Fatalf("self disable: %s", code)
	}
	rr.Call(t, req("delete", "users", "token", tok, "entity", bobID)).MustOK(t, nil)
	if code, _, _ := rr.Call(t, req("read", "users", "token", tok, "entity", bobID)).Error(); code != "NOT_FOUND" {
		t.Fatalf("read deleted user: %s", code)
	}

	// credentials: the secret goes in and never comes out.
	const secret = "GOCSPX-very-secret-value"
	var cred map[string]any
	rr.Call(t, req("create", "credentials", "token", tok, "payload", map[string]any{
		"description": "Home", "oauth_client_id": "123.apps.googleusercontent.com",
		"oauth_client_secret": secret, "dac_project_id": "3f1e0c9a-0000-4000-8000-000000000001"})).MustOK(t, &cred)
	credID := fmt.Sprint(cred["id"])
	for _, r := range []testkit.Response{
		rr.Call(t, req("read", "credentials", "token", tok, "entity", credID)),
		rr.Call(t, req("list", "credentials", "token", tok)),
		rr.Call(t, req("update", "credentials", "token", tok, "entity", credID, "payload", map[string]any{"description": "Home 2"})),
	} {
		r.MustOK(t, nil)
		if strings.Contains(string(r.Body), secret) || strings.Contains(string(r.Body), "secret") {
			t.Fatalf("credential response leaks the secret: %s", r.Body)
		}
	}
	rr.Call(t, req("read", "credentials", "token", tok, "entity", credID)).MustOK(t, &cred)
	if cred["description"] != "Home 2" || cred["is_authenticated"] != false {
		t.Fatalf("credential = %v", cred)
	}

	// cameras
	cam := seedCamera(t, a, "Driveway")
	camID := fmt.Sprint(cam.ID)
	var camView map[string]any
	rr.Call(t, req("update", "cameras", "token", tok, "entity", camID, "payload",
		map[string]any{"mtx_path": "driveway", "is_enabled": true})).MustOK(t, &camView)
	if camView["mtx_path"] != "driveway" || camView["is_enabled"] != true {
		t.Fatalf("camera = %v", camView)
	}
	var camList struct {
		Total int
		Items []map[string]any
	}
	rr.Call(t, req("list", "cameras", "token", tok, "payload", map[string]any{"search": "drive", "page": 1, "itemsPerPage": 10})).MustOK(t, &camList)
	if camList.Total != 1 || camList.Items[0]["name"] != "Driveway" {
		t.Fatalf("cameras = %+v", camList)
	}

	// The token can also come as an MQTT v5 user property.
	body, _ := json.Marshal(req("read", "cameras", "entity", camID))
	r := rr.CallRaw(t, body, paho.UserProperties{{Key: "authorization", Value: "Bearer " + tok}})
	r.MustOK(t, &camView)
	if camView["name"] != "Driveway" {
		t.Fatalf("read by user property = %s", r.Body)
	}
	if ct := r.Msg.Properties.ContentType; ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
}

func TestAPIOverEmbeddedBroker(t *testing.T) {
	a := startApp(t, nil)
	exerciseAPI(t, a, a.MQTTAddr())
}

func TestAPIOverMosquitto(t *testing.T) {
	m := testkit.StartMosquitto(t)
	a := startApp(t, func(c *config.Config) { c.MQTTURL = m.URL() })
	if a.MQTTAddr() != "" {
		t.Fatal("an external broker must not start the embedded one")
	}
	testkit.Eventually(t, 10*time.Second, "subscription on mosquitto", a.mqtt.Ready)
	exerciseAPI(t, a, m.Addr)
}
