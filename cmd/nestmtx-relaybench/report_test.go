package main

// Tests of the tool's own arithmetic and formatting: what marks an IDR,
// percentiles, the GC's share from the runtime's CPU classes (scraped from
// a real Go collector over HTTP), the per-camera reader ratios, the
// redaction of secrets and the scaling table with its targets.

import (
	"bytes"
	"context"
	"math"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestRelayBenchStartsIDR(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload []byte
		want    bool
	}{
		{"empty", nil, false},
		{"IDR slice", []byte{0x65, 0x88, 0x84}, true},
		{"SPS", []byte{0x67, 0x64, 0x00, 0x28}, true},
		{"PPS", []byte{0x68, 0xee, 0x3c}, false},
		{"non-IDR slice", []byte{0x41, 0x9a}, false},
		{"SEI", []byte{0x06, 0x05}, false},
		{"STAP-A of SPS and PPS", []byte{0x78, 0x00, 0x02, 0x67, 0x64, 0x00, 0x02, 0x68, 0xee}, true},
		{"STAP-A with the IDR second", []byte{0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x65, 0x88}, true},
		{"STAP-A of SEI and a P slice", []byte{0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x9a}, false},
		{"STAP-A cut short", []byte{0x78, 0x00, 0x09, 0x67, 0x64}, false},
		{"STAP-A with a zero size", []byte{0x78, 0x00, 0x00, 0x65, 0x88}, false},
		{"FU-A start of an IDR", []byte{0x7c, 0x85, 0x88}, true},
		{"FU-A middle of an IDR", []byte{0x7c, 0x05, 0x88}, false},
		{"FU-A end of an IDR", []byte{0x7c, 0x45, 0x88}, false},
		{"FU-A start of a P slice", []byte{0x5c, 0x81, 0x9a}, false},
		{"FU-A header alone", []byte{0x7c}, false},
	} {
		if got := startsIDR(tc.payload); got != tc.want {
			t.Errorf("%s (% x): startsIDR = %v, want %v", tc.name, tc.payload, got, tc.want)
		}
	}
}

// TestRelayBenchStartsIDRPacketized: of the packets gortsplib's H.264
// encoder makes of the clip, the first of each IDR access unit starts one
// (a STAP-A of the SPS and PPS; the IDR's first fragment, next, does too)
// and none of the other access units' does.
func TestRelayBenchStartsIDRPacketized(t *testing.T) {
	c := loadBenchClip(t)
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1, PayloadMaxSize: 1400}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	var idrs, others int
	for i, au := range c.video {
		pkts, err := enc.Encode(au)
		if err != nil {
			t.Fatal(err)
		}
		random := h264.IsRandomAccess(au)
		for j, p := range pkts {
			if got := startsIDR(p.Payload); (random && j == 0 && !got) || (!random && got) {
				t.Fatalf("access unit %d (random access %v), packet %d of %d (% x…): startsIDR = %v", i, random, j, len(pkts), p.Payload[:min(4, len(p.Payload))], got)
			}
		}
		if random {
			idrs++
		} else {
			others++
		}
	}
	if idrs == 0 || others == 0 {
		t.Fatalf("the clip has %d IDR and %d other access units: the test needs both", idrs, others)
	}
}

