package app

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/supervisor"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// checkHAConfig validates a device-discovery config as Home Assistant reads
// it (its MQTT documentation: "Device discovery payload" and each
// platform's required options): a device with identifiers and a name, an
// origin, availability from B/status, and per component a platform, a
// name, a unique unique_id, a state_topic where the platform reads one
// and a command_topic where it writes one. It returns the device name and
// the components by key.
func checkHAConfig(t *testing.T, payload []byte) (string, map[string]map[string]any) {
	t.Helper()
	var cfg struct {
		Dev struct {
			IDs  []string `json:"ids"`
			Name string   `json:"name"`
		} `json:"dev"`
		O struct {
			Name string `json:"name"`
			SW   string `json:"sw"`
			URL  string `json:"url"`
		} `json:"o"`
		Availability []struct {
			Topic        string `json:"topic"`
			Available    string `json:"payload_available"`
			NotAvailable string `json:"payload_not_available"`
		} `json:"availability"`
		Cmps map[string]map[string]any `json:"cmps"`
	}
	if err := json.Unmarshal(payload, &cfg); err != nil {
		t.Fatalf("config %s: %v", payload, err)
	}
	if len(cfg.Dev.IDs) == 0 || cfg.Dev.Name == "" || cfg.O.Name != "nestmtx" || cfg.O.URL == "" {
		t.Errorf("device or origin: %s", payload)
	}
	if len(cfg.Availability) != 1 || cfg.Availability[0].Topic != "nestmtx/status" ||
		cfg.Availability[0].Available != "online" || cfg.Availability[0].NotAvailable != "offline" {
		t.Errorf("availability: %+v", cfg.Availability)
	}
	platforms := map[string]string{"streaming": "binary_sensor", "readers": "sensor", "bitrate": "sensor",
		"session_expires": "sensor", "last_error": "sensor", "enabled": "switch", "persistent": "switch", "restart": "button"}
	if len(cfg.Cmps) != len(platforms) {
		t.Errorf("%d components, want %d", len(cfg.Cmps), len(platforms))
	}
	uids := map[string]bool{}
	for key, c := range cfg.Cmps {
		str := func(k string) string { s, _ := c[k].(string); return s }
		p := str("p")
		if p != platforms[key] {
			t.Errorf("component %s: platform %q, want %q", key, p, platforms[key])
		}
		if str("name") == "" || str("unique_id") == "" || uids[str("unique_id")] {
			t.Errorf("component %s: name %q, unique_id %q", key, str("name"), str("unique_id"))
		}
		uids[str("unique_id")] = true
		switch p {
		case "binary_sensor", "sensor":
			if str("state_topic") == "" {
				t.Errorf("component %s has no state_topic", key)
			}
		case "switch":
			if str("state_topic") == "" || str("command_topic") == "" {
				t.Errorf("component %s: state_topic %q, command_topic %q", key, str("state_topic"), str("command_topic"))
			}
		case "button":
			if str("command_topic") == "" {
				t.Errorf("component %s has no command_topic", key)
			}
		}
	}
	return cfg.Dev.Name, cfg.Cmps
}

func configTopic(r store.Camera) string { return "homeassistant/device/" + discoveryKey(r) + "/config" }

// nextOnTopic waits for the next message on topic, skipping others.
func nextOnTopic(t *testing.T, ch <-chan *paho.Publish, topic string) *paho.Publish {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("nothing on %s", topic)
		}
		if p := testkit.Next(t, ch, left); p.Topic == topic {
			return p
		}
	}
}

// waitPayload skips ch's messages until topic carries want.
func waitPayload(t *testing.T, ch <-chan *paho.Publish, topic, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("%s never became %s", topic, want)
		}
		if p := testkit.Next(t, ch, left); p.Topic == topic && string(p.Payload) == want {
			return
		}
	}
}

