// Over 500 lines: the client connection's lifecycle (connect, durable session, reconnect, close) is one sequence.

package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/backoff"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/tlsfiles"
)

// Options configure the binding.
type Options struct {
	// BrokerURL is an external broker; empty starts the embedded one.
	BrokerURL string
	// Listen is the embedded broker's listener.
	Listen             string
	Username, Password string
	BaseTopic          string
	// DiscoveryPrefix is Home Assistant's discovery prefix, for the
	// embedded broker's topic rules ("" for none).
	DiscoveryPrefix   string
	ClientID          string
	KeepAlive         time.Duration
	CAFile            string
	CertFile, KeyFile string
	// MaxRequestBytes is the API's request size limit.
	MaxRequestBytes int
	// Workers bounds the requests handled at once.
	Workers int
	// Backlog bounds the requests waiting for a worker; more are answered
	// TOO_MANY_REQUESTS.
	Backlog int
	// SessionExpiry is the session an external broker is asked to keep
	// while the daemon is away; 0 starts every connection clean.
	SessionExpiry time.Duration
	// RequestMaxAge: a request older than this on arrival is refused.
	RequestMaxAge time.Duration
	// EventBuffer bounds the events kept while the broker is away.
	EventBuffer int
	// The embedded broker's logins and bounds (see BrokerOptions).
	Accounts         Accounts
	Users            Users
	Anonymous        bool
	MaxClients       int
	MaxSessionExpiry time.Duration
	MaxQueued        int
	Log              *slog.Logger
}

// Handler answers API requests (the api.Dispatcher).
type Handler interface {
	Handle(ctx context.Context, req api.Request) (any, *api.Error)
}

