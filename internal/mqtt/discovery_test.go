package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// CheckHADeviceConfig validates a device-discovery payload against what
// Home Assistant requires (its MQTT integration's documentation, "Device
// discovery payload", and each platform's required options): a device
// with identifiers and a name, an origin with a name, availability, and
// per component a platform, a name, a unique_id, a state_topic where the
// platform reads one and a command_topic where it writes one. It returns
// the components by key.
func CheckHADeviceConfig(t testing.TB, payload []byte, statusTopic string) map[string]map[string]any {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(payload, &cfg); err != nil {
		t.Fatalf("config is not JSON: %v: %s", err, payload)
	}
	pick := func(m map[string]any, short, long string) any {
		if v, ok := m[short]; ok {
			return v
		}
		return m[long]
	}
	dev, _ := pick(cfg, "dev", "device").(map[string]any)
	if dev == nil {
		t.Fatalf("no device block: %s", payload)
	}
	if ids, _ := pick(dev, "ids", "identifiers").([]any); len(ids) == 0 {
		t.Errorf("device without identifiers: %v", dev)
	}
	if name, _ := dev["name"].(string); name == "" {
		t.Errorf("device without a name: %v", dev)
	}
	origin, _ := pick(cfg, "o", "origin").(map[string]any)
	if name, _ := origin["name"].(string); name == "" {
		t.Errorf("no origin name: %s", payload)
	}
	avty, _ := pick(cfg, "avty", "availability").([]any)
	if len(avty) != 1 {
		t.Fatalf("availability %v", pick(cfg, "avty", "availability"))
	}
	a := avty[0].(map[string]any)
	if pick(a, "t", "topic") != statusTopic || pick(a, "pl_avail", "payload_available") != "online" ||
		pick(a, "pl_not_avail", "payload_not_available") != "offline" {
		t.Errorf("availability %v, want %s online/offline", a, statusTopic)
	}
	cmps, _ := pick(cfg, "cmps", "components").(map[string]any)
	if len(cmps) == 0 {
		t.Fatalf("no components: %s", payload)
	}
	out := map[string]map[string]any{}
	uids := map[string]bool{}
	for key, v := range cmps {
		c, _ := v.(map[string]any)
		p, _ := pick(c, "p", "platform").(string)
		str := func(short, long string) string { s, _ := pick(c, short, long).(string); return s }
		needState, needCommand := false, false
		switch p {
		case "binary_sensor", "sensor":
			needState = true
		case "switch":
			needCommand = true
		case "button":
			needCommand = true
		default:
			t.Errorf("component %s: platform %q", key, p)
		}
		if str("name", "name") == "" {
			t.Errorf("component %s has no name", key)
		}
		uid := str("uniq_id", "unique_id")
		if uid == "" || uids[uid] {
			t.Errorf("component %s: unique_id %q missing or repeated", key, uid)
		}
		uids[uid] = true
		if needState && str("stat_t", "state_topic") == "" {
			t.Errorf("component %s (%s) has no state_topic", key, p)
		}
		if needCommand && str("cmd_t", "command_topic") == "" {
			t.Errorf("component %s (%s) has no command_topic", key, p)
		}
		for opt, val := range c {
			if strings.HasSuffix(opt, "_topic") && (strings.ContainsAny(val.(string), "+#") || val == "") {
				t.Errorf("component %s: %s %q", key, opt, val)
			}
		}
		out[key] = c
	}
	return out
}

