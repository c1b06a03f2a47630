package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
)

// quotaPerMinute is Google's executeCommand quota per user; quotaWindow is
// the daemon's window for it (a minute and a 3 s margin).
const (
	quotaPerMinute = 10
	quotaWindow    = 63 * time.Second
)

// summary prints the end report and returns the exit code.
func (h *harness) summary(daemonExit int) int {
	evs := h.ev.snapshot()
	calls := h.sim.Calls()
	h.writeDumps(evs, calls)
	rd := &h.rd
	rd.mu.Lock()
	defer rd.mu.Unlock()

	// quotaLoad counts the executeCommand calls in the daemon's quota window
	// (63 s) up to t: at 9 or 10 a new command has to wait for a slot.
	var cmdTimes []time.Time
	for _, c := range calls {
		if isCommand(c) {
			cmdTimes = append(cmdTimes, c.At)
		}
	}
	slices.SortFunc(cmdTimes, func(a, b time.Time) int { return a.Compare(b) })
	quotaLoad := func(t time.Time) int {
		n := 0
		for _, c := range cmdTimes {
			if c.After(t.Add(-quotaWindow)) && !c.After(t) {
				n++
			}
		}
		return n
	}
	// saturated says whether the quota was (nearly) used up at some point
	// of [from, to].
	saturated := func(from, to time.Time) string {
		for t := from; !t.After(to); t = t.Add(time.Second) {
			if quotaLoad(t) >= quotaPerMinute-1 {
				return "quota saturated"
			}
		}
		return "quota free"
	}

	var broken []string
	p := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	p("")
	p("==================== SUMMARY ====================")
	ran := time.Duration(0)
	if n := len(h.minutes); n > 0 {
		ran = min(time.Duration(h.minutes[n-1].minute)*time.Minute, h.o.duration)
	}
	if h.diedAt != 0 {
		ran = h.diedAt
	}
	p("duration:        %s of %s planned (seed %d, stream TTL %s); daemon exit code on SIGTERM: %d", ran.Round(time.Second), h.o.duration, h.o.seed, h.o.streamTTL, daemonExit)
	if h.diedAt != 0 {
		broken = append(broken, fmt.Sprintf("the daemon exited on its own at %s: %v", fmtOffset(h.diedAt), h.exitErr))
	} else if daemonExit != 0 {
		broken = append(broken, fmt.Sprintf("the daemon exited with code %d on SIGTERM", daemonExit))
	}

	// Resources: the warm-up minute against the last.
	var base, last *sample
	for i := range h.samples {
		s := &h.samples[i]
		if s.err != nil {
			continue
		}
		if base == nil && s.minute >= h.o.warmupMinute {
			base = s
		}
		last = s
	}
	if base != nil && last != nil {
		p("goroutines:      %d at minute %d -> %d at minute %d (%+d)", base.goroutines, base.minute, last.goroutines, last.minute, last.goroutines-base.goroutines)
		p("heap_alloc:      %.1f MB -> %.1f MB (%+.1f MB)", mb(base.heap), mb(last.heap), mb(last.heap)-mb(base.heap))
		p("VmRSS:           %.1f MB -> %.1f MB (%+.1f MB); VmHWM at the end %.1f MB", mb(base.rss), mb(last.rss), mb(last.rss)-mb(base.rss), mb(last.hwm))
	} else {
		p("goroutines/heap/VmRSS: no usable samples after minute %d", h.o.warmupMinute)
	}

	// Gaps.
	byCause := map[string]int{}
	var unexplained []gap
	var longest gap
	for _, g := range rd.gaps {
		cause := h.sched.explainGap(g.start.Sub(h.t0))
		if cause == "" {
			unexplained = append(unexplained, g)
			cause = "unexplained"
		}
		byCause[cause]++
		if g.length() > longest.length() {
			longest = g
		}
	}
	p("readers:         %d connect attempts, %d connections played, %d RTP packets", rd.attempts, rd.conns, rd.packets)
	if len(rd.gaps) == 0 {
		p("gaps (>%s):      none", gapThreshold)
	} else {
		p("gaps (>%s):      %d; longest %.1fs (%s %s from %s, %s); by cause: %s", gapThreshold, len(rd.gaps), longest.length().Seconds(),
			longest.cam, longest.reader, fmtOffset(longest.start.Sub(h.t0)), orUnexplained(h.sched.explainGap(longest.start.Sub(h.t0))), fmtCounts(byCause))
		p("                 explained by an injected fault: %d, unexplained: %d", len(rd.gaps)-len(unexplained), len(unexplained))
		if len(unexplained) > 0 {
			kinds := map[string]int{}
			for _, g := range unexplained {
				kinds[saturated(g.start, g.start)]++
			}
			p("                 unexplained gaps by Google quota use when they began (>= %d calls in the 63 s before): %s", quotaPerMinute-1, fmtCounts(kinds))
		}
		for i, g := range unexplained {
			if i == 20 {
				p("                 ... %d more unexplained gaps in incidents.log", len(unexplained)-20)
				break
			}
			near := notReadyNear(evs, g.cam, g.start.Add(-5*time.Second), g.end.Add(5*time.Second), h.t0)
			p("    unexplained: %s %s %.1fs from %s%s, %d calls in the 63 s before; nearby: %s", g.cam, g.reader, g.length().Seconds(), fmtOffset(g.start.Sub(h.t0)),
				map[bool]string{true: " (open at close)", false: ""}[g.atClose], quotaLoad(g.start), orNone(strings.Join(near, " | ")))
		}
	}

	// Recoveries.
	recs, abandoned, open := recoveries(evs)
	if len(recs) == 0 {
		p("recoveries:      none (notReady->ready pairs); %d abandoned (camera went idle first), %d still down at the end", abandoned, open)
	} else {
		ds := make([]time.Duration, len(recs))
		worst := recs[0]
		for i, r := range recs {
			ds[i] = r.up.Sub(r.down)
			if ds[i] > worst.up.Sub(worst.down) {
				worst = r
			}
		}
		slices.Sort(ds)
		p("recoveries:      %d notReady->ready pairs: median %s, max %s (%s at %s: %s); %d abandoned (camera went idle first), %d still down at the end",
			len(recs), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), worst.path,
			fmtOffset(worst.down.Sub(h.t0)), worst.reason, abandoned, open)
		reasons := map[string]int{}
		for _, r := range recs {
			reasons[shortReason(r.reason)]++
		}
		p("                 notReady reasons: %s", fmtCounts(reasons))
	}
	evCounts := map[string]int{}
	for _, e := range evs {
		evCounts[e.name]++
	}
	p("events (total):  %s", fmtCounts(evCounts))

	// Google's quota.
	var cmds []nestsim.Call
	methods := map[string]int{}
	total429, in429 := 0, 0
	for _, c := range calls {
		if !isCommand(c) {
			continue
		}
		cmds = append(cmds, c)
		methods[c.Method]++
		if c.Status == 429 {
			total429++
			if h.sched.inWindow("rate_limit", c.At.Sub(h.t0), time.Second) {
				in429++
			}
		}
	}
	slices.SortStableFunc(cmds, func(a, b nestsim.Call) int { return a.At.Compare(b.At) })
	maxN, maxAt := 0, time.Time{}
	for i, j := 0, 0; i < len(cmds); i++ {
		for j < len(cmds) && cmds[j].At.Sub(cmds[i].At) < time.Minute {
			j++
		}
		if j-i > maxN {
			maxN, maxAt = j-i, cmds[i].At
		}
	}
	p("executeCommand:  %d calls (%s) since the daemon started", len(cmds), fmtCounts(methods))
	p("                 max in any rolling 60 s: %d (first such window from %s), quota %d", maxN, fmtOffset(maxAt.Sub(h.t0)), quotaPerMinute)
	p("                 answered 429: %d (%d inside the rate_limit window, %d outside it: the simulator's own quota)", total429, in429, total429-in429)
	if maxN > quotaPerMinute {
		broken = append(broken, fmt.Sprintf("%d executeCommand calls within 60 s from %s (quota %d)", maxN, fmtOffset(maxAt.Sub(h.t0)), quotaPerMinute))
	}

	// Google's sessions, from the simulator's side.
	var stopped, expired, inUse, live, atClose int
	for _, ss := range h.simSt.snapshot() {
		switch {
		case ss.stopped:
			stopped++
		case ss.expired:
			expired++
			path := camPath(ss.device)
			for _, e := range evs {
				if e.path == path && e.name == "notReady" && e.reason() != notNeeded &&
					!e.at.Before(ss.ended.Add(-time.Second)) && !e.at.After(ss.ended.Add(4*time.Second)) {
					inUse++
					h.incident("%s: Google session cut at its expiry %s while the daemon read it (%s)", path, fmtOffset(ss.ended.Sub(h.t0)), e.reason())
					break
				}
			}
		case ss.ended.IsZero():
			live++
		default:
			atClose++
		}
	}
	p("Google sessions: %d generated: %d stopped by the daemon, %d expired (%d of them cut while the daemon was reading them: no extension in time; %d abandoned without a Stop), %d ended at shutdown, %d live",
		stopped+expired+live+atClose, stopped, expired, inUse, expired-inUse, atClose, live)

	// Continuity.
	p("RTP continuity:  %d sequence breaks (%d packets skipped), %d timestamps backwards (per SSRC, within a connection)", rd.seqBreaks, rd.seqLost, rd.tsBackwards)
	for i, v := range rd.violations {
		if i == 10 {
			p("                 ... %d more in incidents.log", len(rd.violations)-10)
			break
		}
		p("    %s %s %s at %s", v.cam, v.reader, v.what, fmtOffset(v.at.Sub(h.t0)))
	}
	if rd.tsBackwards > 0 {
		broken = append(broken, fmt.Sprintf("%d RTP timestamps went backwards", rd.tsBackwards))
	}
	p("SSRC changes:    %d connections saw an SSRC change (%d packets with another SSRC dropped by the client)", rd.ssrcConns, rd.ssrcPackets)

	// Connects.
	failCauses := map[string]int{}
	unexplainedFails := map[string]int{}
	for _, f := range rd.failures {
		cause := h.sched.explainSpan(f.start.Sub(h.t0), f.end.Sub(h.t0))
		if cause == "" {
			cause = "unexplained"
			unexplainedFails[f.cam+": "+shortReason(f.reason)+" ["+saturated(f.start, f.end)+" during the attempt]"]++
		}
		failCauses[cause]++
	}
	if len(rd.failures) == 0 {
		p("failed connects: none")
	} else {
		p("failed connects: %d; by cause: %s", len(rd.failures), fmtCounts(failCauses))
		reasons := map[string]int{}
		for _, f := range rd.failures {
			reasons[shortReason(f.reason)]++
		}
		p("                 reasons: %s", fmtCounts(reasons))
		for k, n := range sortedCounts(unexplainedFails) {
			p("    unexplained: %dx %s", n, k)
		}
		for _, f := range rd.failures {
			if h.sched.explainSpan(f.start.Sub(h.t0), f.end.Sub(h.t0)) == "" {
				p("    first unexplained: %s %s at %s after %.1fs: %s", f.cam, f.reader, fmtOffset(f.start.Sub(h.t0)), f.end.Sub(f.start).Seconds(), f.reason)
				break
			}
		}
		if len(unexplainedFails) > 0 {
			n := 0
			for _, c := range unexplainedFails {
				n += c
			}
			broken = append(broken, fmt.Sprintf("%d reader connects failed outside any injected fault's window", n))
		}
	}
	if len(rd.drops) == 0 {
		p("disconnects:     none (no reader was cut off)")
	} else {
		reasons := map[string]int{}
		for _, d := range rd.drops {
			cause := orUnexplained(h.sched.explainGap(d.at.Sub(h.t0) - h.o.readTimeout))
			reasons[shortReason(d.reason)+" ["+cause+"]"]++
		}
		p("disconnects:     %d readers were cut off: %s", len(rd.drops), fmtCounts(reasons))
	}

	h.summarizeDaemonLog(p)

	p("invariants:")
	if len(broken) == 0 {
		p("  all held: <= %d executeCommand calls a rolling minute, no RTP timestamp went backwards, every failed connect was in a fault's window, the daemon lived", quotaPerMinute)
		p("=================================================")
		return 0
	}
	for _, b := range broken {
		p("  BROKEN: %s", b)
	}
	p("=================================================")
	return 1
}

