package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/events"
)

// Home Assistant MQTT discovery (docs/home-assistant.md). Each camera is one
// Home Assistant device, announced by one retained device-discovery config
// at <prefix>/device/<key>/config whose components read the camera's
// retained state (B/state/camera/<id>) and its settings (B/config/camera/<id>,
// published here), and write its commands (B/command/camera/<id>/<action>,
// which the embedded broker lets only admins publish). One goroutine
// publishes, in the order: removals, then settings and configs; another
// carries out the commands, one at a time.

// Command actions, the last level of a command topic.
const (
	CommandEnabled    = "enabled"    // payload ON or OFF
	CommandPersistent = "persistent" // payload ON or OFF
	CommandRestart    = "restart"    // payload PRESS (or empty)
)

// DiscoveryOptions configure Home Assistant discovery.
type DiscoveryOptions struct {
	// Enabled publishes the configs and takes commands. Off, the configs of
	// the cameras Cameras lists are withdrawn once (empty retained
	// messages), so that turning discovery off removes what an earlier run
	// published.
	Enabled bool
	// Prefix is Home Assistant's discovery prefix ("homeassistant").
	Prefix string
	Origin DiscoveryOrigin
	// Cameras lists every camera; read at every full republish.
	Cameras func() ([]DiscoveryCamera, error)
	// Camera reads one camera; found is false once it is deleted.
	Camera func(id uint64) (cam DiscoveryCamera, found bool, err error)
	// Command carries out a command. An error is logged, and the camera's
	// settings are published again, so that Home Assistant shows the
	// switch as it really is.
	Command func(ctx context.Context, c CameraCommand) error
}

// DiscoveryOrigin is the "o" block: who publishes the configs.
type DiscoveryOrigin struct {
	Name, Version, URL string
}

// DiscoveryCamera is a camera as discovery describes it.
type DiscoveryCamera struct {
	ID uint64
	// Key names the camera for Home Assistant whatever its row id, name or
	// path: the device's identifier and object id, and the prefix of its
	// entities' unique ids. Only [A-Za-z0-9_-].
	Key               string
	Name, Room, Model string
	Enabled           bool
	Persistent        bool
}

// CameraCommand is one command received on B/command/camera/<id>/<action>.
type CameraCommand struct {
	Camera uint64
	Action string // CommandEnabled, CommandPersistent or CommandRestart
	On     bool   // the switch's new position (enabled, persistent)
}

// Discovery publishes the configs and takes the commands; see StartDiscovery.
type Discovery struct {
	s        *Service
	o        DiscoveryOptions
	log      *slog.Logger
	haStatus string // <prefix>/status, Home Assistant's birth and will
	wake     chan struct{}
	commands chan CameraCommand
	// lastFullLog is when a command was last dropped for a full queue
	// (unix ns), to log that at most once a minute.
	lastFullLog atomic.Int64

	mu     sync.Mutex
	dirty  map[uint64]bool // cameras to publish again (changed, created or deleted)
	forced map[uint64]bool // ... even if what would be sent is unchanged
	resync bool            // every camera, from Cameras (a connection, Home Assistant's birth)

	// The publishing goroutine's own.
	keys      map[uint64]string    // the key each camera's config was published under
	sent      map[uint64]published // what went out, so that an unchanged row costs nothing
	withdrawn bool                 // discovery off: the withdrawal was made
	refused   uint64               // the connection a refusal was logged on
}

type published struct{ config, settings []byte }

// StartDiscovery starts Home Assistant discovery on the service's
// connection: configs now and after every (re)connection, and whenever Home
// Assistant announces itself online on <prefix>/status.
func (s *Service) StartDiscovery(o DiscoveryOptions) (*Discovery, error) {
	if o.Prefix == "" {
		o.Prefix = "homeassistant"
	}
	if o.Cameras == nil || o.Camera == nil || o.Command == nil {
		return nil, errors.New("mqtt discovery: Cameras, Camera and Command are required")
	}
	d := &Discovery{s: s, o: o, log: s.opts.Log.With("component", "mqtt-ha-discovery"), haStatus: o.Prefix + "/status",
		wake: make(chan struct{}, 1), commands: make(chan CameraCommand, 64),
		dirty: map[uint64]bool{}, forced: map[uint64]bool{}, keys: map[uint64]string{}, sent: map[uint64]published{}}
	if s.ctx.Err() != nil {
		return nil, errors.New("mqtt discovery: the MQTT service is closed")
	}
	if !s.discovery.CompareAndSwap(nil, d) {
		return nil, errors.New("mqtt discovery: already started")
	}
	s.wg.Add(2)
	go d.run()
	go d.runCommands()
	d.poke()
	return d, nil
}

