package app

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestMQTTLogs: with NESTMTX_MQTT_LOGS=warn, an admin subscribed to
// B/logs/# sees the warn line a fault produces (a frozen camera stream),
// in NestMTX's log shape, on B/logs/warn and nothing below warn; a viewer
// subscribed to the same filter gets nothing.
func TestMQTTLogs(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) {
		c.MQTTLogs = "warn"
		c.StallTimeout = time.Second
	})
	e.call("create", "users", "payload", map[string]any{"username": "watcher", "password": "watcher-pw"})
	viewer := testkit.Dial(t, e.app.MQTTAddr(), "watcher", "watcher-pw")
	viewerLogs := viewer.Subscribe("nestmtx/logs/#")
	logs := e.mqtt.Subscribe("nestmtx/logs/#")

	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	r := readPath(t, e.rtspURL("front-door"))
	r.flowing(t, 0)
	e.sim.Faults().FreezeStreams(true)
	defer e.sim.Faults().FreezeStreams(false)

	deadline := time.Now().Add(20 * time.Second)
	for {
		p := testkit.Next(t, logs, time.Until(deadline))
		var rec struct {
			Hostname  string `json:"hostname"`
			Level     int    `json:"level"`
			Msg       string `json:"msg"`
			PID       int    `json:"pid"`
			Service   string `json:"service"`
			Time      int64  `json:"time"`
			Timestamp string `json:"timestamp"`
		}
		if err := json.Unmarshal(p.Payload, &rec); err != nil {
			t.Fatalf("log line %s: %v", p.Payload, err)
		}
		if rec.Level < 50 || !strings.HasSuffix(p.Topic, "/logs/warn") && !strings.HasSuffix(p.Topic, "/logs/error") {
			t.Fatalf("a line of level %d on %s with NESTMTX_MQTT_LOGS=warn", rec.Level, p.Topic)
		}
		if p.Retain {
			t.Fatal("a retained log line")
		}
		if rec.Msg != "camera stream failed" {
			continue
		}
		if p.Topic != "nestmtx/logs/warn" || rec.Level != 50 || rec.Service != "nestmtx" || rec.PID == 0 ||
			rec.Hostname == "" || time.Since(time.UnixMilli(rec.Time)) > time.Minute || rec.Timestamp == "" {
			t.Fatalf("log line on %s: %s", p.Topic, p.Payload)
		}
		break
	}
	// The admin's copy has arrived; a viewer's would come with it.
	select {
	case p := <-viewerLogs:
		t.Fatalf("a viewer received a log line on %s", p.Topic)
	case <-time.After(time.Second):
	}
}
