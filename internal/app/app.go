// Package app wires the daemon's parts together and owns their lifecycle:
// start in dependency order, stop in reverse, within a deadline.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/credentials"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/login"
	"github.com/nestmtx/nestmtx/internal/logstream"
	"github.com/nestmtx/nestmtx/internal/mqtt"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/password"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
	"github.com/nestmtx/nestmtx/internal/socketio"
	"github.com/nestmtx/nestmtx/internal/store"
)

// App is one running daemon.
type App struct {
	cfg     config.Config
	log     *slog.Logger
	version api.VersionInfo

	store   *store.Store
	gate    *login.Gate
	bus     *events.Bus
	logs    *logstream.Hub
	health  *api.Health
	api     *api.Dispatcher
	rtsp    *rtspserver.Server
	cameras *cameraDirectory
	creds   *credentials.Service
	mqtt    *mqtt.Service

	stopCameras context.CancelFunc

	sim              *nestsim.Sim // the demo's simulated Google
	demoCredentialID uint64

	// googleLimits overrides Google's command quotas (benchmarks only).
	googleLimits nest.Limits
	metrics      *metrics
	metricsSrv   *http.Server
	hooks        hookState
	sioMu        sync.Mutex
	sio          *socketio.Server
	// statsPeriod overrides how often cameras refresh their figures
	// (tests only; 0 is the supervisor's 10 s).
	statsPeriod time.Duration

	httpSrv *http.Server
	httpLn  net.Listener

	started  time.Time
	stop     context.CancelFunc
	bg       sync.WaitGroup
	shutdown sync.Once
}

// New opens the store and builds the API; nothing listens yet.
func New(cfg config.Config, log *slog.Logger, version api.VersionInfo) (*App, error) {
	if cfg.Demo {
		// The demo's simulated credential and cameras must never be in a
		// real install's store, nor a real credential in the demo's.
		cfg.DataDir = DemoDataDir(cfg.DataDir)
	}
	st, err := store.Open(cfg.DataDir, store.Options{Log: log.With("component", "store")})
	if err != nil {
		return nil, err
	}
	if !cfg.Demo {
		if err := forgetDemoData(st, cfg.DataDir, log); err != nil {
			st.Close()
			return nil, err
		}
	}
	// Every line the daemon logs can also be followed live (Socket.IO's
	// log event, MQTT's B/logs/<level>).
	logs := logstream.NewHub("nestmtx")
	log = slog.New(logs.Handler(log.Handler()))
	a := &App{cfg: cfg, log: log, logs: logs, version: version, store: st, bus: events.NewBus(nil), health: api.NewHealth(), started: time.Now()}
	// One gate for the API, MQTT and RTSP logins, so that throttling sees
	// a guesser whichever door it knocks on.
	a.gate = login.New(st, login.Options{AttemptsPerMinute: cfg.LoginAttemptsPerMinute, Log: log.With("component", "login")})
	if err := a.firstStart(); err != nil {
		st.Close()
		return nil, err
	}
	a.registerHealth()
	a.metrics = newMetrics(a)
	return a, nil
}