func TestDiscoveryConfigShape(t *testing.T) {
	d := &Discovery{s: &Service{topics: newTopics("home/nestmtx")}, o: DiscoveryOptions{Prefix: "homeassistant",
		Origin: DiscoveryOrigin{Name: "nestmtx", Version: "1.0", URL: "https://example.test"}}}
	cam := DiscoveryCamera{ID: 7, Key: "nestmtx_1_abcdef", Name: "Front door", Room: "Hall", Model: "Nest Camera"}
	body, err := json.Marshal(d.config(cam))
	if err != nil {
		t.Fatal(err)
	}
	cmps := CheckHADeviceConfig(t, body, "home/nestmtx/status")
	want := map[string]string{"streaming": "binary_sensor", "readers": "sensor", "bitrate": "sensor",
		"session_expires": "sensor", "last_error": "sensor", "enabled": "switch", "persistent": "switch", "restart": "button"}
	if len(cmps) != len(want) {
		t.Errorf("components %v", slices.Sorted(maps.Keys(cmps)))
	}
	for key, platform := range want {
		c := cmps[key]
		if c["p"] != platform || c["unique_id"] != "nestmtx_1_abcdef_"+key {
			t.Errorf("%s: %v", key, c)
		}
	}
	if cmps["enabled"]["command_topic"] != "home/nestmtx/command/camera/7/enabled" ||
		cmps["enabled"]["state_topic"] != "home/nestmtx/config/camera/7" ||
		cmps["restart"]["command_topic"] != "home/nestmtx/command/camera/7/restart" ||
		cmps["streaming"]["state_topic"] != "home/nestmtx/state/camera/7" {
		t.Errorf("topics: %s", body)
	}
	if cmps["session_expires"]["device_class"] != "timestamp" || cmps["bitrate"]["unit_of_measurement"] != "kbit/s" ||
		!strings.Contains(cmps["bitrate"]["value_template"].(string), "bitrate_kbps | default(0") {
		t.Errorf("sensors: %s", body)
	}
	// The same camera gives the same bytes (configs are sent only when
	// they change).
	again, _ := json.Marshal(d.config(cam))
	if string(again) != string(body) {
		t.Error("the config is not deterministic")
	}
}

func TestCommandTopicRules(t *testing.T) {
	r := newTopicRules("nestmtx")
	r.discovery = "homeassistant/"
	admin := func(a string) bool { return a == "root" }
	for _, c := range []struct {
		kind    clientKind
		account string
		topic   string
		publish bool
		receive bool
	}{
		{kindAccount, "root", "nestmtx/command/camera/1/enabled", true, true},
		{kindAccount, "root", "nestmtx/command/camera/1/restart", true, true},
		{kindAccount, "eve", "nestmtx/command/camera/1/enabled", false, false},
		{kindAnonymous, "", "nestmtx/command/camera/1/enabled", false, false},
		{kindDaemon, "", "nestmtx/command/camera/1/enabled", true, true},
		{kindAccount, "root", "nestmtx/command", false, false},
		{kindAccount, "root", "nestmtx/command/", false, false},
		{kindAccount, "root", "nestmtx/commands/x", false, false},
		{kindAccount, "root", "nestmtx/config/camera/1", false, true},
		{kindAccount, "eve", "nestmtx/config/camera/1", false, true},
		{kindAnonymous, "", "nestmtx/config/camera/1", false, true},
		{kindAccount, "root", "nestmtx/status", false, true},
		{kindAccount, "root", "nestmtx/requests", true, false},
		{kindAccount, "eve", "homeassistant/device/x/config", true, true},
		{kindAccount, "eve", "homeassistant/status", true, true},
		// The daemon's own configs: Home Assistant trusts their command
		// topics, so nobody but the daemon may rewrite them.
		{kindAccount, "eve", "homeassistant/device/nestmtx_1_9f86d081884c7d65/config", false, true},
		{kindAccount, "root", "homeassistant/device/nestmtx_1_9f86d081884c7d65/config", false, true},
		{kindAccount, "eve", "homeassistant/switch/nestmtx_1_x/enabled/config", false, true},
		{kindDaemon, "", "homeassistant/device/nestmtx_1_9f86d081884c7d65/config", true, true},
	} {
		if got := r.canPublishAs(c.kind, c.account, c.topic, admin); got != c.publish {
			t.Errorf("%q (kind %d) publish %s = %v, want %v", c.account, c.kind, c.topic, got, c.publish)
		}
		if got := r.canReceive(c.kind, c.account, c.topic, admin); got != c.receive {
			t.Errorf("%q (kind %d) receive %s = %v, want %v", c.account, c.kind, c.topic, got, c.receive)
		}
	}
	// Without an account, canPublish keeps refusing commands.
	if r.canPublish(kindAccount, "nestmtx/command/camera/1/enabled") {
		t.Error("canPublish lets an unknown account command")
	}
	// A reply is never published into a command topic.
	if r.validReplyTopic("nestmtx/command/camera/1/enabled") {
		t.Error("a command topic is a valid reply topic")
	}
}