// Changed says a camera row changed, was created or was deleted: its
// config and settings are published again if they differ (or removed).
func (d *Discovery) Changed(id uint64) { d.mark(id, false) }

// Refresh publishes a camera's config and settings again even if unchanged.
func (d *Discovery) Refresh(id uint64) { d.mark(id, true) }

func (d *Discovery) mark(id uint64, force bool) {
	d.mu.Lock()
	d.dirty[id] = true
	if force {
		d.forced[id] = true
	}
	d.mu.Unlock()
	d.poke()
}

func (d *Discovery) requestResync() {
	d.mu.Lock()
	d.resync = true
	d.mu.Unlock()
	d.poke()
}

func (d *Discovery) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Topics of discovery; the daemon's own are formed from topics, like the rest.

// configTopic is a camera's device-discovery topic.
func (d *Discovery) configTopic(key string) string { return d.o.Prefix + "/device/" + key + "/config" }

// settings is a camera's retained settings, B/config/camera/<id>.
func (t topics) settings(id uint64) string {
	return t.base + "/config/camera/" + strconv.FormatUint(id, 10)
}

// command is a camera's command topic, B/command/camera/<id>/<action>.
func (t topics) command(id uint64, action string) string {
	return t.base + "/command/camera/" + strconv.FormatUint(id, 10) + "/" + action
}

// commandFilter matches every camera command.
func (t topics) commandFilter() string { return t.base + "/command/camera/+/+" }

