// Over 500 lines: the embedded broker's setup, its login and access hook and its bounds act on the same mochi-mqtt server state.

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
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/nestmtx/nestmtx/internal/login"
	"github.com/nestmtx/nestmtx/internal/netguard"
	"github.com/nestmtx/nestmtx/internal/store"
)

// Broker is the embedded MQTT v5 broker. Besides the user's listener it has a
// private loopback listener for the daemon's own client, so the daemon reaches
// its broker whatever address the user bound (":1883", a LAN IP, IPv6).
type Broker struct {
	server       *mochi.Server
	public       *netguard.Listener
	publicOpen   bool
	publicAddr   net.Addr
	internalAddr net.Addr
	internalUser string
	internalPass string
}

// Accounts is where the broker checks logins: the same accounts as the API
// and RTSP.
type Accounts interface {
	Check(ctx context.Context, username, password, address string) (store.User, error)
}

// Users looks an account up by name (for the admin-only topics).
type Users interface {
	UserByName(username string) (store.User, error)
}

// BrokerOptions configure the embedded broker.
type BrokerOptions struct {
	Listen    string // host:port for clients
	BaseTopic string
	// DiscoveryPrefix is Home Assistant's discovery prefix, whose
	// nestmtx configs only the daemon may write; "" for none.
	DiscoveryPrefix string
	// DaemonClientID is the daemon's own client id, which nobody else may
	// take (taking a client id disconnects its holder).
	DaemonClientID string
	// Accounts checks logins; Users finds an account's role.
	Accounts Accounts
	Users    Users
	// Username and Password, when set, are one more login (with an
	// account's rights), for setups that predate accounts.
	Username, Password string
	// Anonymous lets clients in without a login, to read presence,
	// events and state only.
	Anonymous bool
	// MaxPacketBytes bounds what one client may send; larger packets make the
	// broker drop the client (MQTT v5 tells it the limit in CONNACK).
	MaxPacketBytes uint32
	// MaxClients, MaxSessionExpiry and MaxQueued bound what clients can
	// make the broker hold (see the README's Security section).
	MaxClients       int
	MaxSessionExpiry time.Duration
	MaxQueued        int
	Log              *slog.Logger
}

// Bounds that need no setting.
const (
	// connectTimeout closes connections that send no CONNECT.
	connectTimeout = 10 * time.Second
	// maxWritesPending bounds the packets queued for one connected client
	// that reads slowly; more are dropped for that client.
	maxWritesPending = 1024
	// receiveMaximum bounds the QoS 1/2 messages a client may have
	// unacknowledged towards the broker.
	receiveMaximum = 64
	// daemonInflight bounds the requests delivered to the daemon's own
	// client and not yet acknowledged (mochi's default).
	daemonInflight = 8192
)

// mochi acknowledges a QoS 1 PUBLISH with the reason code it finds in
// packets.QosCodes[1]: 0x01, which is SUBACK's "granted QoS 1" and no PUBACK
// reason code in MQTT v5; strict clients (Node-RED's) drop the connection
// on it. The map serves that one line of mochi and nothing else, so the
// fix is made there, once, rather than in a hook on every packet sent.
func init() { packets.QosCodes[1] = packets.CodeSuccess }

