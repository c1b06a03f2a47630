package credentials_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/credentials"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/store"
)

// waitTimeout bounds every wait for something the service should do within
// milliseconds; it is only reached when a test fails.
const waitTimeout = 5 * time.Second

// env is one credentials service wired to real parts: the simulated Google
// over HTTP on 127.0.0.1, a bbolt store in a temporary directory and an
// events bus, with a recording Listener and a recording log.
type env struct {
	t        *testing.T
	sim      *nestsim.Sim
	store    *store.Store
	bus      *events.Bus
	sub      *events.Subscription
	listener *recordingListener
	logs     *logRecorder
	opts     credentials.Options
	svc      *credentials.Service
	// seen is every event received, for the check that none carries a token.
	seen []events.Event
	// pending are received events waitEvent has not returned yet.
	pending []events.Event
}

type envOptions struct {
	TokenTTL      time.Duration // the simulator's access token lifetime
	RefreshMargin time.Duration
	HTTPTimeout   time.Duration // the service's HTTP client; 10 s when zero
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	sim, err := nestsim.Start(nestsim.Options{AccessTokenTTL: o.TokenTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	logs := newLogRecorder()
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := store.Open(t.TempDir(), store.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	bus := events.NewBus(nil)
	sub := bus.Subscribe(256)
	t.Cleanup(sub.Close)
	e := &env{t: t, sim: sim, store: st, bus: bus, sub: sub, listener: newRecordingListener(), logs: logs}
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = 10 * time.Second
	}
	// The service's own transport: a connection it dialed but never used
	// would hold the simulator's Close for 2 s (http.Server.Shutdown waits
	// for new connections), so its idle ones are closed before the
	// simulator (cleanups run last-registered first, the service's Close
	// before this).
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	e.opts = credentials.Options{
		Store:         st,
		Bus:           bus,
		Endpoints:     nest.Endpoints{AuthURL: sim.AuthURL(), TokenURL: sim.TokenURL(), SDMURL: sim.SDMURL()},
		HTTP:          &http.Client{Timeout: o.HTTPTimeout, Transport: transport},
		Listener:      e.listener,
		RefreshMargin: o.RefreshMargin,
		Log:           log,
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of the service:\n%s", logs.String())
		}
	})
	return e
}