func TestParseCommand(t *testing.T) {
	for _, c := range []struct {
		rest, payload string
		want          CameraCommand
		ok            bool
	}{
		{"3/enabled", "ON", CameraCommand{Camera: 3, Action: CommandEnabled, On: true}, true},
		{"3/enabled", "off", CameraCommand{Camera: 3, Action: CommandEnabled}, true},
		{"12/persistent", "ON", CameraCommand{Camera: 12, Action: CommandPersistent, On: true}, true},
		{"12/restart", "PRESS", CameraCommand{Camera: 12, Action: CommandRestart}, true},
		{"12/restart", "", CameraCommand{Camera: 12, Action: CommandRestart}, true},
		{"12/restart", "now", CameraCommand{}, false},
		{"3/enabled", "yes", CameraCommand{}, false},
		{"x/enabled", "ON", CameraCommand{}, false},
		{"0/enabled", "ON", CameraCommand{}, false},
		{"3/delete", "ON", CameraCommand{}, false},
		{"3", "ON", CameraCommand{}, false},
	} {
		got, err := parseCommand(c.rest, []byte(c.payload))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseCommand(%q, %q) = %+v, %v", c.rest, c.payload, got, err)
		}
	}
}

// fakeAccounts are the broker's logins: name -> password and role.
type fakeAccounts map[string]struct {
	pw   string
	role store.Role
}

func (f fakeAccounts) Check(ctx context.Context, username, password, address string) (store.User, error) {
	a, ok := f[username]
	if !ok || a.pw != password {
		return store.User{}, store.ErrBadCredentials
	}
	return store.User{Username: username, Role: a.role, CanLogin: true}, nil
}

func (f fakeAccounts) UserByName(username string) (store.User, error) {
	a, ok := f[strings.ToLower(username)]
	if !ok {
		return store.User{}, store.ErrNotFound
	}
	return store.User{Username: username, Role: a.role, CanLogin: true}, nil
}

// fakeCameras is the camera list discovery reads.
type fakeCameras struct {
	mu   sync.Mutex
	cams map[uint64]DiscoveryCamera
}

func (f *fakeCameras) list() ([]DiscoveryCamera, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []DiscoveryCamera
	for _, c := range f.cams {
		out = append(out, c)
	}
	return out, nil
}

func (f *fakeCameras) get(id uint64) (DiscoveryCamera, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cams[id]
	return c, ok, nil
}

func (f *fakeCameras) set(c DiscoveryCamera) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cams[c.ID] = c
}

func (f *fakeCameras) remove(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.cams, id)
}

// nextOn waits for the next message on topic, skipping others.
func nextOn(t *testing.T, ch <-chan *paho.Publish, topic string) *paho.Publish {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("nothing on %s", topic)
		}
		p := testkit.Next(t, ch, left)
		if p.Topic == topic {
			return p
		}
	}
}

