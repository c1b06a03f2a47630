package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nestmtx/nestmtx/internal/config"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestBadInputs sends every kind of bad request the contract names and checks
// that each gets the right code on the right topic, and that the daemon goes
// on serving after each one.
func TestBadInputs(t *testing.T) {
	a := startApp(t, nil)
	c, rr := client(t, a.MQTTAddr(), "nestmtx")
	replies := c.Subscribe("nestmtx/responses/#")
	failures := c.Subscribe("nestmtx/failures")
	tok := rr.Login(t, "admin", adminPassword)

	camA, camB := seedCamera(t, a, "A"), seedCamera(t, a, "B")
	if _, err := a.Store().UpdateCamera(camA.ID, func(c *store.Camera) error { c.Path = "taken"; return nil }); err != nil {
		t.Fatal(err)
	}
	admin, err := a.Store().Authenticate("admin", adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	expired, _, err := a.Store().IssueToken(admin.ID, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the token to expire", func() bool {
		_, _, err := a.Store().LookupToken(expired)
		return errors.Is(err, store.ErrTokenInvalid)
	})

	big := `{"command":"list","module":"version","requestId":"r-big","pad":"` + strings.Repeat("x", 1<<20) + `"}`
	cases := []struct {
		name     string
		payload  string
		topic    string // where the answer must arrive
		code     string
		detail   string // a details path that must be present
		noReplay bool
	}{
		{name: "not JSON", payload: `hello {`, topic: "nestmtx/failures", code: "BAD_REQUEST"},
		{name: "JSON array", payload: `[{"command":"list"}]`, topic: "nestmtx/failures", code: "BAD_REQUEST"},
		{name: "truncated JSON", payload: `{"command":"list","requestId":"r-trunc"`, topic: "nestmtx/failures", code: "BAD_REQUEST"},
		{name: "wrong types", payload: `{"command":5,"module":["users"],"requestId":"r-types"}`,
			topic: "nestmtx/responses/r-types", code: "BAD_REQUEST", detail: "command"},
		{name: "wrong entity type", payload: `{"command":"read","module":"users","entity":true,"requestId":"r-etype","token":"` + tok + `"}`,
			topic: "nestmtx/responses/r-etype", code: "BAD_REQUEST", detail: "entity"},
		{name: "payload not an object", payload: `{"command":"create","module":"users","payload":"x","requestId":"r-pl"}`,
			topic: "nestmtx/responses/r-pl", code: "BAD_REQUEST", detail: "payload"},
		{name: "unknown module", payload: `{"command":"list","module":"toasters","requestId":"r-mod"}`,
			topic: "nestmtx/responses/r-mod", code: "NOT_FOUND"},
		{name: "unknown command", payload: `{"command":"explode","module":"users","requestId":"r-cmd"}`,
			topic: "nestmtx/responses/r-cmd", code: "NOT_FOUND"},
		{name: "command the module lacks", payload: `{"command":"delete","module":"version","entity":"1","requestId":"r-cmd2"}`,
			topic: "nestmtx/responses/r-cmd2", code: "NOT_FOUND"},
		{name: "entity on list", payload: `{"command":"list","module":"users","entity":"1","requestId":"r-ent","token":"` + tok + `"}`,
			topic: "nestmtx/responses/r-ent", code: "BAD_REQUEST", detail: "entity"},
		{name: "entity missing on read", payload: `{"command":"read","module":"users","requestId":"r-noent","token":"` + tok + `"}`,
			topic: "nestmtx/responses/r-noent", code: "BAD_REQUEST", detail: "entity"},
		{name: "no requestId, no Response Topic", payload: `{"command":"list","module":"version"}`,
			topic: "nestmtx/failures", code: "BAD_REQUEST", detail: "requestId"},
		{name: "invalid requestId", payload: `{"command":"list","module":"version","requestId":"a/b#"}`,
			topic: "nestmtx/failures", code: "BAD_REQUEST", detail: "requestId"},
		{name: "1 MiB payload", payload: big, topic: "nestmtx/responses/r-big", code: "PAYLOAD_TOO_LARGE"},
		{name: "invalid mtx_path", payload: fmt.Sprintf(`{"command":"update","module":"cameras","entity":"%d","payload":{"mtx_path":"front door!"},"requestId":"r-path","token":"%s"}`, camB.ID, tok),
			topic: "nestmtx/responses/r-path", code: "BAD_REQUEST", detail: "payload.mtx_path"},
		{name: "mtx_path of dots", payload: fmt.Sprintf(`{"command":"update","module":"cameras","entity":"%d","payload":{"mtx_path":".."},"requestId":"r-dots","token":"%s"}`, camB.ID, tok),
			topic: "nestmtx/responses/r-dots", code: "BAD_REQUEST", detail: "payload.mtx_path"},
		{name: "mtx_path of a tilde", payload: fmt.Sprintf(`{"command":"update","module":"cameras","entity":"%d","payload":{"mtx_path":"~"},"requestId":"r-tilde","token":"%s"}`, camB.ID, tok),
			topic: "nestmtx/responses/r-tilde", code: "BAD_REQUEST", detail: "payload.mtx_path"},
		{name: "duplicate mtx_path", payload: fmt.Sprintf(`{"command":"update","module":"cameras","entity":"%d","payload":{"mtx_path":"taken"},"requestId":"r-dup","token":"%s"}`, camB.ID, tok),
			topic: "nestmtx/responses/r-dup", code: "CONFLICT"},
		{name: "unknown payload field", payload: fmt.Sprintf(`{"command":"update","module":"cameras","entity":"%d","payload":{"is_enable":true},"requestId":"r-typo","token":"%s"}`, camB.ID, tok),
			topic: "nestmtx/responses/r-typo", code: "BAD_REQUEST", detail: "payload.is_enable"},
		{name: "enable without a path", payload: fmt.Sprintf(`{"command":"update","module":"cameras","entity":"%d","payload":{"is_enabled":true},"requestId":"r-nopath","token":"%s"}`, camB.ID, tok),
			topic: "nestmtx/responses/r-nopath", code: "BAD_REQUEST", detail: "payload.is_enabled"},
		{name: "unknown camera", payload: `{"command":"read","module":"cameras","entity":"999","requestId":"r-nocam","token":"` + tok + `"}`,
			topic: "nestmtx/responses/r-nocam", code: "NOT_FOUND"},
		{name: "non-numeric id", payload: `{"command":"read","module":"cameras","entity":"seven","requestId":"r-nan","token":"` + tok + `"}`,
			topic: "nestmtx/responses/r-nan", code: "BAD_REQUEST", detail: "entity"},
		{name: "duplicate username", payload: `{"command":"create","module":"users","payload":{"username":"ADMIN","password":"long enough"},"requestId":"r-user","token":"` + tok + `"}`,
			topic: "nestmtx/responses/r-user", code: "CONFLICT"},
		{name: "short password", payload: `{"command":"create","module":"users","payload":{"username":"carol","password":"abc"},"requestId":"r-pw","token":"` + tok + `"}`,
			topic: "nestmtx/responses/r-pw", code: "BAD_REQUEST", detail: "payload.password"},
		{name: "expired token", payload: `{"command":"list","module":"users","requestId":"r-exp","token":"` + expired + `"}`,
			topic: "nestmtx/responses/r-exp", code: "UNAUTHORIZED"},
		{name: "garbage token", payload: `{"command":"list","module":"users","requestId":"r-garb","token":"nope"}`,
			topic: "nestmtx/responses/r-garb", code: "UNAUTHORIZED"},
		{name: "no token", payload: `{"command":"list","module":"cameras","requestId":"r-notok"}`,
			topic: "nestmtx/responses/r-notok", code: "UNAUTHORIZED"},
		{name: "wrong password", payload: `{"command":"create","module":"auth","payload":{"username":"admin","password":"wrong"},"requestId":"r-wrong"}`,
			topic: "nestmtx/responses/r-wrong", code: "UNAUTHORIZED"},
		{name: "unknown user", payload: `{"command":"create","module":"auth","payload":{"username":"mallory","password":"wrong"},"requestId":"r-who"}`,
			topic: "nestmtx/responses/r-who", code: "UNAUTHORIZED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.Publish(&paho.Publish{Topic: "nestmtx/requests", Payload: []byte(tc.payload), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			ch := replies
			if tc.topic == "nestmtx/failures" {
				ch = failures
			}
			msg := testkit.Next(t, ch, 10*time.Second)
			if msg.Topic != tc.topic {
				t.Fatalf("answer on %s, want %s: %s", msg.Topic, tc.topic, msg.Payload)
			}
			if st := msg.Properties.User.Get("status"); st != "error" {
				t.Fatalf("status property %q", st)
			}
			var body struct {
				Error struct {
					Code    string `json:"code"`
					Status  int    `json:"status"`
					Message string `json:"message"`
					Details []struct {
						Path string `json:"path"`
					} `json:"details"`
				} `json:"error"`
			}
			if err := json.Unmarshal(msg.Payload, &body); err != nil {
				t.Fatalf("error body is not JSON: %s", msg.Payload)
			}
			if body.Error.Code != tc.code || body.Error.Status == 0 || body.Error.Message == "" {
				t.Fatalf("got %s, want code %s", msg.Payload, tc.code)
			}
			if tc.detail != "" {
				found := false
				for _, d := range body.Error.Details {
					found = found || d.Path == tc.detail
				}
				if !found {
					t.Fatalf("no detail for %s in %s", tc.detail, msg.Payload)
				}
			}
			if len(msg.Payload) > 4096 {
				t.Fatalf("error answer is %d bytes: it must not echo the request", len(msg.Payload))
			}
			// The daemon still serves the next request.
			rr.Call(t, req("list", "version")).MustOK(t, nil)
		})
	}
}