// StartBroker listens and serves until Close.
func StartBroker(o BrokerOptions) (*Broker, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 256
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = 256
	}
	public, err := netguard.Listen("tcp", o.Listen, netguard.Options{Name: "mqtt", HandshakeTimeout: connectTimeout,
		// Above mochi's own client cap, which answers with a CONNACK that
		// says why; this one only guards the file descriptors.
		MaxConns: o.MaxClients + 64, Log: log})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// Most often a Mosquitto already on the box (Home Assistant's).
			return nil, fmt.Errorf("embedded MQTT broker: %s is already in use, most likely by another MQTT broker; "+
				"either use that broker (NESTMTX_MQTT_URL=mqtt://user:password@127.0.0.1:1883) or move this one "+
				"(NESTMTX_MQTT_LISTEN=:1884): %w", o.Listen, err)
		}
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
	caps.MaximumClients = int64(o.MaxClients)
	caps.MaximumSessionExpiryInterval = uint32(o.MaxSessionExpiry / time.Second)
	// mochi's own cap on a client's stored QoS 1/2 messages applies to the
	// daemon's client too, which a burst of requests fills for a moment:
	// it stays high, and accessHook.OnQosPublish holds every other client
	// to MaxQueued.
	caps.MaximumInflight = daemonInflight
	caps.MaximumClientWritesPending = maxWritesPending
	caps.ReceiveMaximum = receiveMaximum
	caps.MaximumMessageExpiryInterval = int64(max(o.MaxSessionExpiry/time.Second, 60))
	// Acknowledgements must not echo the PUBLISH's properties (its
	// authorization user property above all) back to the client.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	srv := mochi.New(&mochi.Options{
		Capabilities: caps,
		// mochi logs every connection at info; keep the daemon's log for what
		// an operator needs to act on, and at most one of each warning a
		// minute, since clients can trigger them at will.
		Logger: slog.New(newBrokerLogHandler(log.Handler())),
		// No account may read $SYS (see the topic rules), so mochi's
		// refresh of it, every second by default, would only cost a
		// stop-the-world runtime.ReadMemStats each time, measurable on a
		// relay busy with readers. Once an hour keeps its uptime roughly
		// current for a future reader.
		SysTopicResendInterval: 3600,
	})
	rules := newTopicRules(o.BaseTopic)
	if o.DiscoveryPrefix != "" {
		rules.discovery = o.DiscoveryPrefix + "/"
	}
	hook := &accessHook{srv: srv, o: o, rules: rules, log: log.With("component", "mqtt-broker"),
		internalUser: b.internalUser, internalPass: b.internalPass}
	hook.adminCheck = hook.isAdmin
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

// Listener is the public listener, for health checks.
func (b *Broker) Listener() *netguard.Listener { return b.public }

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
	// mochi-mqtt v2.7.9's Close can deadlock: closing a listener lists its
	// clients under a read lock and takes the read lock again inside
	// (Clients.GetByListener calls Len), so a client that disconnects at
	// that moment (Clients.Delete waiting for the write lock) blocks both
	// for good (mochi-mqtt/server#488; the fix, #489, is not released).
	// Seen once in a test's shutdown. A stop must not hang on it: after
	// closeWait the broker is left to the process's exit.
	closed := make(chan error, 1)
	go func() { closed <- b.server.Close() }()
	select {
	case err := <-closed:
		return err
	case <-time.After(closeWait):
		b.server.Log.Warn("the embedded MQTT broker did not close in time (a lock-order bug of mochi-mqtt); leaving it to the process's exit")
		return nil
	}
}

const (
	closeGrace = time.Second
	closeWait  = 2 * time.Second
)

func (b *Broker) deliveriesPending() bool {
	for _, cl := range b.server.Clients.GetAll() {
		// Offline persistent sessions hold inflight messages too, and will
		// not acknowledge them now.
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

// accessHook is the broker's access control: logins, client ids, topic
// rules, and which login may receive each reply.
type accessHook struct {
	mochi.HookBase
	srv                        *mochi.Server
	o                          BrokerOptions
	rules                      topicRules
	log                        *slog.Logger
	internalUser, internalPass string

	// routing is the reply being delivered now, if any. mochi processes
	// one client's packets in order on one goroutine, and only the daemon
	// publishes replies, so there is at most one at a time: OnPublish sets
	// it, each delivery's OnACLCheck consults it, OnPublished clears it.
	routing atomic.Pointer[reply]
	// adminCheck is isAdmin as a func value made once: mochi asks
	// OnACLCheck for every delivery.
	adminCheck func(account string) bool
}

type reply struct {
	topic, recipient string
}

func (h *accessHook) ID() string { return "nestmtx-access" }

func (h *accessHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck,
		mochi.OnPublish, mochi.OnPublished, mochi.OnSessionEstablished, mochi.OnQosPublish}, []byte{b})
}

func (h *accessHook) kind(cl *mochi.Client) clientKind {
	switch {
	case cl.Net.Listener == "internal":
		return kindDaemon // only the daemon's credentials get in there
	case len(cl.Properties.Username) == 0:
		return kindAnonymous
	}
	return kindAccount
}