// startDiscoveryService runs a service on an embedded broker with an admin
// (root) and a viewer (eve).
func startDiscoveryService(t *testing.T) *Service {
	t.Helper()
	accounts := fakeAccounts{"root": {"root-pw", store.RoleAdmin}, "eve": {"eve-pw", store.RoleViewer}}
	s, err := Start(Options{Listen: "127.0.0.1:0", BaseTopic: "nestmtx", Accounts: accounts, Users: accounts},
		nopHandler{}, events.NewBus(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

type nopHandler struct{}

func (nopHandler) Handle(ctx context.Context, req api.Request) (any, *api.Error) { return nil, nil }

// collect reads ch until every topic in want has had a message (the last
// one of each kept), skipping the others.
func collect(t *testing.T, ch <-chan *paho.Publish, want ...string) map[string]*paho.Publish {
	t.Helper()
	got := map[string]*paho.Publish{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(want) {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("have %d of %v", len(got), want)
		}
		p := testkit.Next(t, ch, left)
		if slices.Contains(want, p.Topic) {
			got[p.Topic] = p
		}
	}
	return got
}

// untilMarker returns what ch receives before a message on marker, which
// the caller publishes after subscribing: the retained messages.
func untilMarker(t *testing.T, ch <-chan *paho.Publish, marker string) []*paho.Publish {
	t.Helper()
	var out []*paho.Publish
	for {
		p := testkit.Next(t, ch, 10*time.Second)
		if p.Topic == marker {
			return out
		}
		out = append(out, p)
	}
}

func nextCommand(t *testing.T, ch <-chan CameraCommand) CameraCommand {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no command carried out")
		return CameraCommand{}
	}
}

const (
	cfg1 = "homeassistant/device/nestmtx_1_aaaa/config"
	cfg2 = "homeassistant/device/nestmtx_1_bbbb/config"
	cfg3 = "homeassistant/device/nestmtx_1_cccc/config"
)

// TestDiscoveryOnEmbeddedBroker: configs and settings for every camera,
// commands from an admin carried out and a viewer's refused, a refused
// command's switch republished, Home Assistant's birth republishing
// everything, a rename republishing, an unchanged row costing nothing, a
// deletion clearing both retained topics.
func TestDiscoveryOnEmbeddedBroker(t *testing.T) {
	s := startDiscoveryService(t)
	cams := &fakeCameras{cams: map[uint64]DiscoveryCamera{
		1: {ID: 1, Key: "nestmtx_1_aaaa", Name: "Front", Room: "Hall", Model: "Nest Camera", Enabled: true},
		2: {ID: 2, Key: "nestmtx_1_bbbb", Name: "Back"},
	}}
	commands := make(chan CameraCommand, 16)
	eve := testkit.Dial(t, s.BrokerAddr(), "eve", "eve-pw")
	root := testkit.Dial(t, s.BrokerAddr(), "root", "root-pw")
	configs := eve.Subscribe("homeassistant/#")
	settings := eve.Subscribe("nestmtx/config/#")
	d, err := s.StartDiscovery(DiscoveryOptions{Enabled: true, Prefix: "homeassistant",
		Origin:  DiscoveryOrigin{Name: "nestmtx", Version: "test", URL: "https://example.test"},
		Cameras: cams.list, Camera: cams.get,
		Command: func(ctx context.Context, c CameraCommand) error {
			commands <- c
			if c.Action == CommandPersistent {
				return errors.New("a camera needs an mtx_path to be persistent")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, configs, cfg1, cfg2)
	for topic, p := range got {
		CheckHADeviceConfig(t, p.Payload, "nestmtx/status")
		if !strings.Contains(string(p.Payload), `"name":"Front"`) && topic == cfg1 {
			t.Errorf("camera 1's config: %s", p.Payload)
		}
	}
	st := collect(t, settings, "nestmtx/config/camera/1", "nestmtx/config/camera/2")
	if b := string(st["nestmtx/config/camera/1"].Payload); b != `{"is_enabled":true,"is_persistent":false}` {
		t.Errorf("camera 1's settings: %s", b)
	}

	// An admin's command is carried out.
	cmd := func(c *testkit.Client, topic, payload string) error {
		return c.Publish(&paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	}
	if err := cmd(root, "nestmtx/command/camera/1/enabled", "OFF"); err != nil {
		t.Fatal(err)
	}
	if c := nextCommand(t, commands); c != (CameraCommand{Camera: 1, Action: CommandEnabled}) {
		t.Fatalf("command %+v", c)
	}
	// A viewer's is refused by the broker and never reaches the daemon:
	// the admin's next command is the next one carried out.
	if err := cmd(eve, "nestmtx/command/camera/2/enabled", "ON"); err == nil {
		t.Error("the broker acknowledged a viewer's command")
	}
	if err := cmd(root, "nestmtx/command/camera/2/restart", "PRESS"); err != nil {
		t.Fatal(err)
	}
	if c := nextCommand(t, commands); c != (CameraCommand{Camera: 2, Action: CommandRestart}) {
		t.Fatalf("after a viewer's command, the daemon carried out %+v", c)
	}
	// A command that fails republishes the switch's (unchanged) state.
	if err := cmd(root, "nestmtx/command/camera/2/persistent", "ON"); err != nil {
		t.Fatal(err)
	}
	nextCommand(t, commands)
	if p := nextOn(t, settings, "nestmtx/config/camera/2"); string(p.Payload) != `{"is_enabled":false,"is_persistent":false}` {
		t.Errorf("republished settings %s", p.Payload)
	}

	// Home Assistant's birth: every config again.
	if err := cmd(eve, "homeassistant/status", "online"); err != nil {
		t.Fatal(err)
	}
	collect(t, configs, cfg1, cfg2)

	// A rename: a new config.
	cams.set(DiscoveryCamera{ID: 1, Key: "nestmtx_1_aaaa", Name: "Front door", Room: "Hall", Model: "Nest Camera", Enabled: true})
	d.Changed(1)
	if p := nextOn(t, configs, cfg1); !strings.Contains(string(p.Payload), `"name":"Front door"`) {
		t.Errorf("renamed: %s", p.Payload)
	}
	// An unchanged row is not sent again: the next config is the new
	// camera's, though camera 2 (a lower id) was marked first.
	d.Changed(2)
	cams.set(DiscoveryCamera{ID: 3, Key: "nestmtx_1_cccc", Name: "Garage"})
	d.Changed(3)
	if p := testkit.Next(t, configs, 10*time.Second); p.Topic != cfg3 {
		t.Errorf("after an unchanged row, %s came first", p.Topic)
	}
	nextOn(t, settings, "nestmtx/config/camera/3")

	// A deletion clears the config and the settings.
	cams.remove(3)
	d.Changed(3)
	if p := nextOn(t, configs, cfg3); len(p.Payload) != 0 {
		t.Errorf("deleted camera's config: %q", p.Payload)
	}
	if p := nextOn(t, settings, "nestmtx/config/camera/3"); len(p.Payload) != 0 {
		t.Errorf("deleted camera's settings: %q", p.Payload)
	}
	// What a newcomer finds retained: cameras 1 and 2 only.
	late := testkit.Dial(t, s.BrokerAddr(), "eve", "eve-pw")
	retained := late.Subscribe("homeassistant/#")
	if err := cmd(late, "homeassistant/zz-marker", "x"); err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, p := range untilMarker(t, retained, "homeassistant/zz-marker") {
		topics = append(topics, p.Topic)
	}
	slices.Sort(topics)
	if !slices.Equal(topics, []string{cfg1, cfg2}) {
		t.Errorf("retained configs %v", topics)
	}
}

// TestDiscoveryOffWithdraws: with discovery off, what an earlier run
// published is removed, and commands are not taken.
func TestDiscoveryOffWithdraws(t *testing.T) {
	s := startDiscoveryService(t)
	cams := &fakeCameras{cams: map[uint64]DiscoveryCamera{1: {ID: 1, Key: "nestmtx_1_aaaa", Name: "Front"}}}
	// An earlier run's config, retained.
	root := testkit.Dial(t, s.BrokerAddr(), "root", "root-pw")
	if err := root.Publish(&paho.Publish{Topic: cfg1, QoS: 1, Retain: true, Payload: []byte(`{"dev":{}}`)}); err != nil {
		t.Fatal(err)
	}
	configs := root.Subscribe("homeassistant/#")
	nextOn(t, configs, cfg1) // the retained one
	if _, err := s.StartDiscovery(DiscoveryOptions{Enabled: false, Cameras: cams.list, Camera: cams.get,
		Command: func(context.Context, CameraCommand) error { t.Error("a command with discovery off"); return nil }}); err != nil {
		t.Fatal(err)
	}
	if p := nextOn(t, configs, cfg1); len(p.Payload) != 0 {
		t.Fatalf("withdrawn config %q", p.Payload)
	}
	_ = root.Publish(&paho.Publish{Topic: "nestmtx/command/camera/1/enabled", QoS: 1, Payload: []byte("OFF")})
}