// run publishes: after each new connection it subscribes and republishes
// everything, then what changes.
func (d *Discovery) run() {
	defer d.s.wg.Done()
	var gen uint64
	for {
		var retry time.Duration
		if c := d.s.conn.Load(); c != nil && d.s.connected.Load() && c.gen != gen {
			if d.onConnection() {
				gen = c.gen
			} else {
				retry = time.Second
			}
		}
		if r := d.flush(); r > 0 && (retry == 0 || r < retry) {
			retry = r
		}
		var timer *time.Timer
		var timeout <-chan time.Time
		if retry > 0 {
			timer = time.NewTimer(retry)
			timeout = timer.C
		}
		select {
		case <-d.s.ctx.Done():
			return
		case <-d.wake:
		case <-timeout:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// onConnection subscribes to the commands and to Home Assistant's status,
// and asks for a full republish; false when the connection went away first.
func (d *Discovery) onConnection() bool {
	if !d.o.Enabled {
		if !d.withdrawn {
			d.requestResync()
		}
		return true
	}
	ctx, cancel := context.WithTimeout(d.s.ctx, 30*time.Second)
	defer cancel()
	for _, sub := range []paho.SubscribeOptions{
		// Retain handling 2: a retained command is never replayed by a
		// (re)subscription; no-local: the daemon's own publishes never
		// come back as commands.
		{Topic: d.s.topics.commandFilter(), QoS: 1, NoLocal: true, RetainHandling: 2},
		{Topic: d.haStatus, QoS: 1, NoLocal: true},
	} {
		ack, err := d.s.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{sub}})
		if err != nil {
			if ack == nil {
				return false // no SUBACK: the connection is gone, or the broker is slow
			}
			d.log.Warn("the MQTT broker refused a subscription Home Assistant discovery needs (its ACL?)",
				"topic", sub.Topic, "error", err)
		}
	}
	d.requestResync()
	return true
}

// flush publishes what is pending; it returns when to try again (0: when
// something new happens).
func (d *Discovery) flush() time.Duration {
	if !d.s.connected.Load() {
		return 0 // the next connection wakes run
	}
	d.mu.Lock()
	resync, dirty, forced := d.resync, d.dirty, d.forced
	d.resync, d.dirty, d.forced = false, map[uint64]bool{}, map[uint64]bool{}
	d.mu.Unlock()
	if !d.o.Enabled {
		if resync && !d.withdrawn {
			if err := d.withdraw(); err != nil {
				d.putBack(true, nil, nil)
				return d.retryAfter(err)
			}
			d.withdrawn = true
		}
		return 0
	}

	cams := map[uint64]*DiscoveryCamera{} // nil: deleted
	if resync {
		list, err := d.o.Cameras()
		if err != nil {
			d.log.Warn("listing the cameras for Home Assistant discovery", "error", err)
			d.putBack(true, dirty, forced)
			return 5 * time.Second
		}
		clear(d.sent)
		for i := range list {
			cams[list[i].ID] = &list[i]
		}
		for id := range d.keys {
			if _, ok := cams[id]; !ok {
				cams[id] = nil
			}
		}
	}
	for id := range dirty {
		if _, done := cams[id]; done {
			continue
		}
		c, found, err := d.o.Camera(id)
		switch {
		case err != nil:
			d.log.Warn("reading a camera for Home Assistant discovery", "camera_id", id, "error", err)
			d.putBack(resync, dirty, forced)
			return 5 * time.Second
		case found:
			cams[id] = &c
		default:
			cams[id] = nil
		}
	}
	for id := range forced {
		delete(d.sent, id)
	}

	// Removals first: a camera deleted and synced again has a new row
	// under the same key, whose config must not be removed after it is
	// published.
	live := map[string]bool{}
	for id, key := range d.keys {
		if _, touched := cams[id]; !touched {
			live[key] = true // not looked at now: still there
		}
	}
	for _, c := range cams {
		if c != nil {
			live[c.Key] = true
		}
	}
	ids := make([]uint64, 0, len(cams))
	for id := range cams {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for i, id := range ids {
		if cams[id] != nil {
			continue
		}
		if err := d.remove(id, live); err != nil {
			d.putBackIDs(ids[i:], forced)
			return d.retryAfter(err)
		}
	}
	for i, id := range ids {
		if cams[id] == nil {
			continue
		}
		if err := d.publish(*cams[id]); err != nil {
			d.putBackIDs(ids[i:], forced)
			return d.retryAfter(err)
		}
	}
	return 0
}

// putBack requeues what a flush could not do.
func (d *Discovery) putBack(resync bool, dirty, forced map[uint64]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resync = d.resync || resync
	for id := range dirty {
		d.dirty[id] = true
	}
	for id := range forced {
		d.forced[id] = true
	}
}

func (d *Discovery) putBackIDs(ids []uint64, forced map[uint64]bool) {
	dirty := map[uint64]bool{}
	for _, id := range ids {
		dirty[id] = true
	}
	d.putBack(false, dirty, forced)
}

// retryAfter: a lost connection brings a full republish with the next
// one; anything else is tried again shortly.
func (d *Discovery) retryAfter(err error) time.Duration {
	if errors.Is(err, errNotConnected) || d.s.ctx.Err() != nil {
		return 0
	}
	d.log.Warn("publishing Home Assistant discovery failed; retrying", "error", err)
	return 5 * time.Second
}

// remove clears a deleted camera's settings and, unless another camera now
// has its key, its config (which removes the device from Home Assistant).
func (d *Discovery) remove(id uint64, live map[string]bool) error {
	if err := d.sendRetained(d.s.topics.settings(id), nil); err != nil {
		return err
	}
	if key := d.keys[id]; key != "" && !live[key] {
		if err := d.sendRetained(d.configTopic(key), nil); err != nil {
			return err
		}
	}
	delete(d.keys, id)
	delete(d.sent, id)
	return nil
}

// publish sends a camera's settings and config, each only if it changed.
func (d *Discovery) publish(c DiscoveryCamera) error {
	if old := d.keys[c.ID]; old != "" && old != c.Key {
		// A row's key does not change; if it ever did, the old device goes.
		if err := d.sendRetained(d.configTopic(old), nil); err != nil {
			return err
		}
		delete(d.sent, c.ID)
	}
	d.keys[c.ID] = c.Key
	prev := d.sent[c.ID]
	settings, err := json.Marshal(cameraSettings{Enabled: c.Enabled, Persistent: c.Persistent})
	if err != nil {
		return err
	}
	if !bytes.Equal(prev.settings, settings) {
		if err := d.sendRetained(d.s.topics.settings(c.ID), settings); err != nil {
			return err
		}
		prev.settings = settings
		d.sent[c.ID] = prev
	}
	config, err := json.Marshal(d.config(c))
	if err != nil {
		return err
	}
	if !bytes.Equal(prev.config, config) {
		if err := d.sendRetained(d.configTopic(c.Key), config); err != nil {
			return err
		}
		prev.config = config
		d.sent[c.ID] = prev
	}
	return nil
}

// withdraw clears the configs and settings of every camera (discovery off).
func (d *Discovery) withdraw() error {
	list, err := d.o.Cameras()
	if err != nil {
		return err
	}
	for _, c := range list {
		if err := d.sendRetained(d.s.topics.settings(c.ID), nil); err != nil {
			return err
		}
		if err := d.sendRetained(d.configTopic(c.Key), nil); err != nil {
			return err
		}
	}
	return nil
}

// sendRetained publishes a retained message (empty: removes it). A refusal
// (an external broker's ACL) is logged once per connection and skipped.
func (d *Discovery) sendRetained(topic string, payload []byte) error {
	ctx, cancel := context.WithTimeout(d.s.ctx, 2*time.Minute)
	defer cancel()
	p := &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: payload}
	if payload != nil {
		p.Properties = &paho.PublishProperties{ContentType: "application/json"}
	}
	err := d.s.send(ctx, p, false)
	if errors.Is(err, errRefused) {
		if c := d.s.conn.Load(); c != nil && c.gen != d.refused {
			d.refused = c.gen
			d.log.Warn("the MQTT broker refused a Home Assistant discovery message (its ACL must let the daemon write "+
				d.o.Prefix+"/# and "+d.s.topics.base+"/config/#)", "topic", topic, "error", err)
		}
		return nil
	}
	return err
}

// cameraSettings is the payload of B/config/camera/<id>, named as the API
// names the camera's fields.
type cameraSettings struct {
	Enabled    bool `json:"is_enabled"`
	Persistent bool `json:"is_persistent"`
}

// config is a camera's device-discovery payload. Home Assistant's
// abbreviations are used for the device-level keys (dev, o, cmps, p), as
// its documentation shows them; the components use the full option names.
func (d *Discovery) config(c DiscoveryCamera) map[string]any {
	state := d.s.topics.state(events.DomainCamera, c.ID)
	settings := d.s.topics.settings(c.ID)
	name := c.Name
	if name == "" {
		name = "Camera " + strconv.FormatUint(c.ID, 10)
	}
	dev := map[string]any{"ids": []string{c.Key}, "name": name, "mf": "Google"}
	if c.Model != "" {
		dev["mdl"] = c.Model
	}
	if c.Room != "" {
		dev["sa"] = c.Room
	}
	origin := map[string]any{"name": d.o.Origin.Name}
	if d.o.Origin.Version != "" {
		origin["sw"] = d.o.Origin.Version
	}
	if d.o.Origin.URL != "" {
		origin["url"] = d.o.Origin.URL
	}
	cmp := func(platform, key, name string, opts map[string]any) map[string]any {
		opts["p"] = platform
		opts["name"] = name
		opts["unique_id"] = c.Key + "_" + key
		return opts
	}
	switchOf := func(field string) string {
		return "{{ 'ON' if value_json." + field + " else 'OFF' }}"
	}
	return map[string]any{
		"dev": dev,
		"o":   origin,
		"availability": []map[string]any{{"topic": d.s.topics.status,
			"payload_available": "online", "payload_not_available": "offline"}},
		"qos": 1,
		"cmps": map[string]any{
			"streaming": cmp("binary_sensor", "streaming", "Streaming", map[string]any{
				"state_topic": state, "value_template": switchOf("ready"),
				"payload_on": "ON", "payload_off": "OFF", "device_class": "running",
				// The whole state (status, path, waiting_for, audio…) as
				// the entity's attributes.
				"json_attributes_topic": state}),
			"readers": cmp("sensor", "readers", "Readers", map[string]any{
				"state_topic": state, "value_template": "{{ value_json.readers }}",
				"state_class": "measurement", "icon": "mdi:account-eye"}),
			"bitrate": cmp("sensor", "bitrate", "Bitrate", map[string]any{
				// bitrate_kbps may be absent or null: 0 then.
				"state_topic": state, "value_template": "{{ value_json.bitrate_kbps | default(0, true) }}",
				"device_class": "data_rate", "unit_of_measurement": "kbit/s", "state_class": "measurement"}),
			"session_expires": cmp("sensor", "session_expires", "Session expires", map[string]any{
				// "None" is Home Assistant's unknown: no session now.
				"state_topic": state, "value_template": "{{ value_json.expires_at if value_json.expires_at else 'None' }}",
				"device_class": "timestamp", "entity_category": "diagnostic"}),
			"last_error": cmp("sensor", "last_error", "Last error", map[string]any{
				// A state holds 255 characters at most.
				"state_topic": state, "value_template": "{{ value_json.last_error[:255] if value_json.last_error else 'None' }}",
				"entity_category": "diagnostic", "icon": "mdi:alert-circle-outline"}),
			"enabled": cmp("switch", "enabled", "Enabled", map[string]any{
				"state_topic": settings, "value_template": switchOf("is_enabled"),
				"command_topic": d.s.topics.command(c.ID, CommandEnabled), "payload_on": "ON", "payload_off": "OFF",
				"entity_category": "config", "icon": "mdi:cctv"}),
			"persistent": cmp("switch", "persistent", "Always on", map[string]any{
				"state_topic": settings, "value_template": switchOf("is_persistent"),
				"command_topic": d.s.topics.command(c.ID, CommandPersistent), "payload_on": "ON", "payload_off": "OFF",
				"entity_category": "config", "icon": "mdi:record-rec"}),
			"restart": cmp("button", "restart", "Restart stream", map[string]any{
				"command_topic": d.s.topics.command(c.ID, CommandRestart), "payload_press": "PRESS",
				"device_class": "restart", "entity_category": "config"}),
		},
	}
}

// onPublish takes Home Assistant's status and the commands; it runs on the
// client's receive goroutine and never blocks.
func (d *Discovery) onPublish(p *paho.Publish) bool {
	if p.Topic == d.haStatus {
		if string(p.Payload) == "online" {
			d.log.Debug("Home Assistant is online; publishing the discovery configs again")
			d.requestResync()
		}
		return true
	}
	rest, ok := strings.CutPrefix(p.Topic, d.s.topics.base+"/command/camera/")
	if !ok {
		return false
	}
	if !d.o.Enabled {
		return true
	}
	cmd, err := parseCommand(rest, p.Payload)
	if err != nil {
		d.log.Debug("ignored an MQTT command", "topic", p.Topic, "reason", err)
		return true
	}
	select {
	case d.commands <- cmd:
	default:
		// At most one warning a minute: whoever floods the commands
		// must not flood the log too.
		if now := time.Now().UnixNano(); now-d.lastFullLog.Load() > int64(time.Minute) {
			d.lastFullLog.Store(now)
			d.log.Warn("ignored an MQTT command: too many are waiting", "topic", p.Topic)
		}
	}
	return true
}

// parseCommand reads "<id>/<action>" and its payload.
func parseCommand(rest string, payload []byte) (CameraCommand, error) {
	idText, action, _ := strings.Cut(rest, "/")
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil || id == 0 {
		return CameraCommand{}, fmt.Errorf("%q is not a camera id", idText)
	}
	cmd := CameraCommand{Camera: id, Action: action}
	value := strings.ToUpper(strings.TrimSpace(string(payload)))
	switch action {
	case CommandEnabled, CommandPersistent:
		switch value {
		case "ON":
			cmd.On = true
		case "OFF":
		default:
			return CameraCommand{}, fmt.Errorf("the payload must be ON or OFF, not %.20q", payload)
		}
	case CommandRestart:
		if value != "PRESS" && value != "" {
			return CameraCommand{}, fmt.Errorf("the payload must be PRESS, not %.20q", payload)
		}
	default:
		return CameraCommand{}, fmt.Errorf("%q is not a command (%s, %s or %s)", action,
			CommandEnabled, CommandPersistent, CommandRestart)
	}
	return cmd, nil
}

// runCommands carries out the commands, one at a time.
func (d *Discovery) runCommands() {
	defer d.s.wg.Done()
	for {
		select {
		case <-d.s.ctx.Done():
			return
		case c := <-d.commands:
			ctx, cancel := context.WithTimeout(d.s.ctx, requestTimeout)
			err := d.o.Command(ctx, c)
			cancel()
			if err != nil {
				d.log.Warn("an MQTT command was not carried out", "camera_id", c.Camera, "command", c.Action, "error", err)
				d.Refresh(c.Camera)
			}
		}
	}
}
