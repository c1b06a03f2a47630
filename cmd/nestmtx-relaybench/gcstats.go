package main

// The garbage collector's share of the daemon's CPU, from the runtime's CPU
// classes on the daemon's /metrics (scraped at the window's start and end).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The series the daemon's Go collector exposes for runtime/metrics'
// /cpu/classes/gc/total:cpu-seconds, /cpu/classes/total:cpu-seconds and
// /cpu/classes/idle:cpu-seconds, and the GC cycles of its base metrics.
const (
	metricGCCPU    = "go_cpu_classes_gc_total_cpu_seconds_total"
	metricTotalCPU = "go_cpu_classes_total_cpu_seconds_total"
	metricIdleCPU  = "go_cpu_classes_idle_cpu_seconds_total"
	metricGCCycles = "go_gc_duration_seconds_count"
)

// goCPU is one scrape of the runtime's CPU estimates, in seconds.
type goCPU struct {
	gc, total, idle float64
	cycles          float64 // GC cycles completed
}

// parseGoCPU reads the CPU classes out of a Prometheus text exposition; it
// fails unless the three classes are all there (an older daemon, or one
// whose collector lacks them).
func parseGoCPU(r io.Reader) (goCPU, error) {
	var c goCPU
	found := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// These series have no labels: "name value [timestamp]".
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		var dst *float64
		switch f[0] {
		case metricGCCPU:
			dst = &c.gc
		case metricTotalCPU:
			dst = &c.total
		case metricIdleCPU:
			dst = &c.idle
		case metricGCCycles:
			dst = &c.cycles
		default:
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return goCPU{}, fmt.Errorf("%s: %w", f[0], err)
		}
		*dst = v
		found[f[0]] = true
	}
	if err := sc.Err(); err != nil {
		return goCPU{}, err
	}
	for _, name := range []string{metricGCCPU, metricTotalCPU, metricIdleCPU} {
		if !found[name] {
			return goCPU{}, fmt.Errorf("no %s series (a daemon without the runtime's CPU classes?)", name)
		}
	}
	return c, nil
}

// gcFraction is the share of the CPU the process's Go code used between
// two scrapes that went to the garbage collector: Δgc / (Δtotal − Δidle).
// The runtime's total is GOMAXPROCS × wall time and idle the part no
// goroutine wanted, so their difference is the CPU the process used (by
// the runtime's estimate, which is not /proc's utime+stime). ok is false
// when nothing ran between the scrapes.
func gcFraction(a, b goCPU) (frac float64, ok bool) {
	used := (b.total - a.total) - (b.idle - a.idle)
	if used <= 0 {
		return 0, false
	}
	return (b.gc - a.gc) / used, true
}

// scrapeGoCPU fetches url with the bearer token (never printed).
func scrapeGoCPU(ctx context.Context, url, token string) (goCPU, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return goCPU{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return goCPU{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body) //nolint:errcheck // only draining
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized {
			hint = " (set NESTMTX_METRICS_TOKEN to the daemon's metrics token)"
		}
		return goCPU{}, fmt.Errorf("%s answered %s%s", url, resp.Status, hint)
	}
	return parseGoCPU(resp.Body)
}
