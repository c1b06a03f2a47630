package app

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/netguard"
)

func (a *App) startHTTP() error {
	// netguard only caps connections and survives EMFILE here: net/http's
	// own timeouts below bound a request (ReadHeaderTimeout, ReadTimeout),
	// an idle keep-alive (IdleTimeout) and a client that stops reading its
	// response (WriteTimeout). A read-idle timeout would also cut a long
	// handler, whose client rightly sends nothing while it waits.
	ln, err := netguard.Listen("tcp", a.cfg.HTTPAddress, netguard.Options{
		Name: "http", MaxConns: 256, Log: a.log,
	})
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w", a.cfg.HTTPAddress, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.serveHealth)
	mux.HandleFunc("GET /oauth/callback", a.serveOAuthCallback)
	a.mountOAuthStart(mux)
	mux.Handle("GET /metrics", a.metricsHandler(true))
	a.mountAPI(mux)
	a.mountSocketIO(mux)
	if a.cfg.HTTPPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	a.httpLn = ln
	a.registerListenerHealth(ln)
	// WriteTimeout leaves a pprof profile or trace up to about 4 minutes;
	// pprof refuses longer ones with a clear error.
	a.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 5 * time.Minute, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
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

// serveOAuthCallback finishes Google's consent when the redirect_uri given
// to credentials update points at this daemon.
func (a *App) serveOAuthCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if e := q.Get("error"); e != "" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, page, "Authorization cancelled", html.EscapeString("Google answered: "+e))
		return
	}
	cred, err := a.creds.ExchangeState(r.Context(), q.Get("state"), q.Get("code"))
	if err != nil {
		a.log.Warn("oauth callback failed", "error", err)
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, page, "Authorization failed", html.EscapeString(err.Error()))
		return
	}
	fmt.Fprintf(w, page, "Authorized", html.EscapeString("nestmtx can now reach the cameras of "+cred.Description+". You can close this tab."))
}

const page = `<!doctype html><meta charset="utf-8"><title>nestmtx</title><h1>%s</h1><p>%s</p>`
