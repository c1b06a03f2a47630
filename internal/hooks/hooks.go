// Package hooks runs MediaMTX's runOn* commands on the cameras' lifecycle
// events (docs/hooks.md): runOnDemand from a camera's demand to its
// unDemand, runOnReady from ready to notReady, runOnRead from a reader's
// read to its unread (each restarted when it exits early, if asked), and
// runOnUnDemand, runOnNotReady and runOnUnread once at those events.
//
// The runner reads the events bus in its own goroutine and runs each
// command in goroutines of its own, so a camera never waits for a hook: a
// hook that hangs, floods its output or will not die costs the daemon a
// goroutine and at most MaxProcesses processes, never a camera's progress.
// Commands run without a shell, in a process group of their own that is
// killed with them, with an environment that carries none of the daemon's
// secrets (environ).
package hooks

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nestmtx/nestmtx/internal/events"
)

// Set is the hooks of one camera path: a command line for each, "" for
// none (config.Hooks is the same type, as settings).
type Set struct {
	RunOnDemand        string
	RunOnDemandRestart bool
	RunOnUnDemand      string
	RunOnReady         string
	RunOnReadyRestart  bool
	RunOnNotReady      string
	RunOnRead          string
	RunOnReadRestart   bool
	RunOnUnread        string
}

// Any says whether any command is set.
func (s Set) Any() bool {
	return s.RunOnDemand != "" || s.RunOnUnDemand != "" || s.RunOnReady != "" || s.RunOnNotReady != "" ||
		s.RunOnRead != "" || s.RunOnUnread != ""
}

// Options configure a Runner.
type Options struct {
	Bus *events.Bus
	// Lookup gives the hooks of a camera path and, when a regular
	// expression chose them, its submatches (the whole match first; they
	// become G1, G2...).
	Lookup func(path string) (Set, []string)
	// RTSPPort is the daemon's RTSP port (RTSP_PORT), asked when a hook
	// starts.
	RTSPPort func() string
	// Environ is the daemon's environment (default os.Environ()); hooks get
	// only its PATH, HOME, LANG and TZ.
	Environ []string
	// MaxProcesses bounds the hook processes running at once (default 64);
	// a hook beyond it is not started, with a log line.
	MaxProcesses int
	// RestartPause is the wait before a restart (default 5s, MediaMTX's).
	RestartPause time.Duration
	// StopGrace is how long a hook told to stop (SIGINT) has before its
	// process group is killed (SIGKILL); default 5s. At Close, the time
	// the running hooks get to finish.
	StopGrace time.Duration
	// LineBytes bounds a logged output line (default 4096); LinesPerSecond
	// the lines a process may log (default 50, bursts of ten seconds').
	LineBytes      int
	LinesPerSecond int
	Log            *slog.Logger
	// now is the clock of the output budget (tests).
	now func() time.Time
}

// Runner runs the hooks; Close stops it and its processes.
type Runner struct {
	o        Options
	log      *slog.Logger
	sub      *events.Subscription
	loopDone chan struct{}

	// closing is closed when Close begins: long-running hooks are told to
	// stop and nothing starts any more; killing is closed when their grace
	// is over.
	closing   chan struct{}
	killing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // the hooks' goroutines

	mu     sync.Mutex
	live   int  // processes running
	closed bool // no hook starts any more (launch adds to wg under mu)
	// strays are the output pipes of hooks that exited while something
	// they started still holds them.
	strays map[*stray]struct{}

	// Owned by the loop goroutine.
	cams    map[uint64]*camHooks
	dropped uint64
}

// camHooks is what the runner knows of one camera: its long-running hooks
// and what their ends need (the path and query of the start, which the
// end's own event may not carry).
type camHooks struct {
	demand      *instance
	demandPath  string
	demandQuery string
	ready       *instance
	readyPath   string
	reads       map[string]*readHook // by reader id
}

type readHook struct {
	hook *instance // nil when there is no runOnRead
	path string
}

// eventBuffer is the subscription's buffer: the camera states the bus also
// carries are most of its traffic, and the loop never blocks.
const eventBuffer = 4096

