package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
)

// sample is the daemon's resource use at one minute mark.
type sample struct {
	minute     int
	goroutines int
	heap       uint64
	rss, hwm   uint64
	err        error
}

type minuteLine struct {
	minute               int
	gen, ext, stop, r429 int
	events               map[string]int
	readers              int
	sessions             int
	s                    sample
}

// isCommand reports whether a sim call is an executeCommand (the quota'd kind).
func isCommand(c nestsim.Call) bool {
	switch c.Method {
	case "GenerateRtspStream", "ExtendRtspStream", "StopRtspStream":
		return true
	}
	return false
}

const tableHeader = "  MIN   GEN  EXT STOP  429 |  RDY NRDY  EXT FEXT  DEM UNDEM | RDRS SESS |  GOROUT  HEAP_MB  RSS_MB  HWM_MB"

func (m minuteLine) String() string {
	e := m.events
	res := fmt.Sprintf("%5d  %4d %4d %4d %4d | %4d %4d %4d %4d %4d %5d | %4d %4d |",
		m.minute, m.gen, m.ext, m.stop, m.r429,
		e["ready"], e["notReady"], e["extended"], e["failed-extension"], e["demand"], e["unDemand"],
		m.readers, m.sessions)
	if m.s.err != nil {
		return res + " " + m.s.err.Error()
	}
	return res + fmt.Sprintf(" %7d %8.1f %7.1f %7.1f", m.s.goroutines, mb(m.s.heap), mb(m.s.rss), mb(m.s.hwm))
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

// soak runs the readers and the faults for the duration and prints a line
// per minute.
func (h *harness) soak(parent context.Context) {
	h.t0 = time.Now()
	h.end = h.t0.Add(h.o.duration)
	h.sched = buildSchedule(h.o.duration)
	h.sched.print()
	fmt.Printf("# readers: cam1..cam%d each come and go (20-120 s on, 0-40 s off, 5 s off 3 times in 10), plus one on cam1 for the whole run; RTSP over TCP, read timeout %s\n",
		numCameras, h.o.readTimeout)
	fmt.Printf("# soak started at %s\n", h.t0.UTC().Format(time.RFC3339))
	fmt.Println("# columns: executeCommand calls that minute (Generate/Extend/Stop, answers 429), camera events that minute, readers connected and live Google sessions at the minute mark, the daemon's goroutines and heap (/healthz) and VmRSS/VmHWM")
	fmt.Println(tableHeader)

	// The readers and the faults outlive the last minute mark by a little,
	// so that the last sample sees the readers still connected.
	ctx, cancel := context.WithDeadline(parent, h.end.Add(5*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.runFaults(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); h.hold(ctx, "cam1", "cam1.long", h.end.Add(5*time.Second)) }()
	for i := 1; i <= numCameras; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); h.cycleReader(ctx, i) }()
	}
	// The daemon dying ends the soak at once.
	died := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-h.exited:
			h.diedAt = time.Since(h.t0)
			close(died)
			fmt.Printf("# THE DAEMON EXITED at %s: %v (log %s)\n", fmtOffset(h.diedAt), h.exitErr, h.daemonLogPath)
			cancel()
		case <-ctx.Done():
		}
	}()

	for m := 1; ; m++ {
		mark := h.t0.Add(time.Duration(m) * time.Minute)
		if mark.After(h.end) {
			mark = h.end
		}
		early := false
		t := time.NewTimer(time.Until(mark))
		select {
		case <-t.C:
		case <-died:
			early = true
		case <-parent.Done():
			early = true
		}
		t.Stop()
		if early {
			mark = time.Now()
		}
		s := h.takeSample(m)
		readers, sessions := int(h.rd.connected.Load()), h.sim.LiveSessions()
		time.Sleep(time.Second) // events stamped before the mark arrive
		line := h.minuteLine(m, h.t0.Add(time.Duration(m-1)*time.Minute), mark, s, readers, sessions)
		h.minutes = append(h.minutes, line)
		fmt.Println(line)
		if parent.Err() != nil {
			fmt.Println("# interrupted")
		}
		if early || !mark.Before(h.end) {
			break
		}
	}
	cancel()
	wg.Wait()
}

func (h *harness) takeSample(m int) sample {
	s := sample{minute: m}
	if !h.daemonAlive() {
		s.err = fmt.Errorf("the daemon is not running")
		h.samples = append(h.samples, s)
		return s
	}
	g, heap, err := h.runtimeStats()
	rss, hwm, err2 := h.procMemory()
	s.goroutines, s.heap, s.rss, s.hwm = g, heap, rss, hwm
	if err != nil {
		s.err = err
	} else if err2 != nil {
		s.err = err2
	}
	if s.err != nil {
		h.incident("sample at minute %d: %v", m, s.err)
	}
	h.samples = append(h.samples, s)
	return s
}

func (h *harness) minuteLine(m int, from, to time.Time, s sample, readers, sessions int) minuteLine {
	line := minuteLine{minute: m, readers: readers, sessions: sessions, s: s}
	for _, c := range h.sim.Calls() {
		if !isCommand(c) || c.At.Before(from) || !c.At.Before(to) {
			continue
		}
		switch c.Method {
		case "GenerateRtspStream":
			line.gen++
		case "ExtendRtspStream":
			line.ext++
		case "StopRtspStream":
			line.stop++
		}
		if c.Status == 429 {
			line.r429++
		}
	}
	line.events = countIn(h.ev.snapshot(), from, to)
	return line
}
