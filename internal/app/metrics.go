package app

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/netguard"
)

// metrics is the daemon's Prometheus registry: counters the daemon bumps
// as things happen (Google commands, API requests), and a collector that
// reads the cameras', quotas' and MQTT's figures at each scrape.
type metrics struct {
	reg             *prometheus.Registry
	googleCommands  *prometheus.CounterVec
	apiRequests     *prometheus.CounterVec
	apiRequestTimes *prometheus.HistogramVec
	// routes are the API's (module, command) pairs; see knowRoutes.
	routes map[[2]string]bool
}

// goCPUClasses adds the runtime's CPU estimates by class to the Go
// collector's default series (go_cpu_classes_gc_total_cpu_seconds_total,
// go_cpu_classes_total_cpu_seconds_total, go_cpu_classes_idle_cpu_seconds_total,
// the user, scavenge and GC-phase classes): the share of the daemon's CPU the
// garbage collector takes, over a window, is Δgc_total / (Δtotal − Δidle),
// which process_cpu_seconds_total alone cannot tell.
var goCPUClasses = collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/cpu/classes/`)}

func newMetrics(a *App) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.googleCommands = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nestmtx_google_commands_total",
		Help: "Commands sent to Google's SDM API (after the quota wait), by command and outcome (OK, Google's status such as RESOURCE_EXHAUSTED, or ERROR for a transport failure)."},
		[]string{"command", "status"})
	m.apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nestmtx_api_requests_total",
		Help: "API requests answered, by transport, module, command and result code (OK or the error code)."},
		[]string{"transport", "module", "command", "code"})
	m.apiRequestTimes = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nestmtx_api_request_seconds",
		Help: "Time to answer an API request, by transport.", Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}},
		[]string{"transport"})
	m.reg.MustRegister(m.googleCommands, m.apiRequests, m.apiRequestTimes,
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(goCPUClasses)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&liveCollector{a: a})
	return m
}

// googleCommand counts one command sent to Google.
func (m *metrics) googleCommand(command string, err error) {
	status := "OK"
	if err != nil {
		status = "ERROR"
		var ae *nest.APIError
		if errors.As(err, &ae) {
			status = ae.Status
			if status == "" {
				status = "HTTP_" + strconv.Itoa(ae.HTTPStatus)
			}
		}
	}
	m.googleCommands.WithLabelValues(command, status).Inc()
}

// apiRequest counts one answered API request.
func (m *metrics) apiRequest(transport string, req api.Request, err *api.Error, took time.Duration) {
	code := "OK"
	if err != nil {
		code = err.Code
	}
	// A module and command that name no route are one label value, so
	// that a client cannot grow the series without bound.
	module, command := req.Module, req.Command
	if !m.routes[[2]string{module, command}] {
		module, command = "unknown", "unknown"
	}
	m.apiRequests.WithLabelValues(transport, module, command, code).Inc()
	m.apiRequestTimes.WithLabelValues(transport).Observe(took.Seconds())
}

// knowRoutes sets the routes whose module and command label the API
// series: the dispatcher's, so that a new route needs no list kept here.
// It is called before any transport starts.
func (m *metrics) knowRoutes(routes []api.RouteInfo) {
	m.routes = make(map[[2]string]bool, len(routes))
	for _, r := range routes {
		m.routes[[2]string{r.Module, r.Command}] = true
	}
}

// instrumented is an API handler that counts what it answers, for one
// transport.
type instrumented struct {
	h interface {
		Handle(ctx context.Context, req api.Request) (any, *api.Error)
	}
	transport string
	m         *metrics
}

func (i instrumented) Handle(ctx context.Context, req api.Request) (any, *api.Error) {
	start := time.Now()
	res, err := i.h.Handle(ctx, req)
	i.m.apiRequest(i.transport, req, err, time.Since(start))
	return res, err
}

var (
	camLabels          = []string{"camera_id", "path"}
	descCameraReady    = prometheus.NewDesc("nestmtx_camera_ready", "1 while the camera's stream is ready.", camLabels, nil)
	descCameraReaders  = prometheus.NewDesc("nestmtx_camera_readers", "RTSP readers of the camera now.", camLabels, nil)
	descReadersTotal   = prometheus.NewDesc("nestmtx_camera_readers_total", "RTSP readers that played the camera.", camLabels, nil)
	descBytesReceived  = prometheus.NewDesc("nestmtx_camera_received_bytes_total", "RTP payload bytes received from Google (per stream: resets when the camera goes idle).", camLabels, nil)
	descPacketsRecv    = prometheus.NewDesc("nestmtx_camera_received_packets_total", "RTP packets received from Google (per stream).", camLabels, nil)
	descBytesSent      = prometheus.NewDesc("nestmtx_camera_sent_bytes_total", "Bytes sent to the camera's readers (per stream).", camLabels, nil)
	descPacketsSent    = prometheus.NewDesc("nestmtx_camera_sent_packets_total", "RTP packets sent to the camera's readers (per stream).", camLabels, nil)
	descBitrate        = prometheus.NewDesc("nestmtx_camera_bitrate_kbps", "What Google sends, over the last ~10 s.", camLabels, nil)
	descReadySeconds   = prometheus.NewDesc("nestmtx_camera_ready_seconds_total", "Time the camera's stream was ready.", camLabels, nil)
	descSwaps          = prometheus.NewDesc("nestmtx_camera_swaps_total", "Upstream sessions that replaced another under the readers.", camLabels, nil)
	descExtensions     = prometheus.NewDesc("nestmtx_camera_extensions_total", "Google session extensions.", camLabels, nil)
	descFailures       = prometheus.NewDesc("nestmtx_camera_failures_total", "Stream failures (each regenerates or retries).", camLabels, nil)
	credLabels         = []string{"credential_id"}
	descQuotaInWindow  = prometheus.NewDesc("nestmtx_google_quota_commands_in_window", "Commands in Google's current quota window.", credLabels, nil)
	descQuotaWaiting   = prometheus.NewDesc("nestmtx_google_quota_waiting", "Commands waiting for the quota.", credLabels, nil)
	descQuotaPenalized = prometheus.NewDesc("nestmtx_google_quota_penalized", "1 while a 429 from Google holds every command back.", credLabels, nil)
	descMQTTConnected  = prometheus.NewDesc("nestmtx_mqtt_connected", "1 while the daemon is connected to its MQTT broker.", nil, nil)
	descMQTTDropped    = prometheus.NewDesc("nestmtx_mqtt_events_dropped_total", "Events dropped because the broker was away too long.", nil, nil)
)

// liveCollector reads the figures that live elsewhere at each scrape.
type liveCollector struct{ a *App }

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCameraReady, descCameraReaders, descReadersTotal, descBytesReceived,
		descPacketsRecv, descBytesSent, descPacketsSent, descBitrate, descReadySeconds, descSwaps, descExtensions,
		descFailures, descQuotaInWindow, descQuotaWaiting, descQuotaPenalized, descMQTTConnected, descMQTTDropped} {
		ch <- d
	}
}

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	if a.cameras != nil {
		for _, s := range a.cameras.Snapshots() {
			l := []string{strconv.FormatUint(s.ID, 10), s.Path}
			st := s.State
			gauge := func(d *prometheus.Desc, v float64) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
			}
			counter := func(d *prometheus.Desc, v float64) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
			}
			gauge(descCameraReady, b2f(st.Ready))
			gauge(descCameraReaders, float64(st.Readers))
			gauge(descBitrate, st.BitrateKbps)
			counter(descReadersTotal, float64(st.Stats.ReadersTotal))
			counter(descBytesReceived, float64(st.Stats.BytesReceived))
			counter(descPacketsRecv, float64(st.Stats.PacketsReceived))
			counter(descBytesSent, float64(st.Stats.BytesSent))
			counter(descPacketsSent, float64(st.Stats.PacketsSent))
			counter(descReadySeconds, st.Stats.ReadySeconds)
			counter(descSwaps, float64(st.Stats.Swaps))
			counter(descExtensions, float64(st.Stats.Extensions))
			counter(descFailures, float64(st.Stats.Failures))
		}
	}
	if a.creds != nil {
		for _, q := range a.creds.Quotas() {
			l := strconv.FormatUint(q.CredentialID, 10)
			ch <- prometheus.MustNewConstMetric(descQuotaInWindow, prometheus.GaugeValue, float64(q.InWindow), l)
			ch <- prometheus.MustNewConstMetric(descQuotaWaiting, prometheus.GaugeValue, float64(q.Waiters), l)
			ch <- prometheus.MustNewConstMetric(descQuotaPenalized, prometheus.GaugeValue, b2f(time.Now().Before(q.PenalizedUntil)), l)
		}
	}
	if a.mqtt != nil {
		ch <- prometheus.MustNewConstMetric(descMQTTConnected, prometheus.GaugeValue, b2f(a.mqtt.Connected()))
		ch <- prometheus.MustNewConstMetric(descMQTTDropped, prometheus.CounterValue, float64(a.mqtt.EventsDropped()))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves the registry, asking for metrics_token when one is
// set (always on the HTTP address: a new endpoint there needs a login).
func (a *App) metricsHandler(requireToken bool) http.Handler {
	h := promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	token := a.cfg.MetricsToken
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" || requireToken {
			got := api.BearerFromHeader(r.Header.Get("Authorization"))
			if token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="nestmtx metrics"`)
				w.Header().Set("Cache-Control", "no-store")
				msg := "a bearer token is required: send NESTMTX_METRICS_TOKEN as Authorization: Bearer <token>"
				if token == "" {
					msg = "metrics need a login: set NESTMTX_METRICS_TOKEN (and send it as a bearer token), or serve them on NESTMTX_METRICS_ADDRESS"
				}
				http.Error(w, msg, http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// startMetricsListener serves /metrics alone on metrics_address.
func (a *App) startMetricsListener() error {
	if a.cfg.MetricsAddress == "" {
		return nil
	}
	ln, err := netguard.Listen("tcp", a.cfg.MetricsAddress, netguard.Options{Name: "metrics", MaxConns: 16, Log: a.log})
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", a.cfg.MetricsAddress, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metricsHandler(false))
	a.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: time.Minute, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	go func() {
		if err := a.metricsSrv.Serve(ln); err != nil && err != http.ErrServerClosed {
			a.log.Error("metrics server stopped", "error", err)
		}
	}()
	a.log.Info("serving /metrics", "address", ln.Addr().String(), "token", a.cfg.MetricsToken != "")
	return nil
}