// Start subscribes to the bus and starts the runner.
func Start(o Options) *Runner {
	if o.MaxProcesses <= 0 {
		o.MaxProcesses = 64
	}
	if o.RestartPause <= 0 {
		o.RestartPause = 5 * time.Second
	}
	if o.StopGrace <= 0 {
		o.StopGrace = 5 * time.Second
	}
	if o.LineBytes <= 0 {
		o.LineBytes = 4096
	}
	if o.LinesPerSecond <= 0 {
		o.LinesPerSecond = 50
	}
	if o.Environ == nil {
		o.Environ = os.Environ()
	}
	if o.RTSPPort == nil {
		o.RTSPPort = func() string { return "" }
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.now == nil {
		o.now = time.Now
	}
	r := &Runner{o: o, log: o.Log.With("component", "hooks"), sub: o.Bus.Subscribe(eventBuffer),
		loopDone: make(chan struct{}), closing: make(chan struct{}), killing: make(chan struct{}),
		cams: map[uint64]*camHooks{}, strays: map[*stray]struct{}{}}
	go r.loop()
	return r
}

// Close stops the runner: the events already emitted are still handled
// (so the final unDemand, notReady and unread of a stopping daemon run
// their hooks), then the long-running hooks are told to stop (SIGINT) and
// every hook still running after StopGrace, or when ctx ends, is killed
// with its process group. It returns when they are gone, or when ctx ends.
func (r *Runner) Close(ctx context.Context) {
	r.closeOnce.Do(func() {
		r.sub.Close()
		select {
		case <-r.loopDone:
		case <-ctx.Done():
		}
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.closing)
		wait := r.o.StopGrace
		if d, ok := ctx.Deadline(); ok {
			// The kill must come while the daemon still runs: after
			// it, only the hooks themselves die (Pdeathsig), not what
			// they started.
			wait = max(0, min(wait, time.Until(d)-killMargin))
		}
		grace := time.NewTimer(wait)
		defer grace.Stop()
		done := make(chan struct{})
		go func() { r.wg.Wait(); close(done) }()
		select {
		case <-done:
			close(r.killing)
			return
		case <-grace.C:
		case <-ctx.Done():
		}
		close(r.killing)
		select {
		case <-done:
		case <-ctx.Done():
		}
	})
	r.closeStrays()
}

// killMargin is what Close keeps of its context for killing the hooks
// that did not stop by themselves.
const killMargin = 250 * time.Millisecond

// stray is what an exited hook left behind: the process group of the
// background processes still holding its output pipes, and the pipes.
type stray struct {
	pgid  int
	files []*os.File
}

func (r *Runner) addStray(s *stray) {
	r.mu.Lock()
	r.strays[s] = struct{}{}
	r.mu.Unlock()
}

// removeStray closes a stray's pipes once its readers have seen EOF.
func (r *Runner) removeStray(s *stray) {
	r.mu.Lock()
	_, ok := r.strays[s]
	delete(r.strays, s)
	r.mu.Unlock()
	if ok {
		for _, f := range s.files {
			f.Close()
		}
	}
}

// closeStrays kills the groups of the strays and closes their pipes, so
// that nothing a hook started outlives the daemon's stop, and no reader
// waits on it.
func (r *Runner) closeStrays() {
	r.mu.Lock()
	strays := r.strays
	r.strays = map[*stray]struct{}{}
	r.mu.Unlock()
	for s := range strays {
		_ = signalGroup(s.pgid, sigKill)
		for _, f := range s.files {
			f.Close()
		}
	}
}

func (r *Runner) loop() {
	defer close(r.loopDone)
	for m := range r.sub.C() {
		if d := r.sub.Dropped(); d > r.dropped {
			r.log.Warn("hooks missed camera events (too many at once); a hook may run when it should not, or not run",
				"missed", d-r.dropped)
			r.dropped = d
		}
		switch {
		case m.Event != nil && m.Event.Domain == events.DomainCamera && m.Event.Entity != nil:
			r.onEvent(*m.Event)
		case m.State != nil && m.State.Domain == events.DomainCamera && m.State.Value == nil:
			// The camera was deleted: its final events came before this;
			// whatever still runs for it goes.
			if st := r.cams[m.State.Entity]; st != nil {
				st.stopAll()
				delete(r.cams, m.State.Entity)
			}
		}
	}
}

