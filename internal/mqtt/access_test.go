package mqtt

import "testing"

func TestTopicRules(t *testing.T) {
	r := newTopicRules("home/nestmtx")
	no := func(string) bool { return false }
	yes := func(string) bool { return true }
	for _, c := range []struct {
		kind    clientKind
		topic   string
		publish bool
		receive bool
	}{
		{kindAccount, "home/nestmtx/requests", true, false},
		{kindAccount, "home/nestmtx/status", false, true},
		{kindAccount, "home/nestmtx/status/x", false, false},
		{kindAccount, "home/nestmtx/state/camera/1", false, true},
		{kindAccount, "home/nestmtx/events/camera/1/ready", false, true},
		{kindAccount, "home/nestmtx/stream/camera/ready", false, true},
		{kindAccount, "home/nestmtx/responses/r1", false, true},
		{kindAccount, "home/nestmtx/failures", false, true},
		{kindAccount, "home/nestmtx/replies/alice/x", false, true},
		{kindAccount, "home/nestmtx/replies/ALICE/x", false, true},
		{kindAccount, "home/nestmtx/replies/bob/x", false, false},
		{kindAccount, "home/nestmtx/logs/info", false, false},
		{kindAccount, "home/nestmtx", false, false},
		{kindAccount, "home/nestmtx/whatever", false, false},
		{kindAccount, "home/other", true, true},
		{kindAccount, "frigate/events", true, true},
		{kindAccount, "$SYS/broker/clients", false, false},
		{kindAnonymous, "home/nestmtx/requests", false, false},
		{kindAnonymous, "home/nestmtx/status", false, true},
		{kindAnonymous, "home/nestmtx/state/camera/1", false, true},
		{kindAnonymous, "home/nestmtx/responses/r1", false, false},
		{kindAnonymous, "home/nestmtx/replies/alice/x", false, false},
		{kindAnonymous, "frigate/events", false, false},
		{kindDaemon, "home/nestmtx/status", true, true},
	} {
		if got := r.canPublish(c.kind, c.topic); got != c.publish {
			t.Errorf("kind %d publish %s = %v, want %v", c.kind, c.topic, got, c.publish)
		}
		if got := r.canReceive(c.kind, "alice", c.topic, no); got != c.receive {
			t.Errorf("kind %d receive %s = %v, want %v", c.kind, c.topic, got, c.receive)
		}
	}
	if !r.canReceive(kindAccount, "alice", "home/nestmtx/logs/info", yes) {
		t.Error("an admin cannot read the logs")
	}
	for filter, want := range map[string]bool{
		"#": true, "home/nestmtx/#": true, "+/+/requests": true, // deliveries are checked one by one
		"home/nestmtx/requests": false, "$share/g/home/nestmtx/requests": false, "$share/g": false,
		"home/nestmtx/replies/bob/x": false, "home/nestmtx/status": true,
	} {
		if got := r.canSubscribe(kindAccount, "alice", filter, no); got != want {
			t.Errorf("subscribe %s = %v, want %v", filter, got, want)
		}
	}
	for topic, want := range map[string]bool{
		"me/replies": true, "home/nestmtx/responses/x": true, "home/nestmtx/replies/alice/rr": true,
		"home/nestmtx/status": false, "home/nestmtx/requests": false, "home/nestmtx/responses": false,
		"home/nestmtx/state/camera/1": false, "$SYS/x": false, "a/+/b": false, "a/#": false, "": false,
	} {
		if got := r.validReplyTopic(topic); got != want {
			t.Errorf("reply topic %q = %v, want %v", topic, got, want)
		}
	}
}

func TestSenderRoundTrip(t *testing.T) {
	for _, s := range []sender{{"alice", "127.0.0.1", "phone"}, {"bob", "::1", "client id with spaces"}, {"c", "10.0.0.2", ""}} {
		if got := parseSender(s.String()); got != s {
			t.Errorf("parseSender(%q) = %+v, want %+v", s.String(), got, s)
		}
	}
	for _, bad := range []string{"", "alice", "alice 1.2.3.4"} {
		if got := parseSender(bad); got != (sender{}) {
			t.Errorf("parseSender(%q) = %+v, want nothing", bad, got)
		}
	}
}
