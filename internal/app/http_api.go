package app

import (
	"net/http"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/httpapi"
)

// mountAPI serves the L.C.R.U.D. API over HTTP under /api/ (issue 12):
// the same dispatcher as MQTT, with the same request size limit
// (mqtt_max_request_bytes is the API's, whichever transport carries it)
// and as many requests at once as MQTT has workers. Its OpenAPI document
// is at /api/openapi.json.
func (a *App) mountAPI(mux *http.ServeMux) {
	h, err := httpapi.New(routedInstrumented{instrumented{h: a.api, transport: "http", m: a.metrics}, a.api}, httpapi.Options{
		MaxRequestBytes: int64(a.cfg.MQTTMaxRequestBytes),
		CORSOrigins:     config.CORSOrigins(a.cfg.HTTPCORSOrigins),
		Version:         a.version.Release,
		Log:             a.log.With("component", "http_api"),
	})
	if err != nil {
		// Only a declaration the document cannot encode gets here, and
		// the tests build it: say so rather than serve half an API.
		a.log.Error("the HTTP API is not served: its OpenAPI document failed", "error", err)
		return
	}
	h.Mount(mux)
}

// routedInstrumented counts the HTTP API's requests and lists the
// dispatcher's routes for its document.
type routedInstrumented struct {
	instrumented
	d *api.Dispatcher
}

func (r routedInstrumented) Routes() []api.RouteInfo { return r.d.Routes() }