// Service is the running MQTT binding.
type Service struct {
	opts    Options
	topics  topics
	handler Handler
	bus     *events.Bus
	log     *slog.Logger

	broker *Broker
	cm     *autopaho.ConnectionManager

	// durable: the daemon keeps a session on an external broker (see
	// Options.SessionExpiry), so the broker queues requests while it is away.
	durable bool

	connected   atomic.Bool
	subscribed  atomic.Bool
	firstReady  chan struct{}
	readyOnce   sync.Once
	connections atomic.Uint64
	// conn describes the newest connection; the sender catches up with it
	// (onConnected) before it publishes anything else.
	conn atomic.Pointer[connInfo]
	// downSince is when the current outage began (unix ns): the reconnect
	// backoff grows with it.
	downSince atomic.Int64
	// pingLost: the last connection was found dead by a keepalive timeout,
	// so it may have been dead for up to 1.5 keepalives before.
	pingLost atomic.Bool
	// epoch ends when the session that outbound QoS 1 messages were stored
	// in is gone, so that whoever waits for their PUBACK sends them again.
	epoch atomic.Pointer[sessionEpoch]
	// window is the current backlog window (backlog.go), nil when none.
	window atomic.Pointer[backlogWindow]
	// firstWindow is the window of the first connection, whose start is
	// read from the broker (nil unless durable).
	firstWindow *backlogWindow
	// statusWatch receives the retained status while onConnected reads it.
	statusWatch atomic.Pointer[chan *paho.Publish]
	logsDropped atomic.Uint64
	// discovery, once started (discovery.go), hears of each new
	// connection and takes the messages on its topics.
	discovery atomic.Pointer[Discovery]
	// started is closed once cm is set (callbacks may run before).
	started chan struct{}

	out         *outbox
	final       chan chan struct{} // Close asks publishLoop for the offline status
	wake        chan struct{}
	lastOutLog  time.Time // only touched by publishLoop
	backlog     chan inbound
	pending     atomic.Int64 // requests taken and not answered yet
	refusals    chan struct{}
	dropped     atomic.Uint64
	lastDropLog atomic.Value // time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// connInfo is one established connection as the CONNACK described it.
type connInfo struct {
	gen            uint64
	sessionPresent bool
}

// sessionEpoch lives as long as one MQTT session on the broker.
type sessionEpoch struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newEpoch() *sessionEpoch {
	ctx, cancel := context.WithCancel(context.Background())
	return &sessionEpoch{ctx: ctx, cancel: cancel}
}

// endEpoch ends the current session epoch and starts the next one.
func (s *Service) endEpoch() { s.epoch.Swap(newEpoch()).cancel() }

// Start runs the binding: the embedded broker if no external one is set, the
// client connection (reconnecting forever), request handling and publishing.
func Start(opts Options, h Handler, bus *events.Bus) (*Service, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Workers <= 0 {
		opts.Workers = 64
	}
	if opts.Backlog <= 0 {
		opts.Backlog = 4096
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = 64 << 10
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 30 * time.Second
	}
	if opts.RequestMaxAge <= 0 {
		opts.RequestMaxAge = 5 * time.Minute
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 1024
	}
	durable := opts.BrokerURL != "" && opts.SessionExpiry >= time.Second
	if opts.ClientID == "" {
		host, _ := os.Hostname()
		if durable {
			// A session is resumed only under the same client id: an id per
			// run would leave on the broker, at every restart, an orphan
			// session that queues every request for SessionExpiry. The base
			// topic keeps two daemons of one host apart.
			opts.ClientID = "nestmtx-" + clientIDPart(host) + "-" + clientIDPart(opts.BaseTopic)
		} else {
			opts.ClientID = fmt.Sprintf("nestmtx-%s-%d", host, os.Getpid())
		}
	}
	s := &Service{opts: opts, topics: newTopics(opts.BaseTopic), handler: h, bus: bus, durable: durable,
		log: opts.Log.With("component", "mqtt"), wake: make(chan struct{}, 1), out: newOutbox(opts.EventBuffer), final: make(chan chan struct{}),
		backlog: make(chan inbound, opts.Backlog), refusals: make(chan struct{}, opts.Workers),
		firstReady: make(chan struct{}), started: make(chan struct{})}
	s.lastDropLog.Store(time.Time{})
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.epoch.Store(newEpoch())
	s.downSince.Store(time.Now().UnixNano())
	if durable {
		// The session may be one an earlier run of the daemon left, with
		// the requests sent while it was away: when it left is read from
		// the broker once connected (onConnected).
		s.firstWindow = newBacklogWindow()
		s.window.Store(s.firstWindow)
	}

	serverURL, user, pass := opts.BrokerURL, opts.Username, opts.Password
	if serverURL == "" {
		maxPacket := uint32(4 << 20)
		if m := uint32(opts.MaxRequestBytes) * 4; m > maxPacket {
			maxPacket = m
		}
		b, err := StartBroker(BrokerOptions{Listen: opts.Listen, BaseTopic: opts.BaseTopic, DiscoveryPrefix: opts.DiscoveryPrefix, DaemonClientID: opts.ClientID,
			Accounts: opts.Accounts, Users: opts.Users, Username: opts.Username, Password: opts.Password,
			Anonymous: opts.Anonymous, MaxPacketBytes: maxPacket, MaxClients: opts.MaxClients,
			MaxSessionExpiry: opts.MaxSessionExpiry, MaxQueued: opts.MaxQueued, Log: opts.Log})
		if err != nil {
			return nil, err
		}
		s.broker = b
		serverURL, user, pass = b.internalURL(), b.internalUser, b.internalPass
		s.log.Info("embedded MQTT v5 broker listening", "address", b.Addr().String(), "anonymous", opts.Anonymous)
		if opts.Anonymous {
			s.log.Warn("the embedded MQTT broker lets clients in without a login (NESTMTX_MQTT_ANONYMOUS=true); they can read presence, events and state, which name camera paths")
		}
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		s.closeBroker()
		return nil, fmt.Errorf("mqtt url: %w", err)
	}
	if u.User != nil && user == "" {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	cfg, err := s.clientConfig(u, user, pass)
	if err != nil {
		s.closeBroker()
		return nil, err
	}
	cm, err := autopaho.NewConnection(s.ctx, cfg)
	if err != nil {
		s.closeBroker()
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	s.cm = cm
	close(s.started)
	sub := bus.Subscribe(4096)
	s.wg.Add(2 + opts.Workers)
	go s.publishLoop(sub)
	go s.sendLoop()
	for range opts.Workers {
		go s.work()
	}

	if s.broker != nil {
		// The embedded broker is in this process: it is a bug, not an outage,
		// if the daemon cannot reach it.
		select {
		case <-s.firstReady:
		case <-time.After(10 * time.Second):
			s.Close(context.Background())
			return nil, errors.New("mqtt: the daemon could not subscribe on its embedded broker within 10s")
		}
		if err := s.broker.ServePublic(); err != nil {
			s.Close(context.Background())
			return nil, fmt.Errorf("embedded MQTT broker: %w", err)
		}
	}
	return s, nil
}

func (s *Service) clientConfig(u *url.URL, user, pass string) (autopaho.ClientConfig, error) {
	cfg := autopaho.ClientConfig{
		ServerUrls: []*url.URL{u},
		KeepAlive:  uint16(s.opts.KeepAlive / time.Second),
		// Durable: clean start false on the first connection too, so that
		// the requests sent while the daemon restarted (queued in the
		// session its previous run left) are delivered, and answered; how
		// long they waited is read from the retained status (readDeparture).
		CleanStartOnInitialConnection: !s.durable,
		ConnectTimeout:                10 * time.Second,
		ReconnectBackoff:              s.reconnectDelay,
		ConnectUsername:               user,
		ConnectPassword:               []byte(pass),
		WillMessage: &paho.WillMessage{Topic: s.topics.status, Payload: []byte("offline"),
			QoS: 1, Retain: true},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ack *paho.Connack) {
			present := ack != nil && ack.SessionPresent
			if !present {
				// A new session: whatever waited for a PUBACK in the old one
				// must be sent again, and nothing was queued for the daemon.
				s.endEpoch()
				if w := s.window.Swap(nil); w != nil {
					w.settle(time.Time{}, false)
					w.markerSent()
				}
				if w := s.firstWindow; w != nil {
					w.settle(time.Time{}, false)
				}
			}
			n := s.connections.Add(1)
			s.conn.Store(&connInfo{gen: n, sessionPresent: present})
			if w := s.window.Load(); w != nil && present {
				s.wg.Add(1)
				go s.markBacklogEnd(w, n)
			}
			s.connected.Store(true)
			outage := time.Since(time.Unix(0, s.downSince.Load())).Round(time.Millisecond)
			if n > 1 {
				s.log.Info("reconnected to the MQTT broker", "url", redactURL(u), "outage", outage, "session_resumed", present)
			} else {
				s.log.Info("connected to the MQTT broker", "url", redactURL(u), "session_resumed", present)
			}
			s.wakeSender()
			if d := s.discovery.Load(); d != nil {
				d.poke()
			}
		},
		OnConnectionDown: func() bool {
			now := time.Now()
			s.connected.Store(false)
			s.subscribed.Store(false)
			s.downSince.Store(now.UnixNano())
			since := now
			if s.pingLost.Swap(false) {
				// Found dead by the keepalive: it may have been dead, and
				// the broker writing requests into it, that long before.
				since = now.Add(-s.opts.KeepAlive * 3 / 2)
			}
			if !s.durable {
				s.endEpoch() // the session ends with the connection
			} else if s.window.Load() == nil {
				// An open window keeps its older start: what it was
				// waiting for may still be queued.
				w := newBacklogWindow()
				w.settle(since, true)
				s.window.CompareAndSwap(nil, w)
			}
			if s.ctx.Err() == nil {
				s.log.Warn("lost the MQTT broker; reconnecting", "url", redactURL(u))
			}
			return true
		},
		OnConnectError: func(err error) {
			if s.ctx.Err() == nil {
				s.log.Warn("cannot connect to the MQTT broker; retrying", "url", redactURL(u), "error", describeConnectError(err))
			}
		},
		ClientConfig: paho.ClientConfig{
			ClientID: s.opts.ClientID,
			// Every wait on the broker is bounded by a context of ours; the
			// default (10 s) would give up on a QoS 1 message still stored
			// in the session, which the client resends after a reconnect,
			// and sending it again would duplicate it.
			PacketTimeout: 24 * time.Hour,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) { return s.onPublish(pr.Packet), nil },
				func(pr paho.PublishReceived) (bool, error) {
					if d := s.discovery.Load(); d != nil && !pr.AlreadyHandled {
						return d.onPublish(pr.Packet), nil
					}
					return false, nil
				},
			},
			OnClientError: func(err error) {
				if strings.Contains(err.Error(), "PINGRESP") {
					s.pingLost.Store(true)
				}
				s.log.Debug("mqtt client error", "error", err)
			},
		},
	}
	if s.durable {
		cfg.SessionExpiryInterval = uint32(min(s.opts.SessionExpiry/time.Second, math.MaxUint32-1))
	}
	switch strings.ToLower(u.Scheme) {
	case "mqtts", "ssl", "tls", "wss":
		tc, err := s.tlsConfig()
		if err != nil {
			return cfg, err
		}
		cfg.TlsCfg = tc
	}
	return cfg, nil
}

