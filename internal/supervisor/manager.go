package supervisor

import (
	"context"
	"sync"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
)

// CredentialFor gives the SDM client of a credential, and why it cannot be used
// ("" when it can).
type CredentialFor func(credentialID uint64) (SessionAPI, string)

// Manager keeps one supervisor per camera row and the table of served
// paths. The table is only a directory: each camera's live state stays with
// its own goroutine.
type Manager struct {
	opts   Options
	google CredentialFor

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// stopCtx bounds the cameras' shutdown; set by Shutdown before it
	// cancels ctx, read by the cameras after.
	stopCtx context.Context

	mu     sync.RWMutex
	byID   map[uint64]*managed
	byPath map[string]*Camera
}

type managed struct {
	cam *Camera
	// listed is the path the directory serves the camera at ("" when
	// none): the directory's own fact; the camera's spec is the camera's.
	listed string
	credID uint64
	cancel context.CancelFunc
}

// NewManager creates a manager whose cameras live until ctx ends.
func NewManager(ctx context.Context, o Options, google CredentialFor) *Manager {
	m := &Manager{google: google, byID: map[uint64]*managed{}, byPath: map[string]*Camera{}}
	m.ctx, m.cancel = context.WithCancel(ctx)
	o.skew = &skewWarning{}
	o.shutdown = func() context.Context {
		m.mu.RLock()
		defer m.mu.RUnlock()
		return m.stopCtx // nil unless the daemon is stopping
	}
	m.opts = o
	return m
}

// Lookup implements rtspserver.Resolver: enabled cameras by path.
func (m *Manager) Lookup(name string) (rtspserver.Path, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, ok := m.byPath[name]
	return c, ok
}

// Apply creates or updates a camera's supervisor from its configuration;
// credentialID names the Google credential it streams with.
func (m *Manager) Apply(cfg Spec, credentialID uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopCtx != nil {
		// Shutting down: a camera sync that finishes now (one started by
		// a consent just before) must not start a supervisor that
		// Shutdown, already waiting, would never stop; its m.wg.Add
		// would also race with that Wait (the race detector saw it).
		return
	}
	mc, ok := m.byID[cfg.ID]
	if !ok {
		g, down := m.google(credentialID)
		ctx, cancel := context.WithCancel(m.ctx)
		mc = &managed{cam: New(cfg, Credential{Google: g, Down: down}, m.opts), credID: credentialID, cancel: cancel}
		m.byID[cfg.ID] = mc
		m.wg.Add(1)
		go func() { defer m.wg.Done(); mc.cam.Run(ctx) }()
	} else {
		if mc.listed != "" && m.byPath[mc.listed] == mc.cam {
			delete(m.byPath, mc.listed)
		}
		mc.listed = ""
		mc.cam.Update(cfg)
	}
	if cfg.Enabled && cfg.Path != "" {
		m.byPath[cfg.Path] = mc.cam
		mc.listed = cfg.Path
	}
}

// CameraDeleted stops a camera's supervisor and forgets its retained state.
func (m *Manager) CameraDeleted(id uint64) {
	m.mu.Lock()
	mc, ok := m.byID[id]
	if ok {
		delete(m.byID, id)
		if m.byPath[mc.listed] == mc.cam {
			delete(m.byPath, mc.listed)
		}
	}
	m.mu.Unlock()
	if !ok {
		return
	}
	mc.cancel()
	<-mc.cam.Done()
	m.opts.Bus.SetState(events.DomainCamera, id, nil)
}

// CredentialChanged hands every camera of a credential its current client,
// or takes them down with the reason the credential is unusable.
func (m *Manager) CredentialChanged(credentialID uint64) {
	g, down := m.google(credentialID)
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, mc := range m.byID {
		if mc.credID == credentialID {
			mc.cam.SetCredential(Credential{Google: g, Down: down})
		}
	}
}

// Shutdown stops every camera at once: each stops its Google session (within
// ctx's deadline), emits its final events and publishes its stopped state.
// It returns when all have finished, or when ctx ends.
func (m *Manager) Shutdown(ctx context.Context) {
	m.mu.Lock()
	m.stopCtx = ctx
	m.mu.Unlock()
	m.cancel()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Restart replaces a camera's Google session (see Camera.Restart); false
// when there is no such camera.
func (m *Manager) Restart(id uint64) bool {
	m.mu.RLock()
	mc, ok := m.byID[id]
	m.mu.RUnlock()
	if ok {
		mc.cam.Restart()
	}
	return ok
}

// Snapshots are every camera's last published state with its figures.
func (m *Manager) Snapshots() []Snapshot {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Snapshot, 0, len(m.byID))
	for _, mc := range m.byID {
		if s, ok := mc.cam.Snapshot(); ok {
			out = append(out, s)
		}
	}
	return out
}

// Snapshot is one camera's last published state.
func (m *Manager) Snapshot(id uint64) (Snapshot, bool) {
	m.mu.RLock()
	mc, ok := m.byID[id]
	m.mu.RUnlock()
	if !ok {
		return Snapshot{}, false
	}
	return mc.cam.Snapshot()
}
