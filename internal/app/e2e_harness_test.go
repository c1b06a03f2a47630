package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// e2e is a daemon wired to a simulated Google over real HTTP and RTSPS
// sockets, with an authorized credential and its cameras synced.
type e2e struct {
	t      testing.TB
	app    *App
	sim    *nestsim.Sim
	rr     *testkit.RR
	mqtt   *testkit.Client
	token  string
	credID uint64
	events <-chan *paho.Publish
	cams   map[string]uint64 // camera name -> id
}

func startE2E(t testing.TB, simOpts nestsim.Options, mutate func(*config.Config)) *e2e {
	return startE2EWith(t, simOpts, mutate, nil)
}

// startE2EWith also lets the test adjust the App before it starts.
func startE2EWith(t testing.TB, simOpts nestsim.Options, mutate func(*config.Config), adjust func(*App)) *e2e {
	t.Helper()
	sim, err := nestsim.Start(simOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	caFile := filepath.Join(t.TempDir(), "sim-ca.pem")
	if err := sim.WriteCAFile(caFile); err != nil {
		t.Fatal(err)
	}
	a := startAppWith(t, func(c *config.Config) {
		c.GoogleAuthURL, c.GoogleTokenURL, c.GoogleSDMURL, c.GoogleCAFile = sim.AuthURL(), sim.TokenURL(), sim.SDMURL(), caFile
		c.OnDemandCloseAfter = time.Second
		c.OnDemandStartTimeout = 10 * time.Second
		if mutate != nil {
			mutate(c)
		}
	}, adjust)
	e := &e2e{t: t, app: a, sim: sim, cams: map[string]uint64{}}
	brokerAddr := a.MQTTAddr()
	if brokerAddr == "" { // an external broker
		u, err := url.Parse(a.cfg.MQTTURL)
		if err != nil {
			t.Fatal(err)
		}
		brokerAddr = u.Host
		testkit.Eventually(t, 10*time.Second, "the daemon's subscription on the broker", a.mqtt.Ready)
	}
	e.mqtt, e.rr = client(t, brokerAddr, "nestmtx")
	e.events = e.mqtt.Subscribe("nestmtx/events/#")
	e.token = e.rr.Login(t, "admin", adminPassword)
	return e
}

// call is an authenticated API request that must succeed.
func (e *e2e) call(command, module string, kv ...any) json.RawMessage {
	e.t.Helper()
	r := e.rr.Call(e.t, req(command, module, append(kv, "token", e.token)...))
	r.MustOK(e.t, nil)
	return r.Body
}

// authorize creates a credential for the simulator's OAuth client and runs
// the consent flow as a browser would, landing on the daemon's callback.
func (e *e2e) authorize() {
	e.t.Helper()
	var cred struct{ ID uint64 }
	body := e.call("create", "credentials", "payload", map[string]any{"description": "Home",
		"oauth_client_id": e.sim.ClientID(), "oauth_client_secret": e.sim.ClientSecret(), "dac_project_id": e.sim.ProjectID()})
	if err := json.Unmarshal(body, &cred); err != nil {
		e.t.Fatal(err)
	}
	e.credID = cred.ID
	e.consent(cred.ID, "authenticated")
}

// consent runs Google's consent as a browser would, landing on the
// daemon's callback, and waits for the credential's event.
func (e *e2e) consent(credID uint64, event string) {
	e.t.Helper()
	cred := struct{ ID uint64 }{credID}
	redirect := "http://" + e.app.HTTPAddr() + "/oauth/callback"
	var authURL string
	raw := e.call("update", "credentials", "entity", fmt.Sprint(cred.ID), "payload", map[string]any{"redirect_uri": redirect})
	if err := json.Unmarshal(raw, &authURL); err != nil {
		e.t.Fatal(err)
	}
	// Copied from mosquitto_rr's output into a browser, it must work as
	// it is: no \u0026 for &.
	if !strings.Contains(string(raw), "&") || strings.Contains(string(raw), `\u0026`) {
		e.t.Fatalf("the sign-in address is escaped in the reply: %s", raw)
	}
	if err := testkit.ConsentAsBrowser(authURL, redirect); err != nil {
		e.t.Fatal(err)
	}
	e.waitEvent("credentials", cred.ID, event)
}

// sync lists the cameras and enables the named ones at the given paths.
func (e *e2e) sync(paths map[string]string) {
	e.t.Helper()
	e.call("create", "cameras", "payload", map[string]any{"sync": true, "credential_id": e.credID})
	var list struct {
		Items []struct {
			ID   uint64 `json:"id"`
			Name string `json:"name"`
		} `json:"items"`
	}
	if err := json.Unmarshal(e.call("list", "cameras", "payload", map[string]any{"itemsPerPage": 500}), &list); err != nil {
		e.t.Fatal(err)
	}
	for _, c := range list.Items {
		e.cams[c.Name] = c.ID
	}
	for name, path := range paths {
		id, ok := e.cams[name]
		if !ok {
			e.t.Fatalf("camera %q not synced (have %v)", name, e.cams)
		}
		e.call("update", "cameras", "entity", fmt.Sprint(id), "payload", map[string]any{"mtx_path": path, "is_enabled": true})
	}
}

// event is a decoded MQTT event.
type event struct {
	Domain  string         `json:"domain"`
	Entity  *uint64        `json:"entity"`
	Event   string         `json:"event"`
	Details map[string]any `json:"details"`
	At      time.Time      `json:"at"`
}

// nextEvent returns the next event from the per-entity topics.
func (e *e2e) nextEvent(timeout time.Duration) event {
	e.t.Helper()
	p := testkit.Next(e.t, e.events, timeout)
	var ev event
	if err := json.Unmarshal(p.Payload, &ev); err != nil {
		e.t.Fatalf("event %s: %v", p.Payload, err)
	}
	return ev
}

// waitEvent skips events until the wanted one arrives.
func (e *e2e) waitEvent(domain string, entity uint64, name string) event {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ev := e.nextEvent(time.Until(deadline))
		if ev.Domain == domain && ev.Event == name && ev.Entity != nil && *ev.Entity == entity {
			return ev
		}
	}
	e.t.Fatalf("no %s/%d/%s event", domain, entity, name)
	return event{}
}

// rtspURL is a path's URL on the daemon, with the admin's login in its
// user info as Frigate's and Home Assistant's configurations carry it.
func (e *e2e) rtspURL(path string) string {
	return rtspURLAs(e.app, url.UserPassword("admin", adminPassword), path)
}

// rtspURLAs is a path's URL on a with user's login (nil: none). The
// password is escaped as a URL needs it (gortsplib and ffmpeg unescape it).
func rtspURLAs(a *App, user *url.Userinfo, path string) string {
	u := url.URL{Scheme: "rtsp", User: user, Host: a.RTSPAddr(), Path: "/" + path}
	return u.String()
}

func waitCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