// addCredential stores a credential for the simulator's OAuth client;
// mutate sets its tokens.
func (e *env) addCredential(description string, mutate func(*store.Credential)) store.Credential {
	e.t.Helper()
	now := time.Now().UTC()
	c := store.Credential{Description: description, OAuthClientID: e.sim.ClientID(),
		OAuthClientSecret: e.sim.ClientSecret(), DACProjectID: e.sim.ProjectID(), AuthenticatedAt: &now}
	if mutate != nil {
		mutate(&c)
	}
	c, err := e.store.CreateCredential(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// start creates the service and starts it; every goroutine it starts
// carries the pprof label test=<test name>, for serviceGoroutines.
func (e *env) start() {
	e.t.Helper()
	e.svc = credentials.New(e.opts)
	var err error
	pprof.Do(context.Background(), pprof.Labels("test", e.t.Name()), func(context.Context) {
		err = e.svc.Start()
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(e.svc.Close)
}

func (e *env) credential(id uint64) store.Credential {
	e.t.Helper()
	c, err := e.store.GetCredential(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// waitEvent returns the next credentials event of the credential named
// name, skipping its other events; events of other credentials are kept
// for later calls. An unexpected `unauthenticated` fails the test at once.
func (e *env) waitEvent(id uint64, name string) events.Event {
	e.t.Helper()
	check := func(ev events.Event) bool {
		if ev.Event == events.CredentialsUnauthenticated && name != ev.Event {
			e.t.Fatalf("credential %d: got %q (%v) while waiting for %q", id, ev.Event, ev.Details, name)
		}
		return ev.Event == name
	}
	for {
		i := slices.IndexFunc(e.pending, func(ev events.Event) bool { return *ev.Entity == id })
		if i < 0 {
			break
		}
		ev := e.pending[i]
		e.pending = slices.Delete(e.pending, i, i+1)
		if check(ev) {
			return ev
		}
	}
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		select {
		case m, ok := <-e.sub.C():
			if !ok {
				e.t.Fatalf("the bus subscription closed while waiting for %q", name)
			}
			if m.Event == nil {
				continue
			}
			ev := *m.Event
			e.seen = append(e.seen, ev)
			if ev.Domain != events.DomainCredentials || ev.Entity == nil {
				continue
			}
			if *ev.Entity != id {
				e.pending = append(e.pending, ev)
				continue
			}
			if check(ev) {
				return ev
			}
		case <-deadline.C:
			e.t.Fatalf("credential %d: no %q event within %s", id, name, waitTimeout)
		}
	}
}

// assertNoSecrets checks that no event received so far and no log line
// quotes any of the secrets.
func (e *env) assertNoSecrets(secrets ...string) {
	e.t.Helper()
	evs, err := json.Marshal(e.seen)
	if err != nil {
		e.t.Fatal(err)
	}
	logs := e.logs.String()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if bytes.Contains(evs, []byte(s)) {
			e.t.Errorf("an event quotes a token (%.12s…): %s", s, evs)
		}
		if strings.Contains(logs, s) {
			e.t.Errorf("the log quotes a token (%.12s…)", s)
		}
	}
}

// assertRefreshedBefore checks that the simulator received the n-th
// refresh (from 0) within window before expiry.
func (e *env) assertRefreshedBefore(n int, expiry time.Time, window time.Duration) {
	e.t.Helper()
	var at []time.Time
	for _, c := range e.sim.Calls() {
		if c.Method == "token.refresh_token" {
			at = append(at, c.At)
		}
	}
	if len(at) <= n {
		e.t.Fatalf("the simulator saw %d refreshes, want at least %d", len(at), n+1)
	}
	if at[n].Before(expiry.Add(-window)) || !at[n].Before(expiry) {
		e.t.Errorf("refresh %d reached Google %s before the expiry, want within %s before it",
			n+1, expiry.Sub(at[n]), window)
	}
}

// sdmStatus is the status the simulated SDM API answers a devices.list
// made with accessToken.
func (e *env) sdmStatus(accessToken string) int {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.sim.SDMURL()+"/enterprises/"+e.sim.ProjectID()+"/devices", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := (&http.Client{Timeout: waitTimeout}).Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// serviceGoroutines counts the goroutines this test's service started
// whose stack holds a method of the service starting with fn.
func (e *env) serviceGoroutines(fn string) int {
	e.t.Helper()
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		e.t.Fatal(err)
	}
	label := `# labels: {"test":"` + e.t.Name() + `"}`
	n := 0
	for _, rec := range strings.Split(buf.String(), "\n\n") {
		if !strings.Contains(rec, label) || !strings.Contains(rec, "internal/credentials.(*Service)."+fn) {
			continue
		}
		m := countRE.FindStringSubmatch(rec)
		if m == nil {
			e.t.Fatalf("unexpected goroutine profile record:\n%s", rec)
		}
		c, _ := strconv.Atoi(m[1])
		n += c
	}
	return n
}

var countRE = regexp.MustCompile(`^(?:goroutine profile: total \d+\n)?(\d+) @`)

// recordingListener records what the service tells the rest of the daemon.
type recordingListener struct {
	mu          sync.Mutex
	cameras     []store.Camera
	credentials []uint64
	changed     chan struct{}
}

func newRecordingListener() *recordingListener {
	return &recordingListener{changed: make(chan struct{})}
}

func (l *recordingListener) CameraChanged(c store.Camera) {
	l.mu.Lock()
	l.cameras = append(l.cameras, c)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *recordingListener) CredentialChanged(id uint64) {
	l.mu.Lock()
	l.credentials = append(l.credentials, id)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// waitFor waits until cond holds of the calls recorded so far.
func (l *recordingListener) waitFor(t *testing.T, what string, cond func(cameras []store.Camera, credentials []uint64) bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		ok, ch := cond(l.cameras, l.credentials), l.changed
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("the listener was not told %s within %s", what, waitTimeout)
		}
	}
}

// logRecorder is the service's log output, kept for assertions.
type logRecorder struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLogRecorder() *logRecorder { return &logRecorder{changed: make(chan struct{})} }

func (r *logRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf.Write(p)
	close(r.changed)
	r.changed = make(chan struct{})
	return len(p), nil
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// waitFor waits until the log holds substr.
func (r *logRecorder) waitFor(t *testing.T, substr string) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch := strings.Contains(r.buf.String(), substr), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("the log did not say %q within %s", substr, waitTimeout)
		}
	}
}
