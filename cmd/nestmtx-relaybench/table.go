package main

// `nestmtx-relaybench table`: the scaling run's report (scripts/bench-scale.sh)
// as one markdown table, a row per configuration, from the relaybench-result
// lines of its runs, then the scaling targets, each met or missed.

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// tableRow is one configuration: the key=value pairs of its
// relaybench-result line, or, for a run that ended without one, only its
// cameras and readers_per_camera and failed set.
type tableRow struct {
	vals   map[string]float64
	failed bool
}

func (r tableRow) cameras() int   { return int(r.vals["cameras"]) }
func (r tableRow) perCamera() int { return int(r.vals["readers_per_camera"]) }

// get is a value, with ok false when the line lacks it or it is the -1
// that stands for "unknown".
func (r tableRow) get(key string) (float64, bool) {
	v, ok := r.vals[key]
	if !ok || v == -1 || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

func (r tableRow) label() string { return fmt.Sprintf("%d × %d", r.cameras(), r.perCamera()) }

// parseRows reads relaybench-result and relaybench-failed lines (any other
// line is skipped: the input may be whole logs).
func parseRows(in io.Reader) ([]tableRow, error) {
	var rows []tableRow
	sc := bufio.NewScanner(in)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || (f[0] != "relaybench-result" && f[0] != "relaybench-failed") {
			continue
		}
		row := tableRow{vals: map[string]float64{}, failed: f[0] == "relaybench-failed"}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("%q: not key=value", kv)
			}
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			row.vals[k] = x
		}
		if _, ok := row.vals["cameras"]; !ok {
			row.vals["cameras"] = 1 // a line from before --cameras
		}
		if _, ok := row.vals["readers_per_camera"]; !ok {
			return nil, fmt.Errorf("a %s line without readers_per_camera", f[0])
		}
		rows = append(rows, row)
	}
	return rows, sc.Err()
}

// The targets of the scaling run (GitHub issue 15).
const (
	targetCPUPerMB   = 0.9  // ms of daemon CPU per delivered MB, at 50 to 300 readers of one camera
	targetRSS50      = 40e6 // bytes of RSS at 50 readers of one camera
	targetRSS300     = 60e6 // at 300
	targetIDRMedian  = 100  // ms, the joiners' median time to the first IDR at 200 readers
	targetReaderRate = 0.99 // 8 cameras × 25 readers: every reader's share of its camera's best
)

type verdict struct {
	target string
	status string // met, missed or not run
	detail string
}