func TestRelayBenchPercentile(t *testing.T) {
	v := []float64{15, 1, 14, 2, 13, 3, 12, 4, 11, 5, 10, 6, 9, 7, 8, 16, 17, 18, 19, 20}
	for _, tc := range []struct{ p, want float64 }{{50, 10}, {95, 19}, {100, 20}, {1, 1}, {5, 1}, {0, 1}} {
		if got := percentile(v, tc.p); got != tc.want {
			t.Errorf("p%v of 1..20 = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile([]float64{42}, 95); got != 42 {
		t.Errorf("p95 of one value = %v", got)
	}
	if got := percentile(nil, 50); got != -1 {
		t.Errorf("median of nothing = %v, want -1 (unknown)", got)
	}
	odd := []float64{3, 1, 2}
	if got := percentile(odd, 50); got != 2 {
		t.Errorf("median of 1 2 3 = %v", got)
	}
	if !slices.Equal(odd, []float64{3, 1, 2}) {
		t.Errorf("percentile sorted its argument: %v", odd)
	}
}

func TestRelayBenchGCFraction(t *testing.T) {
	text := `# HELP go_cpu_classes_gc_total_cpu_seconds_total Estimated total CPU time spent performing GC tasks.
# TYPE go_cpu_classes_gc_total_cpu_seconds_total counter
go_cpu_classes_gc_total_cpu_seconds_total 1.5
go_cpu_classes_idle_cpu_seconds_total 80
go_cpu_classes_scavenge_total_cpu_seconds_total 0.01
go_cpu_classes_total_cpu_seconds_total 100
go_gc_duration_seconds{quantile="0.5"} 0.0001
go_gc_duration_seconds_sum 0.01
go_gc_duration_seconds_count 40
`
	a, err := parseGoCPU(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if a != (goCPU{gc: 1.5, total: 100, idle: 80, cycles: 40}) {
		t.Fatalf("parsed %+v", a)
	}
	// 30 s of two cores: 60 s in all, 45 of them idle, 15 used, 3 by the GC.
	b := goCPU{gc: 4.5, total: 160, idle: 125, cycles: 52}
	if f, ok := gcFraction(a, b); !ok || math.Abs(f-0.2) > 1e-9 {
		t.Fatalf("gcFraction = %v %v, want 0.2", f, ok)
	}
	if _, ok := gcFraction(a, a); ok {
		t.Fatal("a fraction of no CPU at all")
	}
	if _, err := parseGoCPU(strings.NewReader("go_goroutines 12\ngo_cpu_classes_total_cpu_seconds_total 3\n")); err == nil ||
		!strings.Contains(err.Error(), metricGCCPU) {
		t.Fatalf("a page without the GC class: %v", err)
	}
}

// TestRelayBenchScrapeGoCPU scrapes a real Go collector with the daemon's
// rule (internal/app/metrics.go's goCPUClasses) over HTTP, before and after
// some garbage.
func TestRelayBenchScrapeGoCPU(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/cpu/classes/`)})))
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx := context.Background()
	a, err := scrapeGoCPU(ctx, srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	var sink [][]byte
	for i := 0; i < 2000; i++ {
		sink = append(sink, make([]byte, 4096))
		if i%500 == 0 {
			sink = nil
			runtime.GC()
		}
	}
	_ = sink
	b, err := scrapeGoCPU(ctx, srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	if b.cycles-a.cycles < 4 || b.gc <= a.gc || b.total <= a.total {
		t.Fatalf("scrapes %+v then %+v: the GCs in between do not show", a, b)
	}
	if f, ok := gcFraction(a, b); !ok || f <= 0 || f > 1 {
		t.Fatalf("gcFraction = %v %v", f, ok)
	}
}

func TestRelayBenchCameraRatios(t *testing.T) {
	cams := []int{0, 0, 0, 1, 1, 2}
	pkts := []float64{100, 99, 100, 50, 40, 0}
	got := cameraRatios(cams, pkts, 3)
	if want := []float64{0.99, 0.8, 0}; !slices.Equal(got, want) {
		t.Fatalf("cameraRatios = %v, want %v", got, want)
	}
	if got := cpuPerMB(1.5, 3e6); got != 500 {
		t.Fatalf("cpuPerMB(1.5 s, 3 MB) = %v ms", got)
	}
	if got := cpuPerMB(1, 0); got != -1 {
		t.Fatalf("cpuPerMB of nothing delivered = %v", got)
	}
}

func TestRelayBenchServedPathAndPick(t *testing.T) {
	if servedPath("bench", 0, 1) != "bench" || servedPath("bench", 7, 8) != "bench-8" {
		t.Fatal("servedPath")
	}
	cams := []camera{
		{ID: 1, Name: "Front Door", Protocols: []string{"RTSP"}},
		{ID: 2, Name: "Gone", Protocols: []string{"RTSP"}, Missing: true},
		{ID: 3, Name: "", Protocols: []string{"WEB_RTC"}},
		{ID: 4, Name: "Backyard", Protocols: []string{"RTSP"}},
		{ID: 5, Name: "Camera 3", Protocols: []string{"RTSP"}},
	}
	names := func(cs []camera) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	if got := names(pickCameras(cams, "", 3)); !slices.Equal(got, []string{"Front Door", "Backyard", "Camera 3"}) {
		t.Fatalf("three RTSP cameras: %q", got)
	}
	if got := pickCameras(cams, "", 4); got != nil {
		t.Fatalf("four RTSP cameras of three: %q", names(got))
	}
	if got := names(pickCameras(cams, "4", 1)); !slices.Equal(got, []string{"Backyard"}) {
		t.Fatalf("by id: %q", got)
	}
	if got := pickCameras(cams, "Gone", 1); got != nil {
		t.Fatalf("a missing camera: %q", names(got))
	}
}

func TestRelayBenchRedactArgs(t *testing.T) {
	in := []string{"relaybench", "--password", "s3cret", "-credential={\"oauth_client_secret\":\"x\"}", "--metrics-token=m3trics",
		"--readers", "50", "--password"}
	got := strings.Join(redactArgs(in), " ")
	for _, secret := range []string{"s3cret", "oauth_client_secret", "m3trics"} {
		if strings.Contains(got, secret) {
			t.Fatalf("%q shows %q", got, secret)
		}
	}
	if want := "relaybench --password <redacted> -credential=<redacted> --metrics-token=<redacted> --readers 50 --password"; got != want {
		t.Fatalf("redactArgs = %q, want %q", got, want)
	}
}

// scaleLines are relaybench-result lines (the keys the table reads) for a
// whole default matrix, with a failed 100-reader run.
const scaleLines = `bench-relay: run 1 of 1
relaybench-result cpu_pct=2.4 cameras=1 readers_per_camera=10 total_cpu_pct=2.4 cpu_ms_per_mb=4.644 delivered_mb_per_s=5.2 window_rss_max_mib=36.2 window_rss_max_mb=38.0 rss_per_reader_kb=526.1 gc_cpu_pct=14.8 join_first_pkt_med_ms=2 join_first_pkt_p95_ms=2.4 join_first_idr_med_ms=2 join_first_idr_p95_ms=2.4 join_no_idr=0 self_cpu_pct=4 machine_busy_pct=4.4 dropped=0 failed=0 min_reader_ratio=1 window_s=15 warmup_s=5 baseline_s=5
relaybench-result cameras=1 readers_per_camera=50 total_cpu_pct=4.6 cpu_ms_per_mb=0.85 delivered_mb_per_s=25.8 window_rss_max_mib=36.6 window_rss_max_mb=38.4 rss_per_reader_kb=148.3 gc_cpu_pct=-1 join_first_pkt_med_ms=14 join_first_pkt_p95_ms=15 join_first_idr_med_ms=14 join_first_idr_p95_ms=15 join_no_idr=0 self_cpu_pct=16 machine_busy_pct=11.5 dropped=0 failed=0 min_reader_ratio=1
relaybench-failed cameras=1 readers_per_camera=100
relaybench-result cameras=1 readers_per_camera=200 total_cpu_pct=9 cpu_ms_per_mb=0.8 delivered_mb_per_s=105 window_rss_max_mib=50 window_rss_max_mb=52.4 rss_per_reader_kb=80 gc_cpu_pct=3 join_first_pkt_med_ms=72 join_first_pkt_p95_ms=128 join_first_idr_med_ms=99.5 join_first_idr_p95_ms=130 join_no_idr=0 self_cpu_pct=50 machine_busy_pct=40 dropped=0 failed=0 min_reader_ratio=1
relaybench-result cameras=1 readers_per_camera=300 total_cpu_pct=14 cpu_ms_per_mb=0.887 delivered_mb_per_s=157.8 window_rss_max_mib=57.5 window_rss_max_mb=60.3 rss_per_reader_kb=66.4 gc_cpu_pct=2.5 join_first_pkt_med_ms=72 join_first_pkt_p95_ms=128 join_first_idr_med_ms=72 join_first_idr_p95_ms=128 join_no_idr=0 self_cpu_pct=72.3 machine_busy_pct=60.2 dropped=0 failed=0 min_reader_ratio=1
relaybench-result cameras=8 readers_per_camera=25 total_cpu_pct=17.5 cpu_ms_per_mb=1.662 delivered_mb_per_s=105.2 window_rss_max_mib=56.2 window_rss_max_mb=59 rss_per_reader_kb=14.5 gc_cpu_pct=27 join_first_pkt_med_ms=98 join_first_pkt_p95_ms=214 join_first_idr_med_ms=98 join_first_idr_p95_ms=214 join_no_idr=0 self_cpu_pct=48.5 machine_busy_pct=67.9 dropped=1 failed=0 min_reader_ratio=0.9978
`

func TestRelayBenchTable(t *testing.T) {
	rows, err := parseRows(strings.NewReader(scaleLines))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 6 || !rows[2].failed || rows[5].label() != "8 × 25" {
		t.Fatalf("parsed %d rows: %+v", len(rows), rows)
	}
	var out bytes.Buffer
	formatTable(&out, tableInfo{machine: "2 cores, Test CPU, Linux 6.1", load: "0.10 0.20 0.30", command: "scripts/bench-scale.sh"}, rows)
	text := out.String()
	for _, want := range []string{
		"- machine: 2 cores, Test CPU, Linux 6.1; load average before the start: 0.10 0.20 0.30",
		"- command: `scripts/bench-scale.sh`",
		"a 15 s window",
		"| 1 × 10 | 2.4 | 4.644 | 5.2 | 36.2 | 38.0 | 526.1 | 14.8 | 2 / 2 | 2 / 2 | 0 | 4.0 | 4.4 | 0 / 0 | 1.0000 |",
		"| 1 × 50 | 4.6 | 0.850 | 25.8 | 36.6 | 38.4 | 148.3 | n/a |",
		"| 1 × 100 (run failed, see the log) | – |",
		"| 8 × 25 | 17.5 | 1.662 |",
		"on the same 2 cores as the daemon and the simulator; their CPU is shown",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the table lacks %q:\n%s", want, text)
		}
	}
	// Every table line has as many cells as the heading.
	var cols int
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| target") {
			continue
		}
		if strings.Contains(line, "**") {
			break // the targets' table
		}
		n := strings.Count(line, " | ") + 1
		if cols == 0 {
			cols = n
		} else if n != cols {
			t.Errorf("%d cells, the heading has %d: %s", n, cols, line)
		}
	}

	v := judge(rows)
	if len(v) != 4 {
		t.Fatalf("%d targets", len(v))
	}
	want := []struct{ status, detail string }{
		// 100 readers failed: missed, whatever the others did.
		{"missed", "50 readers: 0.850 ms; 100 readers: the run failed; 200 readers: 0.800 ms; 300 readers: 0.887 ms"},
		{"missed", "50 readers: 38.4 MB; 300 readers: 60.3 MB (missed)"},
		{"met", "200 readers: median 99.5 ms"},
		{"missed", "least reader / best of its camera: 0.9978; dropped: 1 (missed); failed to join: 0"},
	}
	for i, w := range want {
		if v[i].status != w.status || v[i].detail != w.detail {
			t.Errorf("target %d (%s): %s, %q; want %s, %q", i+1, v[i].target, v[i].status, v[i].detail, w.status, w.detail)
		}
	}
	if !strings.Contains(text, "| **missed** |") || !strings.Contains(text, "| **met** |") {
		t.Errorf("the targets' verdicts are not in the report:\n%s", text)
	}

	// A subset: what was not run is said so, never met.
	sub, _ := parseRows(strings.NewReader(strings.Split(scaleLines, "\n")[2]))
	v = judge(sub)
	if v[0].status != "met" || v[1].status != "not run" || v[2].status != "not run" || v[3].status != "not run" {
		t.Fatalf("targets of the 50-reader run alone: %+v", v)
	}
	if _, err := parseRows(strings.NewReader("relaybench-result cameras=1 readers_per_camera=x\n")); err == nil {
		t.Fatal("a value that is no number was taken")
	}
}