// configsOf waits until each camera's config has arrived, checks them, and
// returns the device names by topic.
func configsOf(t *testing.T, ch <-chan *paho.Publish, rows []store.Camera) map[string]string {
	t.Helper()
	want := map[string]bool{}
	for _, r := range rows {
		want[configTopic(r)] = true
	}
	names := map[string]string{}
	deadline := time.Now().Add(20 * time.Second)
	for len(names) < len(want) {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("configs of %d of %d cameras", len(names), len(want))
		}
		p := testkit.Next(t, ch, left)
		if want[p.Topic] && len(p.Payload) > 0 {
			names[p.Topic], _ = checkHAConfig(t, p.Payload)
		}
	}
	return names
}

// retainedUnder lists the topics with a retained message under filter, as
// a newcomer finds them. The marker, published after subscribing, comes
// after every retained message, and the test client hands each message to
// its subscriptions in the order it arrives: once the marker is in, the
// retained messages are all in.
func retainedUnder(t *testing.T, addr, user, pw, filter, marker string) []string {
	t.Helper()
	c := testkit.Dial(t, addr, user, pw)
	// The marker first and at QoS 0: packet ids the client picks while the
	// retained messages are in flight to it would collide with the
	// embedded broker's (it keeps both in one table).
	done := c.Subscribe(marker)
	ch := c.Subscribe(filter)
	if err := c.Publish(&paho.Publish{Topic: marker, QoS: 0, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	testkit.Next(t, done, 10*time.Second)
	var topics []string
	for {
		select {
		case p := <-ch:
			if p.Topic != marker {
				topics = append(topics, p.Topic)
			}
		default:
			slices.Sort(topics)
			return topics
		}
	}
}

func command(c *testkit.Client, id uint64, action, payload string) error {
	return c.Publish(&paho.Publish{Topic: fmt.Sprintf("nestmtx/command/camera/%d/%s", id, action), QoS: 1, Payload: []byte(payload)})
}

func settingsTopic(id uint64) string { return fmt.Sprintf("nestmtx/config/camera/%d", id) }

// TestHomeAssistantDiscovery: on the embedded broker, every synced camera
// is a valid Home Assistant device; its Enabled switch disables the
// camera (its RTSP path then 404s), a viewer's command is refused and
// ignored, Always on and Restart stream act on the stream, Home
// Assistant's birth republishes the configs, and deleting a camera clears
// its config.
func TestHomeAssistantDiscovery(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, nil)
	ha := e.mqtt // the admin's login, as Home Assistant would use it to command
	configs := ha.Subscribe("homeassistant/#")
	settings := ha.Subscribe("nestmtx/config/#")
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door", "Backyard": "backyard"})
	rows, err := e.app.Store().ListCameras()
	if err != nil {
		t.Fatal(err)
	}
	names := configsOf(t, configs, rows)
	front, back := e.cams["Front Door"], e.cams["Backyard"]
	frontRow, _ := e.app.Store().GetCamera(front)
	if names[configTopic(frontRow)] != "Front Door" {
		t.Errorf("device names %v", names)
	}
	waitPayload(t, settings, settingsTopic(front), `{"is_enabled":true,"is_persistent":false}`)
	if st, reason := describeReason(t, e.rtspURL("front-door")); st != base.StatusOK {
		t.Fatalf("front-door before the switch: %d %s", st, reason)
	}

	// The Enabled switch.
	if err := command(ha, front, "enabled", "OFF"); err != nil {
		t.Fatal(err)
	}
	if p := nextOnTopic(t, settings, settingsTopic(front)); string(p.Payload) != `{"is_enabled":false,"is_persistent":false}` {
		t.Fatalf("settings after OFF: %s", p.Payload)
	}
	if st, reason := describeReason(t, e.rtspURL("front-door")); st != base.StatusNotFound {
		t.Fatalf("a disabled camera's path: %d %s, want 404", st, reason)
	}

	// A viewer's command is refused, and never carried out: the admin's
	// next command is the next change.
	e.call("create", "users", "payload", map[string]any{"username": "viewer", "password": "viewer-pw"})
	viewer := testkit.Dial(t, e.app.MQTTAddr(), "viewer", "viewer-pw")
	if err := command(viewer, front, "enabled", "ON"); err == nil {
		t.Error("the broker acknowledged a viewer's command")
	}
	if err := command(ha, front, "persistent", "ON"); err != nil {
		t.Fatal(err)
	}
	if p := nextOnTopic(t, settings, settingsTopic(front)); string(p.Payload) != `{"is_enabled":false,"is_persistent":true}` {
		t.Fatalf("settings after a viewer's ON and an admin's persistent ON: %s", p.Payload)
	}
	if row, _ := e.app.Store().GetCamera(front); row.IsEnabled {
		t.Fatal("a viewer enabled the camera")
	}
	if st, _ := describeReason(t, e.rtspURL("front-door")); st != base.StatusNotFound {
		t.Fatalf("front-door after a viewer's command: %d", st)
	}

	// Always on starts the stream; Restart stream generates a new Google
	// session and hands over to it (the stream stays ready: a swap).
	if err := command(ha, back, "persistent", "ON"); err != nil {
		t.Fatal(err)
	}
	e.waitEvent("camera", back, "ready")
	generates := e.sim.CountCalls("GenerateRtspStream")
	if err := command(ha, back, "restart", "PRESS"); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, e.app, back, "the restart's swap", func(s supervisor.State) bool { return s.Stats.Swaps >= 1 })
	if !st.Ready || !strings.Contains(st.Stats.LastSwapReason, "restart") {
		t.Fatalf("after the restart: ready %v, last swap %q", st.Ready, st.Stats.LastSwapReason)
	}
	if g := e.sim.CountCalls("GenerateRtspStream"); g <= generates {
		t.Fatalf("%d Generates after the restart, %d before", g, generates)
	}

	// Home Assistant's birth: every config again.
	if err := ha.Publish(&paho.Publish{Topic: "homeassistant/status", QoS: 1, Payload: []byte("online")}); err != nil {
		t.Fatal(err)
	}
	configsOf(t, configs, rows)

	// Deleting a camera removes its device.
	backRow, _ := e.app.Store().GetCamera(back)
	e.call("delete", "cameras", "entity", fmt.Sprint(back))
	if p := nextOnTopic(t, configs, configTopic(backRow)); len(p.Payload) != 0 {
		t.Fatalf("a deleted camera's config: %q", p.Payload)
	}
	var want []string
	for _, r := range rows {
		if r.ID != back {
			want = append(want, configTopic(r))
		}
	}
	slices.Sort(want)
	if got := retainedUnder(t, e.app.MQTTAddr(), "admin", adminPassword, "homeassistant/device/#", "homeassistant/device/zz/marker"); !slices.Equal(got, want) {
		t.Fatalf("retained configs %v, want %v", got, want)
	}
	if got := retainedUnder(t, e.app.MQTTAddr(), "admin", adminPassword, settingsTopic(back), "nestmtx-test/marker"); len(got) != 0 {
		t.Fatalf("a deleted camera's settings are still retained: %v", got)
	}
}