// judge weighs the rows against the targets. A target is missed when any
// measured part of it is (a configuration whose run failed counts as
// missed), met when every part was measured and met, else not run.
func judge(rows []tableRow) []verdict {
	find := func(cams, perCam int) *tableRow {
		for i := range rows {
			if rows[i].cameras() == cams && rows[i].perCamera() == perCam {
				return &rows[i]
			}
		}
		return nil
	}
	type part struct {
		status, detail string
	}
	combine := func(target string, parts []part) verdict {
		v := verdict{target: target, status: "met"}
		var details []string
		notRun := false
		for _, p := range parts {
			details = append(details, p.detail)
			switch p.status {
			case "missed":
				v.status = "missed"
			case "not run":
				notRun = true
			}
		}
		if v.status == "met" && (notRun || len(parts) == 0) {
			v.status = "not run"
		}
		v.detail = strings.Join(details, "; ")
		if len(parts) == 0 {
			v.detail = "no such configuration in this run"
		}
		return v
	}
	// check measures one value of a configuration against a bound.
	check := func(r *tableRow, label, key string, ok func(float64) bool, format string) part {
		if r == nil {
			return part{"not run", label + ": not run"}
		}
		if r.failed {
			return part{"missed", label + ": the run failed"}
		}
		v, have := r.get(key)
		if !have {
			return part{"missed", label + ": not measured"}
		}
		if !ok(v) {
			return part{"missed", label + ": " + fmt.Sprintf(format, v) + " (missed)"}
		}
		return part{"met", label + ": " + fmt.Sprintf(format, v)}
	}

	var out []verdict
	var cpu []part
	for i := range rows {
		r := &rows[i]
		if r.cameras() == 1 && r.perCamera() >= 50 && r.perCamera() <= 300 {
			cpu = append(cpu, check(r, fmt.Sprintf("%d readers", r.perCamera()), "cpu_ms_per_mb",
				func(v float64) bool { return v <= targetCPUPerMB }, "%.3f ms"))
		}
	}
	out = append(out, combine(fmt.Sprintf("Daemon CPU per delivered MB ≤ %.1f ms at every reader count from 50 to 300 (one camera)", targetCPUPerMB), cpu))

	out = append(out, combine(fmt.Sprintf("RSS under %.0f MB at 50 readers and under %.0f MB at 300 (max in the window)", targetRSS50/1e6, targetRSS300/1e6), []part{
		check(find(1, 50), "50 readers", "window_rss_max_mb", func(v float64) bool { return v < targetRSS50/1e6 }, "%.1f MB"),
		check(find(1, 300), "300 readers", "window_rss_max_mb", func(v float64) bool { return v < targetRSS300/1e6 }, "%.1f MB"),
	}))

	out = append(out, combine(fmt.Sprintf("Joiners' median time to first IDR under %d ms at 200 readers (199 simultaneous joiners)", targetIDRMedian), []part{
		check(find(1, 200), "200 readers", "join_first_idr_med_ms", func(v float64) bool { return v < targetIDRMedian }, "median %.1f ms"),
	}))

	eight := find(8, 25)
	parts := []part{check(eight, "least reader / best of its camera", "min_reader_ratio",
		func(v float64) bool { return v >= targetReaderRate }, "%.4f")}
	if eight != nil && !eight.failed {
		parts = append(parts,
			check(eight, "dropped", "dropped", func(v float64) bool { return v == 0 }, "%.0f"),
			check(eight, "failed to join", "failed", func(v float64) bool { return v == 0 }, "%.0f"))
	}
	out = append(out, combine(fmt.Sprintf("8 cameras × 25 readers: every reader ≥ %.0f %% of its camera's best reader's packets, none dropped", 100*targetReaderRate), parts))
	return out
}

// tableColumns are the table's columns: heading, then how a row shows.
var tableColumns = []struct {
	head string
	cell func(r tableRow) string
}{
	{"cameras × readers", func(r tableRow) string { return r.label() }},
	{"daemon CPU % of a core", num("total_cpu_pct", "%.1f")},
	{"CPU ms / MB", num("cpu_ms_per_mb", "%.3f")},
	{"delivered MB/s", num("delivered_mb_per_s", "%.1f")},
	{"RSS MiB", num("window_rss_max_mib", "%.1f")},
	{"RSS MB", num("window_rss_max_mb", "%.1f")},
	{"RSS / reader kB", num("rss_per_reader_kb", "%.1f")},
	{"GC CPU %", num("gc_cpu_pct", "%.1f")},
	{"first packet ms, median / p95", pair("join_first_pkt_med_ms", "join_first_pkt_p95_ms")},
	{"first IDR ms, median / p95", pair("join_first_idr_med_ms", "join_first_idr_p95_ms")},
	{"no IDR", num("join_no_idr", "%.0f")},
	{"readers' CPU % of a core", num("self_cpu_pct", "%.1f")},
	{"machine busy %", num("machine_busy_pct", "%.1f")},
	{"dropped / failed", pair("dropped", "failed")},
	{"least reader / best", num("min_reader_ratio", "%.4f")},
}

// num shows a value with format, n/a when unknown.
func num(key, format string) func(tableRow) string {
	return func(r tableRow) string {
		if v, ok := r.get(key); ok {
			return fmt.Sprintf(format, v)
		}
		return "n/a"
	}
}

// pair shows two values as "a / b", rounded to whole numbers.
func pair(a, b string) func(tableRow) string {
	return func(r tableRow) string { return num(a, "%.0f")(r) + " / " + num(b, "%.0f")(r) }
}

// tableInfo is what the table's header says about the run.
type tableInfo struct {
	machine string // cores, CPU model, kernel
	load    string // load average before the start
	command string
}

