package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
)

// window is one injected fault, as offsets from the soak's start. A gap or
// a failed connect is put down to it when it begins (a gap) or overlaps (a
// connect attempt) [start-1s, end+slack]: slack covers what the fault sets
// off (the stall watchdog, a regeneration, a 429 penalty).
type window struct {
	kind       string
	start, end time.Duration
	slack      time.Duration
}

func (w window) explainsFrom() time.Duration  { return w.start - time.Second }
func (w window) explainsUntil() time.Duration { return w.end + w.slack }

// schedule is the whole fault plan of a run; it depends on the duration only.
type schedule struct {
	windows   []window // sorted by start; drops are instants
	dropEvery time.Duration
	dropStart time.Duration // when DropEvery is switched on
}

const (
	slackShort     = 10 * time.Second
	slackRateLimit = 80 * time.Second // the daemon's 429 penalty (63 s + up to 5 s jitter) and a restart behind it
)

// buildSchedule lays the faults out. A full run (20 minutes or more):
//   - extend_fail: FailExtensions for 90 s every 7 minutes from minute 3;
//   - freeze: FreezeStreams for 10 s every 14 minutes from minute 6:30;
//   - rate_limit: RateLimitEveryOther for 60 s once, at minute 27 (or half-way
//     in runs under 40 minutes);
//   - drop: DropEvery(3m) switched on at 1:30, so drops at 4:30, 7:30, ...
//     (off the other faults' starts).
//
// No window starts in the last minute. A shorter (smoke) run squeezes one of
// each in, at fixed fractions of the duration.
func buildSchedule(d time.Duration) schedule {
	var s schedule
	add := func(kind string, start, length, slack time.Duration) {
		s.windows = append(s.windows, window{kind: kind, start: start, end: start + length, slack: slack})
	}
	if d >= 20*time.Minute {
		last := d - time.Minute
		for t := 3 * time.Minute; t+90*time.Second <= last; t += 7 * time.Minute {
			add("extend_fail", t, 90*time.Second, slackShort)
		}
		for t := 6*time.Minute + 30*time.Second; t+10*time.Second <= last; t += 14 * time.Minute {
			add("freeze", t, 10*time.Second, slackShort)
		}
		rl := 27 * time.Minute
		if d < 40*time.Minute {
			rl = (d / 2).Truncate(time.Minute)
		}
		add("rate_limit", rl, time.Minute, slackRateLimit)
		s.dropEvery, s.dropStart = 3*time.Minute, 90*time.Second
	} else {
		sec := func(f float64) time.Duration { return time.Duration(f * float64(d)).Truncate(time.Second) }
		add("extend_fail", sec(0.25), min(90*time.Second, sec(0.2)), slackShort)
		add("freeze", sec(0.5), 10*time.Second, slackShort)
		add("rate_limit", sec(0.65), min(time.Minute, sec(1.0/6)), slackRateLimit)
		s.dropEvery = min(3*time.Minute, sec(0.4))
	}
	for t := s.dropStart + s.dropEvery; t < d; t += s.dropEvery {
		add("drop", t, 0, slackShort)
	}
	slices.SortStableFunc(s.windows, func(a, b window) int { return int(a.start - b.start) })
	return s
}

func (s schedule) print() {
	fmt.Printf("# fault schedule (offsets from the start of the soak; a gap or failed connect counts as explained from start-1s to the 'explains until' offset):\n")
	for _, w := range s.windows {
		if w.kind == "drop" {
			continue
		}
		fmt.Printf("#   %-11s %s .. %s  explains until %s\n", w.kind, fmtOffset(w.start), fmtOffset(w.end), fmtOffset(w.explainsUntil()))
	}
	var drops []string
	for _, w := range s.windows {
		if w.kind == "drop" {
			drops = append(drops, fmtOffset(w.start))
		}
	}
	fmt.Printf("#   drop        DropEvery(%s) from %s: every live RTSPS connection cut at %v, each explaining %s after\n", s.dropEvery, fmtOffset(s.dropStart), drops, slackShort)
}

// explainGap names the fault a gap starting at off is put down to, or "".
func (s schedule) explainGap(off time.Duration) string {
	for _, w := range s.windows {
		if off >= w.explainsFrom() && off <= w.explainsUntil() {
			return w.kind
		}
	}
	return ""
}

// explainSpan names the fault whose window overlaps [from, to], or "".
func (s schedule) explainSpan(from, to time.Duration) string {
	for _, w := range s.windows {
		if to >= w.explainsFrom() && from <= w.explainsUntil() {
			return w.kind
		}
	}
	return ""
}

// inWindow reports whether off lies in a window of that kind (without slack).
func (s schedule) inWindow(kind string, off, extra time.Duration) bool {
	for _, w := range s.windows {
		if w.kind == kind && off >= w.start-time.Second && off <= w.end+extra {
			return true
		}
	}
	return false
}

// runFaults switches the faults on and off on schedule until ctx ends.
func (h *harness) runFaults(ctx context.Context) {
	f := h.sim.Faults()
	type action struct {
		at   time.Duration
		what string
		do   func()
	}
	var acts []action
	for _, w := range h.sched.windows {
		var set func(bool)
		switch w.kind {
		case "extend_fail":
			set = f.FailExtensions
		case "freeze":
			set = f.FreezeStreams
		case "rate_limit":
			set = f.RateLimitEveryOther
		default:
			continue
		}
		acts = append(acts, action{w.start, w.kind + " on", func() { set(true) }},
			action{w.end, w.kind + " off", func() { set(false) }})
	}
	acts = append(acts, action{h.sched.dropStart, fmt.Sprintf("DropEvery(%s)", h.sched.dropEvery), func() { f.DropEvery(h.sched.dropEvery) }})
	slices.SortStableFunc(acts, func(a, b action) int { return int(a.at - b.at) })
	defer resetFaults(f)
	for _, a := range acts {
		if !sleepCtx(ctx, time.Until(h.t0.Add(a.at))) {
			return
		}
		a.do()
		h.incident("fault %s", a.what)
	}
	<-ctx.Done()
}

func resetFaults(f *nestsim.Faults) {
	f.DropEvery(0)
	f.FailExtensions(false)
	f.FreezeStreams(false)
	f.RateLimitEveryOther(false)
}