// Start starts the cameras, Google's side and the listeners.
func (a *App) Start() error {
	google := googleSide{Endpoints: nest.Endpoints{AuthURL: a.cfg.GoogleAuthURL, TokenURL: a.cfg.GoogleTokenURL,
		SDMURL: a.cfg.GoogleSDMURL}, CAFile: a.cfg.GoogleCAFile}
	if a.cfg.Demo {
		var err error
		if google, err = a.startDemo(); err != nil {
			return err
		}
	}
	a.startHooks() // before the cameras, so that it misses none of their events
	if err := a.startCameras(google); err != nil {
		return err
	}
	a.registerListenerHealth(a.rtsp.Listener())
	if a.cfg.Demo {
		if err := a.finishDemo(); err != nil {
			return err
		}
	}
	a.api = api.New(api.Deps{
		Store:           a.store,
		TokenTTL:        a.cfg.TokenTTL,
		Logins:          a.gate,
		PasswordChanged: a.passwordChanged,
		LoginsEnded:     a.endLogins,
		Health:          a.health,
		Version:         a.version,
		Cameras:         a.cameras,
		LiveCamera: func(id uint64) any {
			if s, ok := a.cameras.Snapshot(id); ok {
				return s.State
			}
			return nil
		},
		Google: a.creds,
		Log:    a.log.With("component", "api"),
	})
	a.metrics.knowRoutes(a.api.Routes())
	var err error
	a.mqtt, err = mqtt.Start(mqtt.Options{
		BrokerURL: a.cfg.MQTTURL, Listen: a.cfg.MQTTListen,
		Username: a.cfg.MQTTUsername, Password: a.cfg.MQTTPassword,
		BaseTopic: a.cfg.MQTTBaseTopic, DiscoveryPrefix: a.cfg.HADiscoveryPrefix, ClientID: a.cfg.MQTTClientID, KeepAlive: a.cfg.MQTTKeepAlive,
		CAFile: a.cfg.MQTTCAFile, CertFile: a.cfg.MQTTCertFile, KeyFile: a.cfg.MQTTKeyFile,
		MaxRequestBytes: a.cfg.MQTTMaxRequestBytes,
		SessionExpiry:   a.cfg.MQTTSessionExpiry, RequestMaxAge: a.cfg.MQTTRequestMaxAge, EventBuffer: a.cfg.MQTTEventBuffer,
		Accounts: a.gate, Users: a.store, Anonymous: a.cfg.MQTTAnonymous,
		MaxClients: a.cfg.MQTTMaxClients, MaxSessionExpiry: a.cfg.MQTTMaxSessionExpiry, MaxQueued: a.cfg.MQTTMaxQueuedMessages,
		Log: a.log,
	}, instrumented{h: a.api, transport: "mqtt", m: a.metrics}, a.bus)
	if err != nil {
		return err
	}
	if b := a.mqtt.Broker(); b != nil {
		a.registerListenerHealth(b.Listener())
	}
	if level, ok := logstream.ParseLevel(a.cfg.MQTTLogs); ok {
		a.mqtt.PublishLogs(a.logs.Subscribe(level, 1024))
	}
	a.startDiscovery()
	if err := a.startHTTP(); err != nil {
		return err
	}
	if err := a.startMetricsListener(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	a.bg.Add(1)
	go a.pruneTokens(ctx)
	a.log.Info("nestmtx is running", "release", a.version.Release, "http", a.HTTPAddr(),
		"rtsp", a.RTSPAddr(), "mqtt_broker", a.MQTTAddr(), "data_dir", a.cfg.DataDir)
	return nil
}

// Shutdown stops everything; the context bounds how long it may take.
func (a *App) Shutdown(ctx context.Context) error {
	var errs []error
	a.shutdown.Do(func() {
		if a.stop != nil {
			a.stop()
		}
		// Cameras first: they stop their Google sessions and end their
		// readers while the events can still reach MQTT. They get the
		// budget but what MQTT needs to publish their last events and
		// offline.
		if a.stopCameras != nil {
			cctx, cancel := context.WithDeadline(ctx, cameraDeadline(ctx))
			a.cameras.Shutdown(cctx)
			cancel()
			a.stopCameras()
		}
		a.stopHooks(ctx) // after the cameras: their final events run their hooks
		if a.rtsp != nil {
			a.rtsp.Close()
		}
		if a.creds != nil {
			a.creds.Close()
		}
		if a.sim != nil {
			a.sim.Close()
		}
		a.closeSocketIO()
		if a.metricsSrv != nil {
			if err := a.metricsSrv.Shutdown(ctx); err != nil {
				a.metricsSrv.Close()
			}
		}
		if a.httpSrv != nil {
			if err := a.httpSrv.Shutdown(ctx); err != nil {
				a.httpSrv.Close()
			}
		}
		if a.mqtt != nil {
			errs = append(errs, a.mqtt.Close(ctx))
		}
		a.bg.Wait()
		errs = append(errs, a.store.Close())
	})
	return errors.Join(errs...)
}

// mqttFlushBudget is what a shutdown keeps, after the cameras, for MQTT
// to publish their final events and state and then offline.
const mqttFlushBudget = 2 * time.Second

// cameraDeadline is when the cameras' part of a shutdown must end: the
// whole deadline but MQTT's share (or a quarter of what is left, if less).
func cameraDeadline(ctx context.Context) time.Time {
	deadline, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(10 * time.Second)
	}
	left := time.Until(deadline)
	return deadline.Add(-min(mqttFlushBudget, left/4))
}

// HTTPAddr is the HTTP listener's address.
func (a *App) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// MQTTAddr is the embedded broker's address ("" with an external broker).
func (a *App) MQTTAddr() string {
	if a.mqtt == nil {
		return ""
	}
	return a.mqtt.BrokerAddr()
}

// RTSPAddr is the RTSP listener's address.
func (a *App) RTSPAddr() string {
	if a.rtsp == nil {
		return ""
	}
	return a.rtsp.Addr()
}