// TestHomeAssistantDiscoveryMosquitto: the same on a real Mosquitto whose
// ACL gives the daemon its topics and Home Assistant's, and lets only the
// admin-like login "ha" publish commands: configs appear, a viewer's
// command is dropped by the broker, ha's switch disables the camera, Home
// Assistant's birth republishes, deletion clears.
func TestHomeAssistantDiscoveryMosquitto(t *testing.T) {
	t.Parallel()
	acl := filepath.Join(t.TempDir(), "nestmtx.acl")
	if err := os.WriteFile(acl, []byte(`user nestmtx
topic readwrite nestmtx/#
topic readwrite homeassistant/#

user ha
topic write nestmtx/command/#
topic readwrite homeassistant/#

user viewer
topic readwrite homeassistant/#

pattern write nestmtx/requests
pattern read nestmtx/status
pattern read nestmtx/events/#
pattern read nestmtx/stream/#
pattern read nestmtx/state/#
pattern read nestmtx/config/#
pattern read nestmtx/replies/%u/#
`), 0o600); err != nil {
		t.Fatal(err)
	}
	m := testkit.StartMosquittoWithACL(t, map[string]string{"nestmtx": "daemon-pw", "ha": "ha-pw", "viewer": "viewer-pw"}, acl)
	a := startApp(t, func(c *config.Config) {
		c.MQTTURL, c.MQTTUsername, c.MQTTPassword = m.URL(), "nestmtx", "daemon-pw"
	})
	cam := seedCamera(t, a, "Porch")
	cam, err := a.Store().UpdateCamera(cam.ID, func(c *store.Camera) error {
		c.Path, c.IsEnabled = "porch", true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a.cameras.CameraChanged(cam)

	ha := testkit.Dial(t, m.Addr, "ha", "ha-pw")
	configs := ha.Subscribe("homeassistant/#")
	settings := ha.Subscribe("nestmtx/config/#")
	if names := configsOf(t, configs, []store.Camera{cam}); names[configTopic(cam)] != "Porch" {
		t.Errorf("device names %v", names)
	}
	waitPayload(t, settings, settingsTopic(cam.ID), `{"is_enabled":true,"is_persistent":false}`)

	viewer := testkit.Dial(t, m.Addr, "viewer", "viewer-pw")
	_ = command(viewer, cam.ID, "enabled", "OFF") // Mosquitto drops it (with or without saying so)
	if err := command(ha, cam.ID, "persistent", "ON"); err != nil {
		t.Fatal(err)
	}
	if p := nextOnTopic(t, settings, settingsTopic(cam.ID)); string(p.Payload) != `{"is_enabled":true,"is_persistent":true}` {
		t.Fatalf("settings after a viewer's OFF and ha's persistent ON: %s", p.Payload)
	}
	if err := command(ha, cam.ID, "enabled", "OFF"); err != nil {
		t.Fatal(err)
	}
	if p := nextOnTopic(t, settings, settingsTopic(cam.ID)); string(p.Payload) != `{"is_enabled":false,"is_persistent":true}` {
		t.Fatalf("settings after OFF: %s", p.Payload)
	}
	if row, _ := a.Store().GetCamera(cam.ID); row.IsEnabled {
		t.Fatal("the camera is still enabled in the store")
	}

	if err := ha.Publish(&paho.Publish{Topic: "homeassistant/status", QoS: 1, Payload: []byte("online")}); err != nil {
		t.Fatal(err)
	}
	configsOf(t, configs, []store.Camera{cam})

	if err := a.Store().DeleteCamera(cam.ID); err != nil {
		t.Fatal(err)
	}
	a.cameras.CameraDeleted(cam.ID) // as the API's delete does
	if p := nextOnTopic(t, configs, configTopic(cam)); len(p.Payload) != 0 {
		t.Fatalf("a deleted camera's config: %q", p.Payload)
	}
	if got := retainedUnder(t, m.Addr, "ha", "ha-pw", "homeassistant/device/#", "homeassistant/device/zz/marker"); len(got) != 0 {
		t.Fatalf("retained configs after the deletion: %v", got)
	}
}

func TestDiscoveryKeyAndModel(t *testing.T) {
	a := store.Camera{ID: 3, CredentialID: 1, UID: "enterprises/p/devices/AVPHwEtxyz"}
	b := a
	b.ID, b.Name, b.Path = 9, "Renamed", "other" // the row deleted and synced again, renamed
	if discoveryKey(a) != discoveryKey(b) {
		t.Error("the key follows the row id or the name")
	}
	c := a
	c.CredentialID = 2
	if discoveryKey(a) == discoveryKey(c) {
		t.Error("the same device under two credentials shares a key")
	}
	for _, r := range []store.Camera{a, {ID: 4, CredentialID: 1}} {
		k := discoveryKey(r)
		for _, ch := range k {
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-') {
				t.Errorf("key %q has %q", k, ch)
			}
		}
	}
	for typ, want := range map[string]string{"sdm.devices.types.DOORBELL": "Nest Doorbell", "sdm.devices.types.CAMERA": "Nest Camera",
		"": "Nest camera", "other": "other"} {
		if got := cameraModel(typ); got != want {
			t.Errorf("cameraModel(%q) = %q, want %q", typ, got, want)
		}
	}
}
