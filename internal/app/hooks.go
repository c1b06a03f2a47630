package app

import (
	"context"
	"net"

	"github.com/nestmtx/nestmtx/internal/hooks"
)

// The runOn* hooks (docs/hooks.md, internal/hooks). The runner starts
// before the cameras, so that it misses none of their events (a persistent
// camera may be ready at once), and stops after them, so that their final
// unread, unDemand and notReady still run their hooks.

// hookState is the App's hooks runner.
type hookState struct {
	runner *hooks.Runner
	// tune adjusts the runner's options before it starts (tests: a short
	// restart pause).
	tune func(*hooks.Options)
}

// startHooks starts the hooks runner when any hook is configured.
func (a *App) startHooks() {
	st := &a.hooks
	if !a.cfg.GlobalHooks().Any() && a.cfg.Paths.Len() == 0 {
		return
	}
	o := hooks.Options{
		Bus:      a.bus,
		Lookup:   a.cfg.HooksFor,
		RTSPPort: a.rtspPort,
		Log:      a.log,
	}
	if st.tune != nil {
		st.tune(&o)
	}
	st.runner = hooks.Start(o)
	a.log.Info("hooks enabled", "paths_entries", a.cfg.Paths.Len())
}

// stopHooks stops the runner in the background: its processes get their
// grace while MQTT publishes the last events; Shutdown waits for both.
func (a *App) stopHooks(ctx context.Context) {
	r := a.hooks.runner
	a.hooks.runner = nil
	if r == nil {
		return
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		r.Close(ctx)
	}()
}

// rtspPort is RTSP_PORT: the port the RTSP server listens on. A hook runs
// only after a camera's event, and the cameras start after the server.
func (a *App) rtspPort() string {
	_, port, err := net.SplitHostPort(a.RTSPAddr())
	if err != nil {
		return ""
	}
	return port
}