// Store gives tests and tools the daemon's store.
func (a *App) Store() *store.Store { return a.store }

// Bus gives the daemon's parts (and tests) the event bus.
func (a *App) Bus() *events.Bus { return a.bus }

// InitialPasswordFile holds the admin password the first start of the
// data directory dataDir generated, until it is changed.
func InitialPasswordFile(dataDir string) string {
	return filepath.Join(dataDir, "initial-admin-password")
}

func (a *App) initialPasswordFile() string { return InitialPasswordFile(a.cfg.DataDir) }

// passwordChanged removes the generated initial password once the admin has
// chosen another: a file holding a dead password only misleads.
func (a *App) passwordChanged(u store.User) {
	if !strings.EqualFold(u.Username, "admin") {
		return
	}
	err := os.Remove(a.initialPasswordFile())
	if err == nil {
		a.log.Info("removed the initial admin password file; the password was changed", "file", a.initialPasswordFile())
	} else if !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("could not remove the initial admin password file", "error", err)
	}
}

// endLogins ends the open RTSP and MQTT logins of an account whose tokens
// just ended, but the connection that asked.
func (a *App) endLogins(username, except string) {
	a.rtsp.EndLogins(username)
	a.endSocketIOLogins(username, except)
	if a.mqtt == nil {
		return // not started yet: no request can have come through it
	}
	if b := a.mqtt.Broker(); b != nil {
		if n := b.EndLogins(username, except); n > 0 {
			a.log.Info("ended MQTT logins of a changed account", "username", username, "clients", n)
		}
	}
}

// firstStart creates the admin user when the store has no user at all.
func (a *App) firstStart() error {
	n, err := a.store.CountUsers()
	if err != nil || n > 0 {
		return err
	}
	pw := a.cfg.AdminPassword
	generated := pw == ""
	if generated {
		pw = password.Generate()
	}
	if _, err := a.store.CreateUser("admin", pw, true, store.RoleAdmin); err != nil {
		return fmt.Errorf("creating the admin user: %w", err)
	}
	if !generated {
		a.log.Info("created the user admin with the configured password (NESTMTX_ADMIN_PASSWORD or its _FILE)")
		return nil
	}
	file := a.initialPasswordFile()
	if err := os.WriteFile(file, []byte(pw+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	// The one time a secret is logged, on purpose: the operator has no other
	// way to learn it on a headless NAS, and it is also in the 0600 file.
	a.log.Warn("created the user admin with a random password; change it after logging in",
		"password", pw, "also_written_to", file)
	return nil
}

func (a *App) registerHealth() {
	// Not a health verdict: figures an operator (or a soak test) watches
	// for leaks over days.
	a.health.Register("runtime", func(ctx context.Context) api.Check {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return api.OK(map[string]any{"goroutines": runtime.NumGoroutine(), "heap_alloc_bytes": ms.HeapAlloc,
			"sys_bytes": ms.Sys, "uptime_seconds": int(time.Since(a.started).Seconds())})
	})
	a.registerStoreHealth()
	a.health.Register("mqtt", func(ctx context.Context) api.Check {
		meta := map[string]any{"embedded_broker": a.cfg.MQTTURL == ""}
		if a.mqtt != nil && a.mqtt.Ready() {
			return api.OK(meta)
		}
		return api.Failing(meta)
	})
	a.health.Register("setup", func(ctx context.Context) api.Check {
		users, err := a.store.ListUsers()
		if err != nil {
			return api.Failing(nil)
		}
		canLogin := 0
		for _, u := range users {
			if u.CanLogin {
				canLogin++
			}
		}
		creds, err := a.store.ListCredentials()
		if err != nil {
			return api.Failing(nil)
		}
		authed := 0
		for _, c := range creds {
			if c.RefreshToken != "" {
				authed++
			}
		}
		meta := map[string]any{"users_who_can_login": canLogin, "credentials": len(creds), "credentials_authenticated": authed}
		switch {
		case canLogin == 0:
			return api.Failing(meta)
		case authed < len(creds) || len(creds) == 0:
			// Nothing to stream yet, or a credential needs the user's consent.
			return api.Degrading(meta)
		}
		return api.OK(meta)
	})
}

func (a *App) pruneTokens(ctx context.Context) {
	defer a.bg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := a.store.PruneExpiredTokens(); err != nil {
				a.log.Warn("pruning expired tokens", "error", err)
			} else if n > 0 {
				a.log.Debug("pruned expired tokens", "count", n)
			}
		}
	}
}