func (r *Runner) cam(id uint64) *camHooks {
	st := r.cams[id]
	if st == nil {
		st = &camHooks{reads: map[string]*readHook{}}
		r.cams[id] = st
	}
	return st
}

func (st *camHooks) stopAll() {
	st.demand.stop()
	st.ready.stop()
	for _, rh := range st.reads {
		rh.hook.stop()
	}
}

func (r *Runner) onEvent(e events.Event) {
	id := *e.Entity
	path := str(e.Details, "path")
	st := r.cam(id)
	switch e.Event {
	case events.CameraDemand:
		st.demand.stop()
		st.demandPath, st.demandQuery = path, str(e.Details, "query")
		set, groups := r.o.Lookup(path)
		st.demand = r.launch(hookRun{name: "runOnDemand", command: set.RunOnDemand, restart: set.RunOnDemandRestart,
			camera: id, path: path, env: r.env(path, groups, "MTX_QUERY", st.demandQuery), lasting: true})
	case events.CameraUnDemand:
		st.demand.stop()
		st.demand = nil
		if st.demandPath != "" {
			path = st.demandPath // the path may have changed since
		}
		set, groups := r.o.Lookup(path)
		r.launch(hookRun{name: "runOnUnDemand", command: set.RunOnUnDemand, camera: id, path: path,
			env: r.env(path, groups, "MTX_QUERY", st.demandQuery)})
		st.demandPath, st.demandQuery = "", ""
	case events.CameraReady:
		st.ready.stop()
		st.readyPath = path
		set, groups := r.o.Lookup(path)
		st.ready = r.launch(hookRun{name: "runOnReady", command: set.RunOnReady, restart: set.RunOnReadyRestart,
			camera: id, path: path, env: r.sourceEnv(path, groups, e.Details), lasting: true})
	case events.CameraNotReady:
		st.ready.stop()
		st.ready = nil
		if st.readyPath != "" {
			path = st.readyPath
		}
		st.readyPath = ""
		set, groups := r.o.Lookup(path)
		r.launch(hookRun{name: "runOnNotReady", command: set.RunOnNotReady, camera: id, path: path,
			env: r.sourceEnv(path, groups, e.Details)})
	case events.CameraRead:
		reader := str(e.Details, "reader_id")
		if prev := st.reads[reader]; prev != nil {
			prev.hook.stop()
		}
		set, groups := r.o.Lookup(path)
		st.reads[reader] = &readHook{path: path, hook: r.launch(hookRun{name: "runOnRead", command: set.RunOnRead,
			restart: set.RunOnReadRestart, camera: id, path: path, env: r.readerEnv(path, groups, e.Details), lasting: true})}
	case events.CameraUnread:
		reader := str(e.Details, "reader_id")
		if rh := st.reads[reader]; rh != nil {
			rh.hook.stop()
			path = rh.path
			delete(st.reads, reader)
		}
		set, groups := r.o.Lookup(path)
		r.launch(hookRun{name: "runOnUnread", command: set.RunOnUnread, camera: id, path: path,
			env: r.readerEnv(path, groups, e.Details)})
	}
}

// str is a detail as a string ("" when absent).
func str(d map[string]any, key string) string {
	switch v := d[key].(type) {
	case string:
		return v
	case nil:
		return ""
	case int:
		return strconv.Itoa(v)
	default:
		return ""
	}
}

// acquire takes a process slot, false when MaxProcesses are running.
func (r *Runner) acquire() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live >= r.o.MaxProcesses {
		return false
	}
	r.live++
	return true
}

func (r *Runner) release() {
	r.mu.Lock()
	r.live--
	r.mu.Unlock()
}

// Running is the number of hook processes running now.
func (r *Runner) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live
}