func ptr[T any](v T) *T { return &v }

// clientIDPart keeps what any broker accepts in a client id.
func clientIDPart(v string) string {
	b := []byte(v)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

func (s *Service) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.opts.CAFile != "" {
		pool, err := tlsfiles.SystemPoolWith(s.opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt CA file: %w", err)
		}
		tc.RootCAs = pool
	}
	if s.opts.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.opts.CertFile, s.opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// reconnectDelay is autopaho's backoff: attempt counts the attempts of this
// outage, whose length comes from downSince.
func (s *Service) reconnectDelay(attempt int) time.Duration {
	return reconnectBackoff(attempt, time.Since(time.Unix(0, s.downSince.Load())))
}

// reconnectBackoff is the delay before reconnection attempt n of an outage that has
// lasted outage so far. It starts at 250 ms and doubles, capped at 2 s for the
// first two minutes (a restarted broker is found within 2 s, and the API
// answers again within a round trip of that), then at 5 s, 15 s after five
// minutes and 30 s after ten, when the broker is clearly down for long. The
// delay is drawn from the upper half of the step, so that many daemons on one
// broker do not reconnect in lockstep after it restarts.
func reconnectBackoff(attempt int, outage time.Duration) time.Duration {
	limit := 2 * time.Second
	switch {
	case outage >= 10*time.Minute:
		limit = 30 * time.Second
	case outage >= 5*time.Minute:
		limit = 15 * time.Second
	case outage >= 2*time.Minute:
		limit = 5 * time.Second
	}
	return backoff.Backoff{First: 250 * time.Millisecond, Max: limit, Jitter: true}.Delay(attempt + 1)
}

func redactURL(u *url.URL) string { return u.Redacted() }

// Connected reports whether the client is connected to the broker.
func (s *Service) Connected() bool { return s.connected.Load() }

// Ready reports whether requests are being received: connected and
// subscribed, with presence and retained state republished.
func (s *Service) Ready() bool { return s.subscribed.Load() }

func (s *Service) markReady() {
	s.subscribed.Store(true)
	s.readyOnce.Do(func() { close(s.firstReady) })
}

// Broker is the embedded broker, nil with an external one.
func (s *Service) Broker() *Broker { return s.broker }

// BrokerAddr is the embedded broker's listener, empty with an external broker.
func (s *Service) BrokerAddr() string {
	if s.broker == nil {
		return ""
	}
	return s.broker.Addr().String()
}

// Close publishes offline, disconnects and stops the embedded broker. A
// durable session stays on the broker, which queues the requests sent until
// the daemon is back.
func (s *Service) Close(ctx context.Context) error {
	if s.connected.Load() {
		// The requests already taken (acknowledged to the broker) are
		// answered before the connection goes, for a moment at most: the
		// broker keeps for the next run only what is not taken yet.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		for s.durable && s.pending.Load() > 0 && wctx.Err() == nil {
			select {
			case <-wctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
		cancel()
		// Then what the bus delivered (the last events and states of
		// the shutdown), and offline after them, through the sender.
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		done := make(chan struct{})
		select {
		case s.final <- done:
			select {
			case <-done:
			case <-fctx.Done():
				s.log.Warn("could not publish the last events and the offline status", "error", fctx.Err(),
					"unsent", s.out.len())
			}
		case <-fctx.Done():
		}
		cancel()
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = s.cm.Disconnect(dctx)
		cancel()
	}
	s.cancel()
	if s.cm != nil {
		select {
		case <-s.cm.Done():
		case <-ctx.Done():
		}
	}
	s.wg.Wait()
	s.closeBroker()
	return nil
}

// statusExpiry is the Message Expiry Interval of the retained offline status
// (about 68 years: it never expires in practice). What a broker reports left
// of it says how long ago the daemon left.
const statusExpiry = math.MaxInt32

// offline is the status a clean shutdown publishes, like the Last Will.
func (s *Service) offline() *paho.Publish {
	p := &paho.Publish{Topic: s.topics.status, Payload: []byte("offline"), QoS: 1, Retain: true}
	if s.durable {
		p.Properties = &paho.PublishProperties{MessageExpiry: ptr(uint32(statusExpiry))}
	}
	return p
}

func (s *Service) closeBroker() {
	if s.broker != nil {
		if err := s.broker.Close(); err != nil {
			s.log.Warn("closing the embedded broker", "error", err)
		}
	}
}

var (
	// errNotConnected: the message was not handed to the broker.
	errNotConnected = errors.New("not connected to the MQTT broker")
	// errRefused: the broker acknowledged the message with an error reason
	// code (an ACL, a quota); sending it again would not help.
	errRefused = errors.New("the MQTT broker refused the message")
)

// send publishes p and, for QoS 1, waits for the broker's PUBACK. A message
// handed to a durable session is resent by the client after a reconnection
// and its PUBACK still reaches this wait; if the session was lost instead
// (the epoch ended), it is sent again. With await, send also waits for a
// connection; without, it returns errNotConnected at once when there is
// none. It gives up only when ctx ends or the broker refuses the message.
func (s *Service) send(ctx context.Context, p *paho.Publish, await bool) error {
	for {
		if await {
			if err := s.cm.AwaitConnection(ctx); err != nil {
				return err
			}
		} else if !s.connected.Load() {
			return errNotConnected
		}
		ep := s.epoch.Load()
		pctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(ep.ctx, cancel)
		res, err := s.cm.Publish(pctx, p)
		stop()
		cancel()
		switch {
		case err == nil:
			return nil
		case res != nil && res.ReasonCode >= 0x80:
			return fmt.Errorf("%w: reason code %d", errRefused, res.ReasonCode)
		case ctx.Err() != nil:
			return ctx.Err()
		case !await:
			return errNotConnected
		}
		// Not handed over (the connection just went down) or the session
		// was lost: try again on the next connection.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// describeConnectError says in words why a broker refused the connection:
// paho's "server denied connect (reason: 135)" names a number only.
func describeConnectError(err error) string {
	var ce *autopaho.ConnackError
	if !errors.As(err, &ce) {
		return err.Error()
	}
	why := connackReasons[ce.ReasonCode]
	if why == "" {
		why = fmt.Sprintf("the broker refused the connection (CONNACK reason code %d)", ce.ReasonCode)
	}
	if ce.Reason != "" {
		why += " (the broker says: " + ce.Reason + ")"
	}
	return why
}

// connackReasons are MQTT v5's CONNACK refusals (§3.2.2.2) as an operator
// would act on them.
var connackReasons = map[byte]string{
	0x80: "the broker refused the connection for an unspecified reason",
	0x81: "the broker could not read the CONNECT packet",
	0x82: "the broker refused the connection: protocol error",
	0x84: "the broker does not speak MQTT v5, which nestmtx needs",
	0x85: "the broker refused the client id (NESTMTX_MQTT_CLIENT_ID)",
	0x86: "wrong MQTT username or password (NESTMTX_MQTT_USERNAME, NESTMTX_MQTT_PASSWORD)",
	0x87: "the MQTT login is not authorized to connect (check the broker's ACL for NESTMTX_MQTT_USERNAME)",
	0x88: "the broker is unavailable",
	0x89: "the broker is busy",
	0x8A: "the broker has banned this client",
	0x8C: "the broker does not support the authentication method",
	0x95: "the CONNECT packet is too large for the broker",
	0x97: "the broker's quota is exceeded",
	0x9F: "the broker refused the connection rate: too many connections",
}
