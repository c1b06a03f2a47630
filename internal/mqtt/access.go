package mqtt

import (
	"strings"
)

// Topic rules of the embedded broker (docs/mqtt-api.md §6). The daemon owns
// everything under the base topic except B/requests, which logged-in
// clients write to and nobody but the daemon reads, and B/command/…, which
// admins write to (docs/home-assistant.md).

// Roles of a broker client, as far as topics go.
type clientKind int

const (
	kindAnonymous clientKind = iota // no login (only when the operator opens it)
	kindAccount                     // a nestmtx account, or the configured static login
	kindDaemon                      // the daemon's own client on the internal listener
)

// User properties the embedded broker and the daemon use between them.
// The broker overwrites whatever a client sent under these keys, so the
// daemon can trust them.
const (
	// propSender, on a request, is who sent it: "<login> <IP> <client id>"
	// (neither of the first two has a space). One property, not three:
	// the daemon decodes it with every request.
	propSender    = "nestmtx-sender"
	propRecipient = "nestmtx-recipient" // on a reply: the only login that may receive it
)

type topicRules struct {
	base     string
	prefix   string // base + "/"
	requests string
	// discovery is Home Assistant's discovery prefix + "/" ("" for none):
	// the daemon's own configs there are the daemon's to write.
	discovery string
}

func newTopicRules(base string) topicRules {
	return topicRules{base: base, prefix: base + "/", requests: base + "/requests"}
}

// under returns what follows the base topic and its "/" in topic, and
// whether topic is the base topic or below it. It runs on every delivery,
// so it slices instead of splitting.
func (r topicRules) under(topic string) (string, bool) {
	if topic == r.base {
		return "", true
	}
	rest, ok := strings.CutPrefix(topic, r.prefix)
	return rest, ok
}

// canPublish says whether a client may publish to topic.
func (r topicRules) canPublish(kind clientKind, topic string) bool {
	switch kind {
	case kindDaemon:
		return true
	case kindAnonymous:
		return false
	}
	if strings.HasPrefix(topic, "$") {
		return false
	}
	if _, ours := r.under(topic); ours {
		return topic == r.requests
	}
	return !r.isOwnDiscovery(topic)
}

// isOwnDiscovery says whether topic is one of the daemon's Home Assistant
// discovery configs (a level under the prefix starts with "nestmtx", as
// its device keys do). Home Assistant trusts a config's command_topic, so
// a client that could rewrite one could make Home Assistant's own (admin)
// login publish commands for it. Other devices' configs under the prefix
// stay open to their publishers.
func (r topicRules) isOwnDiscovery(topic string) bool {
	if r.discovery == "" {
		return false
	}
	rest, ok := strings.CutPrefix(topic, r.discovery)
	if !ok {
		return false
	}
	for level := range strings.SplitSeq(rest, "/") {
		if strings.HasPrefix(level, "nestmtx") {
			return true
		}
	}
	return false
}

// canPublishAs is canPublish for a client logged in as account: admins may
// also publish commands, B/command/… (docs/home-assistant.md).
func (r topicRules) canPublishAs(kind clientKind, account, topic string, isAdmin func(account string) bool) bool {
	if r.canPublish(kind, topic) {
		return true
	}
	return kind == kindAccount && r.isCommand(topic) && isAdmin(account)
}

// isCommand says whether topic is a command topic, B/command/….
func (r topicRules) isCommand(topic string) bool {
	rest, ours := r.under(topic)
	first, below, more := strings.Cut(rest, "/")
	return ours && first == "command" && more && below != ""
}

// canReceive says whether a message on topic may be delivered to a client
// logged in as account (in any case); mochi asks it for every delivery,
// retained ones included.
func (r topicRules) canReceive(kind clientKind, account, topic string, isAdmin func(account string) bool) bool {
	if kind == kindDaemon {
		return true
	}
	rest, ours := r.under(topic)
	if !ours {
		// Outside the base topic: a general-purpose broker for accounts,
		// nothing for strangers.
		return kind == kindAccount && !strings.HasPrefix(topic, "$")
	}
	first, below, more := strings.Cut(rest, "/")
	switch first {
	case "status":
		return !more
	case "events", "stream", "state", "config":
		return true
	}
	if kind != kindAccount {
		return false
	}
	switch first {
	case "responses", "failures":
		// Who gets a reply is decided per message (accessHook.routing).
		return true
	case "replies":
		owner, _, _ := strings.Cut(below, "/")
		return more && strings.EqualFold(owner, account)
	case "logs":
		return isAdmin(account)
	case "command":
		return r.isCommand(topic) && isAdmin(account)
	}
	return false
}

// canSubscribe refuses filters that could only ever match what the client
// may not read (B/requests above all); any other filter is allowed, since
// each delivery is checked with canReceive, as Mosquitto does.
func (r topicRules) canSubscribe(kind clientKind, account, filter string, isAdmin func(account string) bool) bool {
	if kind == kindDaemon {
		return true
	}
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, f, found := strings.Cut(rest, "/")
		if !found {
			return false
		}
		filter = f
	}
	if !strings.ContainsAny(filter, "+#") {
		return r.canReceive(kind, account, filter, isAdmin)
	}
	return true
}

// validReplyTopic says whether the daemon may publish a reply to topic:
// never into its own topics (a client could otherwise make it overwrite
// its presence, state or events), whatever the broker would allow.
func (r topicRules) validReplyTopic(topic string) bool {
	if topic == "" || len(topic) > 65535 || strings.ContainsAny(topic, "+#\x00") || strings.HasPrefix(topic, "$") {
		return false
	}
	rest, ours := r.under(topic)
	if !ours {
		return true
	}
	first, below, more := strings.Cut(rest, "/")
	return more && below != "" && (first == "responses" || first == "replies")
}

// sender is what the broker stamps on a request about who sent it.
type sender struct {
	account, ip, client string
}

func (s sender) String() string { return s.account + " " + s.ip + " " + s.client }

// parseSender reads a propSender value; the zero sender if malformed.
func parseSender(v string) sender {
	account, rest, ok := strings.Cut(v, " ")
	if !ok {
		return sender{}
	}
	ip, client, ok := strings.Cut(rest, " ")
	if !ok {
		return sender{}
	}
	return sender{account: account, ip: ip, client: client}
}
