// Package mqtt binds the daemon to MQTT v5: it answers API requests, publishes
// events, presence and retained state, and runs an embedded broker when the
// user has none.
package mqtt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Broker is the embedded MQTT v5 broker. Besides the user's listener it has a
// private loopback listener for the daemon's own client, so the daemon reaches
// its broker whatever address the user bound (":1883", a LAN IP, IPv6).
type Broker struct {
	server       *mochi.Server
	public       net.Listener
	publicOpen   bool
	publicAddr   net.Addr
	internalAddr net.Addr
	internalUser string
	internalPass string
}

// BrokerOptions configure the embedded broker.
type BrokerOptions struct {
	Listen   string // host:port for clients
	Username string // when set, clients must present it with Password
	Password string
	// MaxPacketBytes bounds what one client may send; larger packets make the
	// broker drop the client (MQTT v5 tells it the limit in CONNACK).
	MaxPacketBytes uint32
	Log            *slog.Logger
}

// StartBroker listens and serves until Close.
func StartBroker(o BrokerOptions) (*Broker, error) {
	public, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded MQTT broker: listen on %s: %w", o.Listen, err)
	}
	internal, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		public.Close()
		return nil, fmt.Errorf("embedded MQTT broker: internal listener: %w", err)
	}
	b := &Broker{public: public, publicAddr: public.Addr(), internalAddr: internal.Addr(),
		internalUser: "nestmtx-internal", internalPass: randomHex(24)}

	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = o.MaxPacketBytes
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	srv := mochi.New(&mochi.Options{
		Capabilities: caps,
		// mochi logs every connection at info; keep the daemon's log for what
		// an operator needs to act on.
		Logger: slog.New(levelFloor{log.Handler(), slog.LevelWarn}),
	})
	hook := &authHook{user: o.Username, pass: o.Password, internalUser: b.internalUser, internalPass: b.internalPass}
	if err := srv.AddHook(hook, nil); err != nil {
		public.Close()
		internal.Close()
		return nil, err
	}
	if err := srv.AddListener(listeners.NewNet("internal", internal)); err != nil {
		public.Close()
		internal.Close()
		return nil, err
	}
	if err := srv.Serve(); err != nil {
		public.Close()
		internal.Close()
		return nil, err
	}
	b.server = srv
	return b, nil
}

// ServePublic starts accepting clients on the public listener. The port is
// bound from the start (a conflict fails the daemon's start at once), but
// clients are accepted only once the daemon listens for requests: until
// then they wait in the kernel's backlog instead of publishing requests
// that nobody receives.
func (b *Broker) ServePublic() error {
	if err := b.server.AddListener(listeners.NewNet("public", b.public)); err != nil {
		return err
	}
	b.publicOpen = true
	b.server.Listeners.Serve("public", b.server.EstablishConnection)
	return nil
}

// Addr is the address clients connect to.
func (b *Broker) Addr() net.Addr { return b.publicAddr }

// internalURL is where the daemon's own client connects.
func (b *Broker) internalURL() string { return "mqtt://" + b.internalAddr.String() }

// Close stops the broker and disconnects every client. Deliveries still on
// their way (the retained "offline" published just before, above all) get
// a short grace: mochi drops a client's queued packets when it disconnects
// it, so Close first waits, up to closeGrace, for every QoS 1/2 delivery
// to be acknowledged.
func (b *Broker) Close() error {
	if !b.publicOpen {
		b.public.Close()
	}
	deadline := time.Now().Add(closeGrace)
	for time.Now().Before(deadline) && b.deliveriesPending() {
		time.Sleep(5 * time.Millisecond)
	}
	return b.server.Close()
}

const closeGrace = time.Second

func (b *Broker) deliveriesPending() bool {
	for _, cl := range b.server.Clients.GetAll() {
		if !cl.Closed() && cl.State.Inflight.Len() > 0 {
			return true
		}
	}
	return false
}

func randomHex(n int) string {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		panic(err) // the OS random source does not fail on Linux
	}
	return hex.EncodeToString(buf)
}

// authHook lets the daemon's own client in with its private credentials, and
// everyone else with the configured ones (or without any when none are set).
type authHook struct {
	mochi.HookBase
	user, pass                 string
	internalUser, internalPass string
}

func (h *authHook) ID() string { return "nestmtx-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck}, []byte{b})
}

func (h *authHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	user, pass := pk.Connect.Username, pk.Connect.Password
	if equal(user, []byte(h.internalUser)) && equal(pass, []byte(h.internalPass)) {
		return true
	}
	if h.user == "" && h.pass == "" {
		return true
	}
	return equal(user, []byte(h.user)) && equal(pass, []byte(h.pass))
}

func (h *authHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool { return true }

func equal(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// levelFloor drops records below a level, whatever the wrapped handler allows.
type levelFloor struct {
	slog.Handler
	floor slog.Level
}

func (l levelFloor) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.floor && l.Handler.Enabled(ctx, lv)
}

// Handle demotes mochi's message-less warnings (a client that connected and
// left, a port scanner) to debug: they are not the operator's problem.
func (l levelFloor) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		if !l.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
		r.Message = "mqtt broker connection note"
	}
	return l.Handler.Handle(ctx, r)
}

func (l levelFloor) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFloor{l.Handler.WithAttrs(a), l.floor}
}

func (l levelFloor) WithGroup(n string) slog.Handler {
	return levelFloor{l.Handler.WithGroup(n), l.floor}
}