// formatTable writes the markdown report: the run, the table, its notes
// and the targets.
func formatTable(w io.Writer, info tableInfo, rows []tableRow) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("## nestmtx relay scaling benchmark")
	p("")
	p("- machine: %s; load average before the start: %s", info.machine, info.load)
	if info.command != "" {
		p("- command: `%s`", info.command)
	}
	if len(rows) > 0 {
		r := rows[0]
		p("- each configuration: fresh `nestmtx simulate` and `nestmtx serve` processes, the first reader of each camera alone for %s, the joiners, %s of warm-up, then a %s window",
			secs(r, "baseline_s"), secs(r, "warmup_s"), secs(r, "window_s"))
	}
	p("")
	heads := make([]string, len(tableColumns))
	rule := make([]string, len(tableColumns))
	for i, c := range tableColumns {
		heads[i] = c.head
		rule[i] = "---"
		if i > 0 {
			rule[i] = "---:"
		}
	}
	p("| %s |", strings.Join(heads, " | "))
	p("|%s|", strings.Join(rule, "|"))
	for _, r := range rows {
		cells := make([]string, len(tableColumns))
		for i, c := range tableColumns {
			if r.failed && i > 0 {
				cells[i] = "–"
				continue
			}
			cells[i] = c.cell(r)
		}
		if r.failed {
			cells[0] += " (run failed, see the log)"
		}
		p("| %s |", strings.Join(cells, " | "))
	}
	p("")
	p("Notes:")
	p("- The readers run in one process (nestmtx-relaybench, gortsplib clients over TCP on loopback) on the same %s as the daemon and the simulator; their CPU is shown (\"readers' CPU\"), as is the machine's.", coresPhrase(info.machine))
	p("- Daemon CPU: utime+stime of `nestmtx serve` (and any children) from /proc over the window. MB = 10^6 bytes of RTP (header and payload) the readers received; MiB = 2^20 bytes.")
	p("- RSS: the daemon's greatest VmRSS in the window (sampled every 100 ms). RSS / reader: (that − the greatest RSS while the first reader of each camera played alone) / the joiners.")
	p("- GC CPU: Δgc / (Δtotal − Δidle) of the daemon's go_cpu_classes_* series on /metrics between the window's start and end (the runtime's estimate; it includes idle-priority mark workers).")
	p("- First packet / IDR: the joiners (every reader but the first of each camera), connected and SETUP beforehand, sending PLAY together; from just before PLAY; nearest-rank median and p95. \"No IDR\": joiners without one by the window's end.")
	p("- Least reader / best: packets in the window of the least reader of a camera over its best reader's, the least over the cameras.")
	p("")
	p("Targets:")
	p("")
	p("| target | result | measured |")
	p("|---|---|---|")
	for _, v := range judge(rows) {
		p("| %s | **%s** | %s |", v.target, v.status, v.detail)
	}
}

func secs(r tableRow, key string) string {
	if v, ok := r.get(key); ok {
		return strconv.FormatFloat(v, 'f', -1, 64) + " s"
	}
	return "?"
}

// coresPhrase is "2 cores" out of a machine description that starts so.
func coresPhrase(machine string) string {
	if f := strings.Fields(machine); len(f) >= 2 && strings.HasPrefix(f[1], "core") {
		return strings.TrimSuffix(f[0]+" "+f[1], ",")
	}
	return "cores"
}

func tableMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nestmtx-relaybench table", flag.ContinueOnError)
	fs.SetOutput(stderr)
	command := fs.String("command", "", "the command line of the run, printed in the header")
	load := fs.String("load", "", "the load average before the run started (/proc/loadavg's first three fields)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: nestmtx-relaybench table [flags] < results

Reads relaybench-result lines (and relaybench-failed lines, for runs that
ended without a result) and prints the scaling report: the machine, a
markdown table with a row per configuration, notes and the targets, each
met or missed.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	rows, err := parseRows(stdin)
	if err != nil {
		fmt.Fprintln(stderr, "nestmtx-relaybench table:", err)
		return 1
	}
	if len(rows) == 0 {
		fmt.Fprintln(stderr, "nestmtx-relaybench table: no relaybench-result lines on stdin")
		return 1
	}
	ld := *load
	if ld == "" {
		ld = "unknown"
	}
	formatTable(stdout, tableInfo{machine: fmt.Sprintf("%d cores, %s, %s", numCPU(), cpuModel(), kernel()), load: ld, command: *command}, rows)
	return 0
}
