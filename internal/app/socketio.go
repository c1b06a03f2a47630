package app

import (
	"context"
	"net/http"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/socketio"
)

// socketIOMaxClients leaves a quarter of the HTTP listener's 256
// connections to the HTTP API and health checks, whatever the Socket.IO
// clients do.
const socketIOMaxClients = 192

// socketIO is the App's Socket.IO server, nil before startHTTP (or
// after closeSocketIO).
func (a *App) socketIO() *socketio.Server {
	a.sioMu.Lock()
	defer a.sioMu.Unlock()
	return a.sio
}

// mountSocketIO serves the API, the events and the log over Socket.IO at
// /socket.io/ (issue 12; the contract is internal/socketio's doc).
func (a *App) mountSocketIO(mux *http.ServeMux) {
	srv, err := socketio.New(socketio.Options{
		Handler: instrumented{h: a.api, transport: "socketio", m: a.metrics}, Tokens: a.store, Bus: a.bus, Logs: a.logs,
		Log:             a.log.With("component", "socketio"),
		CORSOrigins:     config.CORSOrigins(a.cfg.HTTPCORSOrigins),
		MaxClients:      socketIOMaxClients,
		MaxRequestBytes: a.cfg.MQTTMaxRequestBytes,
	})
	if err != nil {
		a.log.Error("Socket.IO is not served", "error", err)
		return
	}
	a.sioMu.Lock()
	a.sio = srv
	a.sioMu.Unlock()
	mux.Handle("/socket.io/", srv)
	a.health.Register("socketio", func(ctx context.Context) api.Check {
		st := srv.Stats()
		return api.OK(map[string]any{"clients": st.Clients, "dropped_events": st.DroppedEvents,
			"dropped_log_lines": st.DroppedLogs, "refused_requests": st.Refused, "disconnected_slow_clients": st.Kicked})
	})
}

// closeSocketIO ends every Socket.IO connection (they are hijacked, so the
// HTTP server's Shutdown does not see them).
func (a *App) closeSocketIO() {
	a.sioMu.Lock()
	srv := a.sio
	a.sio = nil
	a.sioMu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// endSocketIOLogins disconnects the Socket.IO connections of an account
// whose tokens just ended, but the one that asked.
func (a *App) endSocketIOLogins(username, except string) {
	if srv := a.socketIO(); srv != nil {
		if n := srv.EndLogins(username, except); n > 0 {
			a.log.Info("ended Socket.IO connections of a changed account", "username", username, "clients", n)
		}
	}
}