func account(cl *mochi.Client) string { return strings.ToLower(string(cl.Properties.Username)) }

// OnConnect refuses client ids that would take another login's session
// over: mochi disconnects the holder of a client id when a new connection
// claims it, which let anyone kick the daemon off its own broker.
func (h *accessHook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	if cl.Net.Listener == "internal" {
		return nil
	}
	refuse := cl.ID == h.o.DaemonClientID
	if held, ok := h.srv.Clients.Get(cl.ID); ok && !refuse {
		refuse = held.Net.Listener == "internal" || account(held) != account(cl)
	}
	if !refuse {
		return nil
	}
	h.log.Info("refused a client id held by another login", "client_id", cl.ID, "remote", cl.Net.Remote)
	_ = h.srv.SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
	return packets.ErrClientIdentifierNotValid
}

func (h *accessHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	user, pass := pk.Connect.Username, pk.Connect.Password
	if cl.Net.Listener == "internal" {
		return equal(user, []byte(h.internalUser)) && equal(pass, []byte(h.internalPass))
	}
	if len(user) == 0 {
		return h.o.Anonymous && len(pass) == 0
	}
	if h.o.Username != "" && equal(user, []byte(h.o.Username)) && equal(pass, []byte(h.o.Password)) {
		return true
	}
	if h.o.Accounts == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	_, err := h.o.Accounts.Check(ctx, string(user), string(pass), clientIP(cl))
	if err != nil {
		var th *login.ThrottledError
		if !errors.Is(err, store.ErrBadCredentials) && !errors.As(err, &th) && !errors.Is(err, login.ErrBusy) {
			h.log.Warn("checking an MQTT login failed", "error", err)
		}
		h.log.Debug("refused an MQTT login", "username", string(user), "remote", cl.Net.Remote, "reason", err)
		return false
	}
	return true
}

// OnSessionEstablished ends the connection's CONNECT timeout.
func (h *accessHook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	if cl.Net.Conn != nil {
		netguard.Established(cl.Net.Conn)
	}
}

func (h *accessHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	kind := h.kind(cl)
	if write {
		return h.rules.canPublishAs(kind, string(cl.Properties.Username), topic, h.adminCheck)
	}
	if r := h.routing.Load(); r != nil && r.topic == topic && kind != kindDaemon {
		// EqualFold on the raw name: no lower-cased copy per delivery.
		if kind != kindAccount || !strings.EqualFold(string(cl.Properties.Username), r.recipient) {
			return false
		}
	}
	return h.rules.canSubscribe(kind, string(cl.Properties.Username), topic, h.adminCheck)
}

func (h *accessHook) isAdmin(acct string) bool {
	if h.o.Users == nil {
		return false
	}
	u, err := h.o.Users.UserByName(acct)
	return err == nil && u.CanLogin && u.Role == store.RoleAdmin
}

// OnPublish stamps each request with the login that sent it (replacing
// whatever the client put under those keys), and notes who may receive a
// reply the daemon publishes.
func (h *accessHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	switch h.kind(cl) {
	case kindAccount:
		if pk.TopicName == h.rules.requests {
			user := make([]packets.UserProperty, 0, len(pk.Properties.User)+1)
			for _, p := range pk.Properties.User {
				if p.Key != propSender {
					user = append(user, p)
				}
			}
			from := sender{account: account(cl), ip: clientIP(cl), client: cl.ID}
			pk.Properties.User = append(user, packets.UserProperty{Key: propSender, Val: from.String()})
		}
	case kindDaemon:
		h.routing.Store(nil)
		for _, p := range pk.Properties.User {
			if p.Key == propRecipient {
				h.routing.Store(&reply{topic: pk.TopicName, recipient: p.Val})
				break
			}
		}
	}
	return pk, nil
}

func (h *accessHook) OnPublished(cl *mochi.Client, pk packets.Packet) {
	if h.kind(cl) == kindDaemon {
		h.routing.Store(nil)
	}
}

