package app

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
)

func (a *App) startHTTP() error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddress)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w", a.cfg.HTTPAddress, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.serveHealth)
	a.httpLn = ln
	a.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() {
		if err := a.httpSrv.Serve(ln); err != nil && err != http.ErrServerClosed {
			a.log.Error("http server stopped", "error", err)
		}
	}()
	return nil
}

// serveHealth answers 200 while the daemon can do its job (healthy or
// degraded) and 503 when it cannot, so that systemd, Docker or a load
// balancer can act on the status code alone.
func (a *App) serveHealth(w http.ResponseWriter, r *http.Request) {
	rep := a.health.Run(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if rep.Healthy == api.Unhealthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rep)
}
