package hooks

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nestmtx/nestmtx/internal/hooks/cmdline"
)

// hookRun is one hook to run.
type hookRun struct {
	name    string // MediaMTX's name: runOnReady...
	command string
	restart bool
	// lasting hooks run until their end event (stop); the others run
	// once, to completion.
	lasting bool
	camera  uint64
	path    string
	env     hookEnv
}

// instance is one launched hook: its process, and for a lasting hook with
// restart, the processes after it.
type instance struct {
	r        *Runner
	run      hookRun
	log      *slog.Logger
	stopped  chan struct{}
	stopOnce sync.Once
}

// launch starts a hook in its own goroutine; nil when there is no command.
func (r *Runner) launch(h hookRun) *instance {
	if h.command == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	in := &instance{r: r, run: h, stopped: make(chan struct{}),
		log: r.log.With("hook", h.name, "path", h.path, "camera_id", h.camera)}
	r.wg.Add(1)
	go in.loop()
	return in
}

// stop tells a lasting hook its end event came: it is terminated, and not
// restarted. Safe on nil and more than once.
func (in *instance) stop() {
	if in != nil {
		in.stopOnce.Do(func() { close(in.stopped) })
	}
}

func (in *instance) loop() {
	defer in.r.wg.Done()
	defer in.log.Debug("hook done")
	args, err := cmdline.Split(in.run.command)
	if err != nil || len(args) == 0 || args[0] == "" {
		// The configuration checks this at start; a hook from elsewhere
		// (tests) is reported here.
		in.log.Warn("hook not run: bad command line", "error", err)
		return
	}
	args = in.run.env.expand(args)
	for {
		if ended := in.runOnce(args); ended {
			return
		}
		if !in.run.restart || !in.run.lasting {
			return
		}
		in.log.Info("hook will restart", "after", in.r.o.RestartPause)
		t := time.NewTimer(in.r.o.RestartPause)
		select {
		case <-t.C:
		case <-in.stopped:
			t.Stop()
			return
		case <-in.r.closing:
			t.Stop()
			return
		}
	}
}

// runOnce runs the hook's command once; ended says it was stopped (or the
// runner closes), so it must not restart.
func (in *instance) runOnce(args []string) (ended bool) {
	select {
	case <-in.stopped:
		return true
	case <-in.r.closing:
		if in.run.lasting {
			return true
		}
	default:
	}
	if !in.r.acquire() {
		in.log.Warn("hook not started: too many hook processes are running; it is tried again at its next event (or restart)",
			"limit", in.r.o.MaxProcesses)
		return false
	}
	released := false
	release := func() {
		if !released {
			released = true
			in.r.release()
		}
	}
	defer release()

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = in.run.env
	ownGroup(cmd)
	outR, outW, err := os.Pipe()
	if err != nil {
		in.log.Warn("hook not started", "error", err)
		return false
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		in.log.Warn("hook not started", "error", err)
		return false
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	// The hook has its own copies of the write ends; ours would keep the
	// readers from ever seeing EOF.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		in.log.Warn("hook could not start", "program", args[0], "error", err)
		return false
	}
	pid := cmd.Process.Pid
	log := in.log.With("pid", pid)
	log.Info("hook started", "program", filepath.Base(args[0]))

	budget := newLineBudget(in.r.o.LinesPerSecond, in.r.o.now)
	var readers sync.WaitGroup
	for _, s := range []struct {
		f    *os.File
		name string
	}{{outR, "stdout"}, {errR, "stderr"}} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			logLines(s.f, log, s.name, in.r.o.LineBytes, budget)
		}()
	}

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var (
		waitErr   error
		signalled bool
		kill      <-chan time.Time
	)
	stopped, closing, killing := in.stopped, in.r.closing, in.r.killing
	if !in.run.lasting {
		// A one-off hook is not stopped by an event: it finishes, unless
		// the daemon stops and its grace runs out.
		stopped, closing = nil, nil
	}
wait:
	for {
		select {
		case waitErr = <-exited:
			break wait
		case <-stopped:
			stopped = nil
			signalled = true
			in.signal(cmd, pid, sigTerminate, log)
			t := time.NewTimer(in.r.o.StopGrace)
			defer t.Stop()
			kill = t.C
		case <-closing:
			closing = nil
			signalled = true
			in.signal(cmd, pid, sigTerminate, log)
		case <-kill:
			kill = nil
			log.Warn("hook did not stop after SIGINT; killing its process group", "grace", in.r.o.StopGrace)
			in.signal(cmd, pid, sigKill, log)
		case <-killing:
			killing = nil
			log.Warn("hook did not stop after SIGINT; killing its process group", "grace", in.r.o.StopGrace)
			in.signal(cmd, pid, sigKill, log)
		}
	}
	release() // the process is gone: its slot is free for the next event
	if signalled {
		// What the hook started goes with it (sh -c 'a | b').
		in.signal(nil, pid, sigKill, log)
	}
	in.drain(readers.Wait, pid, outR, errR)
	if d := budget.flush(); d > 0 {
		log.Warn("hook output dropped: the hook writes faster than the log takes", "lines", d)
	}

	code := -1
	var ee *exec.ExitError
	if waitErr == nil {
		code = 0
	} else if errors.As(waitErr, &ee) {
		code = ee.ExitCode()
	}
	switch {
	case signalled:
		log.Info("hook stopped", "exit_code", code)
		return true
	case code == 0:
		log.Info("hook exited", "exit_code", 0)
	default:
		log.Warn("hook failed", "exit_code", code, "error", waitErr)
	}
	select {
	case <-in.stopped:
		return true
	default:
		return false
	}
}

// signal signals the hook's process group (the hook alone where groups do
// not exist; cmd nil: only the group).
func (in *instance) signal(cmd *exec.Cmd, pgid int, sig syscall.Signal, log *slog.Logger) {
	err := signalGroup(pgid, sig)
	if err != nil && cmd != nil {
		if err = cmd.Process.Kill(); errors.Is(err, os.ErrProcessDone) {
			err = nil
		}
	}
	if err != nil {
		log.Debug("signalling the hook", "signal", sig.String(), "error", err)
	}
}

// drainWait is how long the output of a hook that exited is waited for:
// what it left in the pipes.
const drainWait = time.Second

// drain waits a moment for the output readers. A process the hook started
// in the background may hold the pipes long after: its output is still
// logged, and the runner's Close kills its group and closes the pipes.
func (in *instance) drain(wait func(), pgid int, outR, errR *os.File) {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	t := time.NewTimer(drainWait)
	defer t.Stop()
	select {
	case <-done:
		outR.Close()
		errR.Close()
		return
	case <-t.C:
	}
	s := &stray{pgid: pgid, files: []*os.File{outR, errR}}
	in.r.addStray(s)
	go func() {
		<-done
		in.r.removeStray(s)
	}()
}