// summarizeDaemonLog counts the daemon's log lines by level and lists the
// most frequent warnings and errors.
func (h *harness) summarizeDaemonLog(p func(string, ...any)) {
	f, err := os.Open(h.daemonLogPath)
	if err != nil {
		p("daemon log:      %v", err)
		return
	}
	defer f.Close()
	levels := map[string]int{}
	msgs := map[string]int{}
	var odd []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var l struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Level == "" {
			levels["non-JSON"]++
			if len(odd) < 5 {
				odd = append(odd, sc.Text())
			}
			continue
		}
		levels[l.Level]++
		if l.Level == "WARN" || l.Level == "ERROR" {
			key := l.Level + " " + l.Msg
			if l.Error != "" {
				key += ": " + shortReason(l.Error)
			}
			msgs[key]++
		}
	}
	p("daemon log:      %s (%s)", fmtCounts(levels), h.daemonLogPath)
	i := 0
	for k, n := range sortedCounts(msgs) {
		if i == 12 {
			p("    ... %d more kinds", len(msgs)-12)
			break
		}
		p("    %5dx %s", n, k)
		i++
	}
	for _, l := range odd {
		p("    non-JSON: %.200s", l)
	}
}

// shortReason drops what varies (times, durations, ids) from an error so
// that equal causes count together; three-digit numbers (status codes) stay.
func shortReason(s string) string {
	s = timestampRE.ReplaceAllString(s, "T")
	s = digitsRE.ReplaceAllStringFunc(s, func(d string) string {
		if len(d) == 3 && !strings.Contains(d, ".") {
			return d
		}
		return "N"
	})
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

var (
	timestampRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)?`)
	digitsRE    = regexp.MustCompile(`\d+(\.\d+)?`)
)

func fmtCounts(m map[string]int) string {
	var parts []string
	for k, n := range sortedCounts(m) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, n))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// sortedCounts iterates a count map, largest first, then by key.
func sortedCounts(m map[string]int) func(yield func(string, int) bool) {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return func(yield func(string, int) bool) {
		for _, k := range keys {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}

func orUnexplained(s string) string {
	if s == "" {
		return "unexplained"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "no notReady or failed-extension for this camera around it"
	}
	return s
}

// writeDumps writes the simulator's call log and the camera events, as
// offsets from the start, to calls.tsv and events.tsv in the work dir.
func (h *harness) writeDumps(evs []eventRec, calls []nestsim.Call) {
	var b strings.Builder
	b.WriteString("offset_s\tmethod\tcamera\tstatus\n")
	for _, c := range calls {
		fmt.Fprintf(&b, "%.3f\t%s\t%s\t%d\n", c.At.Sub(h.t0).Seconds(), c.Method, camPath(c.Device), c.Status)
	}
	if err := os.WriteFile(filepath.Join(h.o.workDir, "calls.tsv"), []byte(b.String()), 0o644); err != nil {
		h.incident("writing calls.tsv: %v", err)
	}
	b.Reset()
	b.WriteString("offset_s\tcamera\tevent\treason\n")
	for _, e := range evs {
		fmt.Fprintf(&b, "%.3f\t%s\t%s\t%s\n", e.at.Sub(h.t0).Seconds(), e.path, e.name, e.reason())
	}
	if err := os.WriteFile(filepath.Join(h.o.workDir, "events.tsv"), []byte(b.String()), 0o644); err != nil {
		h.incident("writing events.tsv: %v", err)
	}
}
