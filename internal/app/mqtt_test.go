package app

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestMosquittoRR drives the API with the real mosquitto_rr client (MQTT v5
// Response Topic and Correlation Data) as the README's worked example does.
func TestMosquittoRR(t *testing.T) {
	bin := testkit.RequireTool(t, "mosquitto_rr", "mosquitto-clients")
	a := startApp(t, nil)
	host, port, _ := strings.Cut(a.MQTTAddr(), ":")
	rr := func(payload string, extra ...string) []byte {
		t.Helper()
		args := append([]string{"-h", host, "-p", port, "-u", "admin", "-P", adminPassword, "-t", "nestmtx/requests", "-e", "rr/reply/" + t.Name(),
			"-m", payload, "-W", "10", "-D", "PUBLISH", "correlation-data", "corr-1"}, extra...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_rr %s: %v\n%s", payload, err, out)
		}
		return out
	}
	var login struct{ Bearer string }
	out := rr(`{"command":"create","module":"auth","payload":{"username":"admin","password":"` + adminPassword + `"}}`)
	if err := json.Unmarshal(out, &login); err != nil || login.Bearer == "" {
		t.Fatalf("login via mosquitto_rr: %s", out)
	}
	var users struct {
		Total int
		Items []struct{ Username string }
	}
	out = rr(`{"command":"list","module":"users"}`, "-D", "PUBLISH", "user-property", "authorization", "Bearer "+login.Bearer)
	if err := json.Unmarshal(out, &users); err != nil || users.Total != 1 || users.Items[0].Username != "admin" {
		t.Fatalf("users list via mosquitto_rr: %s", out)
	}
	out = rr(`{"command":"list","module":"users","token":"` + login.Bearer + `"}`)
	if !strings.Contains(string(out), `"admin"`) {
		t.Fatalf("token field: %s", out)
	}
}

// TestBrokerRestart stops the external Mosquitto under a running daemon and
// starts it again: the daemon must come back online and answer, by itself.
func TestBrokerRestart(t *testing.T) {
	m := testkit.StartMosquitto(t)
	a := startApp(t, func(c *config.Config) { c.MQTTURL = m.URL() })
	testkit.Eventually(t, 10*time.Second, "subscription on mosquitto", a.mqtt.Ready)
	cam := seedCamera(t, a, "Porch")

	c := testkit.Dial(t, m.Addr, "", "")
	status := c.Subscribe("nestmtx/status")
	if p := testkit.Next(t, status, 10*time.Second); string(p.Payload) != "online" || !p.Retain {
		t.Fatalf("status %q retain=%v", p.Payload, p.Retain)
	}

	m.Stop()
	testkit.Eventually(t, 10*time.Second, "the daemon to notice the broker is gone", func() bool { return !a.mqtt.Connected() })
	m.Start()

	// Mosquitto runs without persistence here, so a retained "online" after
	// the restart can only come from the daemon republishing it.
	c2 := testkit.Dial(t, m.Addr, "", "")
	status2 := c2.Subscribe("nestmtx/status")
	deadline := time.After(40 * time.Second)
	for online := false; !online; {
		select {
		case p := <-status2:
			online = string(p.Payload) == "online"
		case <-deadline:
			t.Fatal("the daemon did not republish online after the broker restart")
		}
	}
	// Ready comes after the states were republished (and acknowledged): a
	// client arriving then gets the state as a retained message.
	testkit.Eventually(t, 10*time.Second, "resubscription", a.mqtt.Ready)
	c3 := testkit.Dial(t, m.Addr, "", "")
	p := testkit.Next(t, c3.Subscribe("nestmtx/state/camera/+"), 10*time.Second)
	if p.Topic != fmt.Sprintf("nestmtx/state/camera/%d", cam.ID) || !p.Retain {
		t.Fatalf("retained state not republished: %s %s", p.Topic, p.Payload)
	}
	rr, err := c2.NewRR("nestmtx/requests")
	if err != nil {
		t.Fatal(err)
	}
	rr.Login(t, "admin", adminPassword)
}

// TestEventsAndState checks the contract's event topics and payloads, and
// the retained per-camera state through its life.
func TestEventsAndState(t *testing.T) {
	a := startApp(t, func(c *config.Config) { c.MQTTBaseTopic = "home/nest" })
	cam := seedCamera(t, a, "Garden")
	c, rr := client(t, a.MQTTAddr(), "home/nest")
	tok := rr.Login(t, "admin", adminPassword)

	perEntity := c.Subscribe(fmt.Sprintf("home/nest/events/camera/%d/ready", cam.ID))
	stream := c.Subscribe("home/nest/stream/camera/ready")
	a.Bus().Emit(events.Event{Domain: "camera", Entity: events.ID(cam.ID), Event: events.CameraReady,
		Details: map[string]any{"path": "garden", "source_type": "rtspsSource", "source_id": "", "tracks": []string{"H264"}}})
	for _, ch := range []<-chan *pahoPublish{perEntity, stream} {
		p := testkit.Next(t, ch, 10*time.Second)
		var ev struct {
			Domain  string         `json:"domain"`
			Entity  uint64         `json:"entity"`
			Event   string         `json:"event"`
			Details map[string]any `json:"details"`
			At      time.Time      `json:"at"`
		}
		if err := json.Unmarshal(p.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Domain != "camera" || ev.Entity != cam.ID || ev.Event != "ready" || ev.Details["path"] != "garden" ||
			time.Since(ev.At) > time.Minute || p.Retain || p.QoS != 1 {
			t.Fatalf("event on %s = %s (retain %v, qos %d)", p.Topic, p.Payload, p.Retain, p.QoS)
		}
	}
	nullEntity := c.Subscribe("home/nest/events/credentials/null/unauthenticated")
	a.Bus().Emit(events.Event{Domain: "credentials", Event: events.CredentialsUnauthenticated})
	if p := testkit.Next(t, nullEntity, 10*time.Second); !strings.Contains(string(p.Payload), `"entity":null`) {
		t.Fatalf("null entity event %s", p.Payload)
	}

	// The retained state: a new subscriber gets it at once, it follows
	// updates, and deleting the camera clears it.
	topic := fmt.Sprintf("home/nest/state/camera/%d", cam.ID)
	readState := func(ch <-chan *pahoPublish) map[string]any {
		t.Helper()
		p := testkit.Next(t, ch, 10*time.Second)
		if len(p.Payload) == 0 {
			return nil
		}
		var st map[string]any
		if err := json.Unmarshal(p.Payload, &st); err != nil {
			t.Fatalf("state %s: %v", p.Payload, err)
		}
		return st
	}
	st := readState(c.Subscribe(topic))
	if st["status"] != "unconfigured" || st["ready"] != false {
		t.Fatalf("initial state %v", st)
	}
	live := c.Subscribe(topic)
	readState(live) // the retained copy
	rr.Call(t, req("update", "cameras", "token", tok, "entity", fmt.Sprint(cam.ID), "payload",
		map[string]any{"mtx_path": "garden", "is_enabled": true})).MustOK(t, nil)
	// The seeded credential was never authorized with Google: the camera
	// says so instead of pretending to be startable.
	if st := readState(live); st["status"] != "unauthenticated" || st["path"] != "garden" {
		t.Fatalf("state after enabling %v", st)
	}
	rr.Call(t, req("delete", "cameras", "token", tok, "entity", fmt.Sprint(cam.ID))).MustOK(t, nil)
	if st := readState(live); st != nil {
		t.Fatalf("deleting must clear the retained state, got %v", st)
	}
	c3 := testkit.Dial(t, a.MQTTAddr(), "admin", adminPassword)
	gone := c3.Subscribe(topic)
	select {
	case p := <-gone:
		t.Fatalf("a deleted camera still has retained state: %s", p.Payload)
	case <-time.After(300 * time.Millisecond): // absence has no event to wait for
	}
}

// TestEmbeddedBrokerAuth checks that a configured username and password are
// required on the embedded broker, and that the daemon itself still works.
func TestEmbeddedBrokerAuth(t *testing.T) {
	a := startApp(t, func(c *config.Config) { c.MQTTUsername, c.MQTTPassword = "ha", "mqtt-secret" })
	if _, err := testkit.DialErr(a.MQTTAddr(), "", "", "anon"); err == nil {
		t.Fatal("anonymous client accepted")
	}
	if _, err := testkit.DialErr(a.MQTTAddr(), "ha", "wrong", "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	c := testkit.Dial(t, a.MQTTAddr(), "ha", "mqtt-secret")
	rr, err := c.NewRR("nestmtx/requests")
	if err != nil {
		t.Fatal(err)
	}
	rr.Login(t, "admin", adminPassword)
}
