package app

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestExternalMosquittoWithDeployACL: the daemon on a real Mosquitto that
// loads deploy/mosquitto-acl.conf passes the same read and spoof tests as
// the embedded broker.
func TestExternalMosquittoWithDeployACL(t *testing.T) {
	m := testkit.StartMosquittoWithACL(t, map[string]string{
		"nestmtx": "daemon-pw", "alice": "alice-pw", "mallory": "mallory-pw"}, "../../deploy/mosquitto-acl.conf")
	startApp(t, func(c *config.Config) {
		c.MQTTURL, c.MQTTUsername, c.MQTTPassword = m.URL(), "nestmtx", "daemon-pw"
	})
	mallory := testkit.Dial(t, m.Addr, "mallory", "mallory-pw")
	var spied []<-chan *paho.Publish
	for _, f := range []string{"#", "nestmtx/#", "nestmtx/requests", "nestmtx/replies/#", "nestmtx/replies/alice/#"} {
		if ch, err := mallory.SubscribeErr(f); err == nil {
			spied = append(spied, ch)
		}
	}
	alice := testkit.Dial(t, m.Addr, "alice", "alice-pw")
	status := alice.Subscribe("nestmtx/status")
	if p := testkit.Next(t, status, 10*time.Second); string(p.Payload) != "online" {
		t.Fatalf("status %q", p.Payload)
	}
	replies := alice.Subscribe("nestmtx/replies/alice/rr")
	body, _ := json.Marshal(req("create", "auth", "payload", map[string]any{"username": "admin", "password": adminPassword}))
	if err := alice.Publish(&paho.Publish{Topic: "nestmtx/requests", QoS: 1, Payload: body,
		Properties: &paho.PublishProperties{ResponseTopic: "nestmtx/replies/alice/rr", CorrelationData: []byte("c1")}}); err != nil {
		t.Fatal(err)
	}
	p := testkit.Next(t, replies, 10*time.Second)
	var login struct{ Bearer string }
	if err := json.Unmarshal(p.Payload, &login); err != nil || login.Bearer == "" {
		t.Fatalf("alice's login reply: %s", p.Payload)
	}
	// Spoofs: mallory writes the daemon's topics.
	for _, topic := range []string{"nestmtx/status", "nestmtx/state/camera/1", "nestmtx/replies/alice/rr", "nestmtx/events/camera/1/ready"} {
		_ = mallory.Publish(&paho.Publish{Topic: topic, Payload: []byte("offline"), Retain: true})
	}
	// Mallory's own request, answered after alice's: once it is back,
	// everything before it has been delivered (or withheld).
	mine := mallory.Subscribe("nestmtx/replies/mallory/rr")
	if err := mallory.Publish(&paho.Publish{Topic: "nestmtx/requests", QoS: 1, Payload: []byte(`{"command":"list","module":"version"}`),
		Properties: &paho.PublishProperties{ResponseTopic: "nestmtx/replies/mallory/rr"}}); err != nil {
		t.Fatal(err)
	}
	testkit.Next(t, mine, 10*time.Second)
	for _, ch := range spied {
		for _, p := range drain(ch) {
			if p.Topic == "nestmtx/requests" || strings.Contains(string(p.Payload), login.Bearer) ||
				strings.Contains(string(p.Payload), adminPassword) || strings.HasPrefix(p.Topic, "nestmtx/replies/alice") {
				t.Errorf("mallory read %s: %.100s", p.Topic, p.Payload)
			}
		}
	}
	for _, p := range drain(replies) {
		t.Errorf("a spoofed reply reached alice: %s", p.Payload)
	}
	fresh := testkit.Dial(t, m.Addr, "alice", "alice-pw")
	st := fresh.Subscribe("nestmtx/status")
	if p := testkit.Next(t, st, 10*time.Second); string(p.Payload) != "online" {
		t.Fatalf("the retained status was spoofed: %q", p.Payload)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = ctx
}
