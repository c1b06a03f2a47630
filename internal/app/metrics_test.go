package app

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// scrape reads /metrics at url with token ("" for none) and parses it with
// Prometheus's own text parser.
func scrape(t *testing.T, url, token string) (int, map[string]*metricFamily) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body) //nolint:errcheck
		return resp.StatusCode, nil
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the metrics page does not parse: %v", err)
	}
	return resp.StatusCode, fams
}

type metricFamily = dto.MetricFamily

func itoa(id uint64) string { return strconv.FormatUint(id, 10) }

// value is the value of the series of family name whose labels include want.
func value(fams map[string]*metricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestMetrics: /metrics needs the metrics token on the HTTP address (401
// without, or when none is set) and is open on metrics_address; after a
// reader has read a camera, its byte, packet and reader series have moved,
// Google's commands and the API's requests are counted, and the page
// parses with Prometheus's text parser.
func TestMetrics(t *testing.T) {
	t.Parallel()
	metricsAddr := testkit.FreeAddr(t)
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) {
		c.MetricsToken = "scrape-me"
		c.MetricsAddress = metricsAddr
	})
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	id := e.cams["Front Door"]
	// Requests that name a module and a command of the contract but no
	// route (names outside it are refused before they are counted): one
	// label value however many kinds.
	for _, r := range []map[string]any{req("create", "version", "token", e.token, "payload", map[string]any{}),
		req("read", "version", "entity", "1", "token", e.token)} {
		e.rr.Call(t, r)
	}
	onHTTP := "http://" + e.app.HTTPAddr() + "/metrics"
	if code, _ := scrape(t, onHTTP, ""); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: %d", code)
	}
	if code, _ := scrape(t, onHTTP, "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("/metrics with a wrong token: %d", code)
	}

	r := readPath(t, e.rtspURL("front-door"))
	r.flowing(t, 0)
	cam := map[string]string{"camera_id": itoa(id), "path": "front-door"}
	var fams map[string]*metricFamily
	testkit.Eventually(t, 15*time.Second, "the camera's series to move", func() bool {
		var code int
		code, fams = scrape(t, onHTTP, "scrape-me")
		if code != http.StatusOK {
			t.Fatalf("/metrics with the token: %d", code)
		}
		recv, _ := value(fams, "nestmtx_camera_received_bytes_total", cam)
		sent, _ := value(fams, "nestmtx_camera_sent_bytes_total", cam)
		readers, _ := value(fams, "nestmtx_camera_readers", cam)
		return recv > 0 && sent > 0 && readers == 1
	})
	if v, ok := value(fams, "nestmtx_google_commands_total", map[string]string{"command": "GenerateRtspStream", "status": "OK"}); !ok || v < 1 {
		t.Fatalf("GenerateRtspStream OK counted %v (%v)", v, ok)
	}
	if v, ok := value(fams, "nestmtx_api_requests_total", map[string]string{"transport": "mqtt", "module": "auth", "command": "create", "code": "OK"}); !ok || v < 1 {
		t.Fatalf("MQTT logins counted %v (%v)", v, ok)
	}
	var unknown float64
	for _, f := range fams["nestmtx_api_requests_total"].Metric {
		labels := map[string]string{}
		for _, l := range f.Label {
			labels[l.GetName()] = l.GetValue()
		}
		switch {
		case labels["module"] == "version" && labels["command"] != "list":
			t.Fatalf("a request naming no route got its own series: %v", labels)
		case labels["module"] == "unknown" && labels["command"] == "unknown" && labels["transport"] == "mqtt":
			unknown += f.GetCounter().GetValue()
		}
	}
	if unknown < 2 {
		t.Fatalf("requests naming no route counted %v times as unknown, want 2", unknown)
	}
	if v, _ := value(fams, "nestmtx_mqtt_connected", nil); v != 1 {
		t.Fatalf("nestmtx_mqtt_connected = %v", v)
	}
	if _, ok := value(fams, "process_resident_memory_bytes", nil); !ok {
		t.Fatal("no process figures")
	}
	// The runtime's CPU classes, from which the GC's share of the CPU is
	// worked out, come on top of the Go collector's default series.
	for _, name := range []string{"go_cpu_classes_gc_total_cpu_seconds_total", "go_cpu_classes_total_cpu_seconds_total",
		"go_cpu_classes_idle_cpu_seconds_total", "go_cpu_classes_user_cpu_seconds_total"} {
		if v, ok := value(fams, name, nil); !ok || v < 0 {
			t.Fatalf("%s = %v (%v)", name, v, ok)
		}
	}
	if total, _ := value(fams, "go_cpu_classes_total_cpu_seconds_total", nil); total <= 0 {
		t.Fatalf("go_cpu_classes_total_cpu_seconds_total = %v after streaming", total)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "go_gc_duration_seconds", "go_sched_gomaxprocs_threads"} {
		if fams[name] == nil {
			t.Fatalf("the Go collector no longer exposes %s", name)
		}
	}
	// The separate listener serves them too; the token, once set, is
	// asked there as well.
	if code, _ := scrape(t, "http://"+metricsAddr+"/metrics", "scrape-me"); code != http.StatusOK {
		t.Fatalf("metrics_address with the token: %d", code)
	}
	if code, _ := scrape(t, "http://"+metricsAddr+"/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("metrics_address without the token: %d", code)
	}
}

// TestMetricsNeedALogin: with no metrics token the HTTP address answers
// 401 and says how to open them; an operator's metrics_address serves them
// without one.
func TestMetricsNeedALogin(t *testing.T) {
	t.Parallel()
	metricsAddr := testkit.FreeAddr(t)
	a := startApp(t, func(c *config.Config) { c.MetricsAddress = metricsAddr })
	resp, err := http.Get("http://" + a.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "NESTMTX_METRICS_TOKEN") {
		t.Fatalf("/metrics with no token configured: %d %s", resp.StatusCode, body)
	}
	if code, fams := scrape(t, "http://"+metricsAddr+"/metrics", ""); code != http.StatusOK || fams["go_goroutines"] == nil {
		t.Fatalf("metrics_address: %d", code)
	}
}