// TestResponseTopicWinsOverRequestID checks that a v5 requester gets its
// answer, with its correlation data, on its own topic even for bad input.
func TestResponseTopicRouting(t *testing.T) {
	a := startApp(t, nil)
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	r := rr.CallRaw(t, []byte("not json"), nil)
	if code, status, _ := r.Error(); code != "BAD_REQUEST" || status != 400 {
		t.Fatalf("got %s", r)
	}
	r = rr.Call(t, req("list", "version", "requestId", "also-set"))
	r.MustOK(t, nil)
	if r.Msg.Topic == "nestmtx/responses/also-set" {
		t.Fatal("the Response Topic must take precedence over requestId")
	}
}

// TestRequestIDPath is the contract's path for MQTT 3.1.1-style clients
// (and Home Assistant automations): no Response Topic, a requestId.
func TestRequestIDPath(t *testing.T) {
	a := startApp(t, nil)
	c, _ := client(t, a.MQTTAddr(), "nestmtx")
	ch := c.Subscribe("nestmtx/responses/login-1")
	err := c.Publish(&paho.Publish{Topic: "nestmtx/requests", QoS: 0, Payload: []byte(
		`{"command":"create","module":"auth","requestId":"login-1","payload":{"username":"admin","password":"` + adminPassword + `"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	msg := testkit.Next(t, ch, 10*time.Second)
	var res struct{ Bearer string }
	if err := json.Unmarshal(msg.Payload, &res); err != nil || res.Bearer == "" {
		t.Fatalf("login reply %s", msg.Payload)
	}
	if msg.Properties.User.Get("status") != "ok" {
		t.Fatalf("status %q", msg.Properties.User.Get("status"))
	}
}

func TestLoginRateLimit(t *testing.T) {
	a := startApp(t, func(c *configT) { c.LoginAttemptsPerMinute = 3 })
	_, rr := client(t, a.MQTTAddr(), "nestmtx")
	login := func(pw string) string {
		code, _, _ := rr.Call(t, req("create", "auth", "payload", map[string]any{"username": "admin", "password": pw})).Error()
		return code
	}
	for i := 0; i < 3; i++ {
		if code := login("wrong"); code != "UNAUTHORIZED" {
			t.Fatalf("attempt %d: %s", i, code)
		}
	}
	if code := login(adminPassword); code != "TOO_MANY_REQUESTS" {
		t.Fatalf("after 3 failures, even the right password must wait: %s", code)
	}
	// Another username is not affected.
	if code, _, _ := rr.Call(t, req("create", "auth", "payload", map[string]any{"username": "eve", "password": "x"})).Error(); code != "UNAUTHORIZED" {
		t.Fatalf("other username: %s", code)
	}
}

type configT = config.Config
