package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/events"
)

// Options configure the binding.
type Options struct {
	// BrokerURL is an external broker; empty starts the embedded one.
	BrokerURL string
	// Listen is the embedded broker's listener.
	Listen             string
	Username, Password string
	BaseTopic          string
	ClientID           string
	KeepAlive          time.Duration
	CAFile             string
	CertFile, KeyFile  string
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

	connected   atomic.Bool
	subscribed  atomic.Bool
	firstReady  chan struct{}
	readyOnce   sync.Once
	connections atomic.Uint64
	resync      chan struct{}
	backlog     chan *paho.Publish
	refusals    chan struct{}
	dropped     atomic.Uint64
	lastDropLog atomic.Value // time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type topics struct {
	base, requests, responses, failures, status string
	rules                                       topicRules
}

func newTopics(base string) topics {
	return topics{base: base, requests: base + "/requests", responses: base + "/responses/",
		failures: base + "/failures", status: base + "/status", rules: newTopicRules(base)}
}

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
	if opts.ClientID == "" {
		host, _ := os.Hostname()
		opts.ClientID = fmt.Sprintf("nestmtx-%s-%d", host, os.Getpid())
	}
	s := &Service{opts: opts, topics: newTopics(opts.BaseTopic), handler: h, bus: bus,
		log: opts.Log.With("component", "mqtt"), resync: make(chan struct{}, 1),
		backlog: make(chan *paho.Publish, opts.Backlog), refusals: make(chan struct{}, opts.Workers),
		firstReady: make(chan struct{})}
	s.lastDropLog.Store(time.Time{})
	s.ctx, s.cancel = context.WithCancel(context.Background())

	serverURL, user, pass := opts.BrokerURL, opts.Username, opts.Password
	if serverURL == "" {
		maxPacket := uint32(4 << 20)
		if m := uint32(opts.MaxRequestBytes) * 4; m > maxPacket {
			maxPacket = m
		}
		b, err := StartBroker(BrokerOptions{Listen: opts.Listen, BaseTopic: opts.BaseTopic, DaemonClientID: opts.ClientID,
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
	sub := bus.Subscribe(4096)
	s.wg.Add(1 + opts.Workers)
	go s.publishLoop(sub)
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
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     uint16(s.opts.KeepAlive / time.Second),
		CleanStartOnInitialConnection: true,
		ConnectTimeout:                10 * time.Second,
		ReconnectBackoff:              backoff,
		ConnectUsername:               user,
		ConnectPassword:               []byte(pass),
		WillMessage: &paho.WillMessage{Topic: s.topics.status, Payload: []byte("offline"),
			QoS: 1, Retain: true},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			s.connected.Store(true)
			n := s.connections.Add(1)
			if n > 1 {
				s.log.Info("reconnected to the MQTT broker", "url", redactURL(u))
			} else {
				s.log.Info("connected to the MQTT broker", "url", redactURL(u))
			}
			select {
			case s.resync <- struct{}{}:
			default:
			}
		},
		OnConnectionDown: func() bool {
			s.connected.Store(false)
			s.subscribed.Store(false)
			if s.ctx.Err() == nil {
				s.log.Warn("lost the MQTT broker; reconnecting", "url", redactURL(u))
			}
			return true
		},
		OnConnectError: func(err error) {
			if s.ctx.Err() == nil {
				s.log.Warn("cannot connect to the MQTT broker; retrying", "url", redactURL(u), "error", err)
			}
		},
		ClientConfig: paho.ClientConfig{
			ClientID: s.opts.ClientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) { return s.onPublish(pr.Packet), nil },
			},
			OnClientError: func(err error) { s.log.Debug("mqtt client error", "error", err) },
		},
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

func (s *Service) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.opts.CAFile != "" {
		pem, err := os.ReadFile(s.opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt CA file %s: no PEM certificate in it", s.opts.CAFile)
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

// backoff grows from 250 ms to 30 s with jitter, so that many daemons on one
// broker do not reconnect in lockstep after it restarts.
func backoff(attempt int) time.Duration {
	d := 250 * time.Millisecond << min(attempt, 7)
	if d > 30*time.Second {
		d = 30 * time.Second
	}
	return d/2 + rand.N(d/2+1)
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

// Close publishes offline, disconnects and stops the embedded broker.
func (s *Service) Close(ctx context.Context) error {
	if s.connected.Load() {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := s.cm.Publish(pctx, &paho.Publish{Topic: s.topics.status, Payload: []byte("offline"), QoS: 1, Retain: true})
		cancel()
		if err != nil {
			s.log.Warn("could not publish offline status", "error", err)
		}
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

func (s *Service) closeBroker() {
	if s.broker != nil {
		if err := s.broker.Close(); err != nil {
			s.log.Warn("closing the embedded broker", "error", err)
		}
	}
}

// errNotConnected is returned by publishes while the broker is away.
var errNotConnected = errors.New("not connected to the MQTT broker")

func (s *Service) publish(ctx context.Context, p *paho.Publish) error {
	if !s.connected.Load() {
		return errNotConnected
	}
	_, err := s.cm.Publish(ctx, p)
	return err
}