// OnQosPublish holds a client's stored QoS 1/2 messages (in flight, or
// kept for an offline persistent session) to MaxQueued, dropping the
// oldest: fifty abandoned sessions subscribed to everything must not grow
// the daemon without bound. The daemon's own client is exempt. A client
// over the bound is trimmed to three quarters of it at once, since finding
// the oldest means copying and sorting them all.
func (h *accessHook) OnQosPublish(cl *mochi.Client, pk packets.Packet, sent int64, resends int) {
	if resends > 0 || cl.Net.Listener == "internal" || cl.State.Inflight.Len() <= h.o.MaxQueued {
		return
	}
	keep := h.o.MaxQueued * 3 / 4
	for _, old := range cl.State.Inflight.GetAll(false) {
		if cl.State.Inflight.Len() <= keep {
			return
		}
		if old.PacketID == pk.PacketID {
			continue
		}
		if cl.State.Inflight.Delete(old.PacketID) {
			// Its send quota was taken when it was stored.
			cl.State.Inflight.IncreaseSendQuota()
		}
	}
}

// EndLogins disconnects every client logged in as username (in any case)
// but the one with client id except, and forgets their sessions: the
// account was disabled or deleted, or its password changed, and a login
// must not outlive that. The client that made the change keeps its
// connection (it gets its reply); like its token, it is the session that
// proved the old password.
func (b *Broker) EndLogins(username, except string) int {
	n := 0
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Listener == "internal" || cl.ID == except || !strings.EqualFold(string(cl.Properties.Username), username) {
			continue
		}
		if !cl.Closed() {
			// mochi writes without a deadline, under the client's lock: a
			// client that stopped reading would hold this caller (an API
			// worker) forever. A second is enough to tell it why.
			if cl.Net.Conn != nil {
				_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			}
			_ = b.server.DisconnectClient(cl, packets.ErrNotAuthorized)
		}
		cl.ClearInflights()
		b.server.UnsubscribeClient(cl)
		b.server.Clients.Delete(cl.ID)
		n++
	}
	return n
}

// clientIP is cl's address as the login gate counts it, the same for
// every door (netguard.ClientIP).
func clientIP(cl *mochi.Client) string {
	if cl.Net.Conn == nil {
		return ""
	}
	return netguard.ClientIP(cl.Net.Conn.RemoteAddr())
}

func equal(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// brokerLogHandler keeps mochi's log for what an operator needs to act on:
// info and below are dropped, message-less warnings (a client that
// connected and left, a port scanner) are demoted to debug, and each
// warning text is passed at most once a minute with a count of the ones
// held back, since any client can make mochi warn at will.
type brokerLogHandler struct {
	slog.Handler
	limit *logLimiter
}

type logLimiter struct {
	mu   sync.Mutex
	last map[string]*limited
}

type limited struct {
	at         time.Time
	suppressed int
}

func newBrokerLogHandler(h slog.Handler) brokerLogHandler {
	return brokerLogHandler{Handler: h, limit: &logLimiter{last: map[string]*limited{}}}
}

func (l brokerLogHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return l.Handler.Enabled(ctx, lv)
}

func (l brokerLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		if !l.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
		r.Message = "mqtt broker connection note"
		return l.Handler.Handle(ctx, r)
	}
	if r.Level < slog.LevelWarn {
		if !l.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
		return l.Handler.Handle(ctx, r)
	}
	suppressed, ok := l.limit.allow(r.Message, r.Time)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r.AddAttrs(slog.Int("suppressed_since_last", suppressed))
	}
	return l.Handler.Handle(ctx, r)
}

func (l *logLimiter) allow(msg string, now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.last[msg]
	if ok && now.Sub(e.at) < time.Minute {
		e.suppressed++
		return 0, false
	}
	if !ok {
		if len(l.last) > 256 {
			clear(l.last)
		}
		e = &limited{}
		l.last[msg] = e
	}
	n := e.suppressed
	e.at, e.suppressed = now, 0
	return n, true
}

func (l brokerLogHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return brokerLogHandler{l.Handler.WithAttrs(a), l.limit}
}

func (l brokerLogHandler) WithGroup(n string) slog.Handler {
	return brokerLogHandler{l.Handler.WithGroup(n), l.limit}
}
