package main

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

type eventRec struct {
	at      time.Time
	camID   uint64
	path    string
	name    string
	details map[string]any
}

func (e eventRec) reason() string {
	if r, ok := e.details["reason"].(string); ok {
		return r
	}
	if r, ok := e.details["error"].(string); ok {
		return r
	}
	return ""
}

// eventLog keeps every camera event the daemon published.
type eventLog struct {
	mu    sync.Mutex
	paths map[uint64]string
	all   []eventRec
}

func (l *eventLog) setPath(id uint64, path string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.paths == nil {
		l.paths = map[uint64]string{}
	}
	l.paths[id] = path
}

func (l *eventLog) add(id uint64, name string, details map[string]any, at time.Time) eventRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	path := l.paths[id]
	if path == "" {
		path = fmt.Sprintf("camera#%d", id)
	}
	rec := eventRec{at: at, camID: id, path: path, name: name, details: details}
	l.all = append(l.all, rec)
	return rec
}

func (l *eventLog) snapshot() []eventRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.all)
	slices.SortStableFunc(out, func(a, b eventRec) int { return a.at.Compare(b.at) })
	return out
}

// countIn counts the counted events with at in [from, to).
func countIn(evs []eventRec, from, to time.Time) map[string]int {
	n := map[string]int{}
	for _, e := range evs {
		if !e.at.Before(from) && e.at.Before(to) {
			n[e.name]++
		}
	}
	return n
}

// notNeeded is the notReady reason of a stream closed because nobody reads
// it: the end of a demand, not a failure to recover from.
const notNeeded = "not needed by anyone"

type recovery struct {
	path     string
	down, up time.Time
	reason   string
}

// recoveries pairs every failure notReady with the same camera's next ready.
// A camera that went idle (unDemand) before coming back did not recover: it
// was no longer wanted, and is counted apart.
func recoveries(evs []eventRec) (done []recovery, abandoned, open int) {
	pending := map[uint64]*recovery{}
	for _, e := range evs {
		switch e.name {
		case "notReady":
			if e.reason() == notNeeded {
				continue
			}
			if pending[e.camID] == nil {
				pending[e.camID] = &recovery{path: e.path, down: e.at, reason: e.reason()}
			}
		case "unDemand":
			if pending[e.camID] != nil {
				abandoned++
				delete(pending, e.camID)
			}
		case "ready":
			if r := pending[e.camID]; r != nil {
				r.up = e.at
				done = append(done, *r)
				delete(pending, e.camID)
			}
		}
	}
	return done, abandoned, len(pending)
}

// notReadyNear returns the reasons of a camera's failure notReady events
// within [from, to], with their offsets from t0.
func notReadyNear(evs []eventRec, path string, from, to, t0 time.Time) []string {
	var out []string
	for _, e := range evs {
		if e.path == path && (e.name == "notReady" || e.name == "failed-extension") && !e.at.Before(from) && !e.at.After(to) {
			out = append(out, fmt.Sprintf("%s %s: %s", e.name, fmtOffset(e.at.Sub(t0)), e.reason()))
		}
	}
	return out
}
