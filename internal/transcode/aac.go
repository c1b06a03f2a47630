// Package transcode turns the Opus audio of WebRTC cameras into AAC, which
// Frigate and Home Assistant want, through a supervised ffmpeg child: Opus
// RTP packets go in as an Ogg stream on the child's stdin, ADTS AAC comes
// back on its stdout and is handed out as access units with RTP timestamps
// on the input's 48 kHz clock. Only audio is ever transcoded here.
package transcode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/backoff"
)

const (
	// aacFrameSamples is the length of one AAC-LC access unit.
	aacFrameSamples = 1024
	// queueLen bounds the packets waiting for the child: 2 s of the usual
	// 20 ms packets (1 s of 10 ms ones). Enough to ride out a restart's
	// first backoff step and ffmpeg's start-up; beyond it the oldest go.
	queueLen = 100
	// maxJump is the largest timestamp jump (2 s at 48 kHz) filled with
	// silence; a longer one, forwards or backwards, is a discontinuity.
	maxJump = 2 * 48000
	// backoffReset: a child that ran this long failed afresh, not again.
	backoffReset = 30 * time.Second
	// waitDelay bounds how long Wait waits for the child's pipes to close
	// after it exited or was killed.
	waitDelay = 2 * time.Second
	// stderrTail is how much of ffmpeg's stderr a warning quotes.
	stderrTail = 2048
)

// restartBackoff spaces the restarts of a failing child.
var restartBackoff = backoff.Backoff{First: 100 * time.Millisecond, Max: 5 * time.Second}

// Options configures StartAAC.
type Options struct {
	// FFmpeg is the path of the ffmpeg binary, as FindFFmpeg resolved it.
	FFmpeg string
	// Log gets a Warn line for every restart of the child; nil means
	// slog.Default().
	Log *slog.Logger
	// Out gets each AAC access unit (raw, no ADTS header) with its RTP
	// timestamp on the 48 kHz clock of the Opus input. It is called from
	// one goroutine of the transcoder, in order; au is only valid during
	// the call. A slow Out backs up into the queue, never into WriteOpus.
	Out func(ts uint32, au []byte)
}

// Stats counts what the transcoder did since it started.
type Stats struct {
	Restarts        int64 // child starts (tried) after the first
	PacketsIn       int64 // packets given to WriteOpus
	Dropped         int64 // packets dropped because the queue was full (oldest first) or after Close
	Late            int64 // packets behind the expected timestamp (reordered, duplicated), dropped
	Invalid         int64 // packets that are no valid Opus (empty, malformed TOC, too long), dropped
	SilenceFrames   int64 // Opus silence frames fed to fill gaps left by lost packets
	Discontinuities int64 // timestamp jumps beyond 2 s or a new SSRC: the count started afresh
	UnitsOut        int64 // AAC access units passed to Out
	// ChildCPU is the user+system time of all children: the exited ones
	// from their rusage, the running one from /proc (Linux).
	ChildCPU time.Duration
	// PID is the running child's process id, 0 between children.
	PID int
}

// AAC is a running Opus to AAC transcoder. Its methods are safe for
// concurrent use.
type AAC struct {
	o      Options
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan *packet
	done   chan struct{} // closed when every goroutine and child is gone

	pid                                    atomic.Int64
	cpuExited                              atomic.Int64 // nanoseconds
	restarts, packetsIn, dropped, late     atomic.Int64
	invalid, silence, discontinuities, out atomic.Int64
}

// packet is a queued copy of an Opus RTP packet.
type packet struct {
	ts, ssrc uint32
	payload  []byte
}

// packetPool recycles queued packets, so WriteOpus does not allocate once
// the pool is warm.
var packetPool = sync.Pool{New: func() any { return &packet{payload: make([]byte, 0, 512)} }}

var errPacketTooLarge = errors.New("transcode: packet too large for an Ogg page")

// StartAAC starts the ffmpeg child and the goroutines around it. It fails
// if the child cannot be started at all (a bogus FFmpeg path); later
// failures restart the child with backoff until ctx ends or Close.
func StartAAC(ctx context.Context, o Options) (*AAC, error) {
	if o.FFmpeg == "" {
		return nil, errors.New("transcode: no ffmpeg path (resolve it with FindFFmpeg)")
	}
	if o.Out == nil {
		return nil, errors.New("transcode: Options.Out is nil")
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	a := &AAC{o: o, log: log, ctx: ctx, cancel: cancel,
		queue: make(chan *packet, queueLen), done: make(chan struct{})}
	c, err := a.startChild()
	if err != nil {
		cancel()
		return nil, err
	}
	go a.supervise(c)
	return a, nil
}

// WriteOpus queues one Opus RTP packet; the caller may reuse pkt at once.
// It never blocks: when the queue is full (the child is behind or
// restarting) the oldest queued packet is dropped, because fresh audio is
// worth more than stale, and the gap it leaves is filled with silence.
func (a *AAC) WriteOpus(pkt *rtp.Packet) {
	if pkt == nil {
		return
	}
	a.packetsIn.Add(1)
	if _, ok := opusDuration(pkt.Payload); !ok || len(pkt.Payload) > oggMaxPacket {
		a.invalid.Add(1)
		return
	}
	if a.ctx.Err() != nil {
		a.dropped.Add(1)
		return
	}
	p := packetPool.Get().(*packet)
	p.ts, p.ssrc = pkt.Timestamp, pkt.SSRC
	p.payload = append(p.payload[:0], pkt.Payload...)
	for range 2 {
		select {
		case a.queue <- p:
			return
		default:
		}
		select {
		case old := <-a.queue:
			packetPool.Put(old)
			a.dropped.Add(1)
		default:
		}
	}
	// Other writers refilled the queue as fast as it was emptied.
	packetPool.Put(p)
	a.dropped.Add(1)
}

// Close kills the child, if any, and waits for it and for every goroutine
// of the transcoder. It is safe to call more than once; cancelling the
// context given to StartAAC does the same, without the wait.
func (a *AAC) Close() {
	a.cancel()
	<-a.done
}

// Stats returns the counters so far.
func (a *AAC) Stats() Stats {
	pid := int(a.pid.Load())
	return Stats{
		Restarts:        a.restarts.Load(),
		PacketsIn:       a.packetsIn.Load(),
		Dropped:         a.dropped.Load(),
		Late:            a.late.Load(),
		Invalid:         a.invalid.Load(),
		SilenceFrames:   a.silence.Load(),
		Discontinuities: a.discontinuities.Load(),
		UnitsOut:        a.out.Load(),
		ChildCPU:        time.Duration(a.cpuExited.Load()) + liveCPU(pid),
		PID:             pid,
	}
}

// child is one life of the ffmpeg process.
type child struct {
	cmd     *exec.Cmd
	cancel  context.CancelFunc // kills the process (exec.CommandContext)
	ctx     context.Context
	stdin   io.WriteCloser
	stdout  io.ReadCloser
	stderr  *tailBuffer
	started time.Time
}

func (a *AAC) startChild() (*child, error) {
	ctx, cancel := context.WithCancel(a.ctx)
	cmd := exec.CommandContext(ctx, a.o.FFmpeg, ffmpegArgs()...)
	cmd.Env = childEnv()
	cmd.SysProcAttr = childSysProcAttr()
	cmd.WaitDelay = waitDelay
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("transcode: ffmpeg stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("transcode: ffmpeg stdout: %w", err)
	}
	if err := cmd.Start(); err != nil { // Start closes the pipes when it fails
		cancel()
		return nil, fmt.Errorf("transcode: cannot start ffmpeg %q: %w", a.o.FFmpeg, err)
	}
	a.pid.Store(int64(cmd.Process.Pid))
	return &child{cmd: cmd, cancel: cancel, ctx: ctx, stdin: stdin, stdout: stdout,
		stderr: stderr, started: time.Now()}, nil
}

// childEnv passes on only what finding ffmpeg's libraries may need: the
// daemon's environment can hold secrets that ffmpeg has no use for.
func childEnv() []string {
	env := []string{}
	for _, k := range []string{"PATH", "LD_LIBRARY_PATH"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// supervise runs children one after another until the transcoder is
// closed, with backoff between failures, then closes done.
func (a *AAC) supervise(c *child) {
	defer close(a.done)
	fails := 0
	for {
		err := a.runChild(c)
		if a.ctx.Err() != nil {
			return
		}
		ran, stderr := time.Since(c.started), c.stderr.String()
		if ran >= backoffReset {
			fails = 0
		}
		for {
			fails++
			delay := restartBackoff.Delay(fails)
			a.log.Warn("transcode: ffmpeg (Opus to AAC) stopped; restarting it",
				"err", err, "ran", ran.Round(time.Millisecond), "retry_in", delay, "stderr", stderr)
			if !sleep(a.ctx, delay) {
				return
			}
			a.restarts.Add(1)
			if c, err = a.startChild(); err == nil {
				break
			}
			ran, stderr = 0, ""
		}
	}
}

// runChild feeds and drains one child until it exits or is killed, and
// returns why it ended. Out is called from this goroutine.
func (a *AAC) runChild(c *child) error {
	tl := &timeline{}
	fed := make(chan error, 1)
	go func() {
		err := a.feed(c.ctx, c.stdin, tl)
		if err != nil {
			c.cancel() // a failed write ends this child; its stdout then ends too
		}
		fed <- err
	}()
	// Killing the child ends its stdout, unless something else holds the
	// pipe (ffmpeg behind a wrapper script that did not exec it). Then
	// exec closes our end only after WaitDelay; closing it at once makes
	// Close return at once.
	stop := context.AfterFunc(c.ctx, func() { c.stdout.Close() })
	defer stop()
	drainErr := a.drain(c.stdout, tl)
	// stdout ended: the child exited or closed it. Make sure it is dead and
	// the feeder stops (a write to a dead child fails at once).
	c.cancel()
	feedErr := <-fed
	waitErr := c.cmd.Wait()
	a.pid.Store(0)
	if ps := c.cmd.ProcessState; ps != nil {
		a.cpuExited.Add(int64(ps.UserTime() + ps.SystemTime()))
	}
	switch {
	case a.ctx.Err() != nil:
		return nil
	case feedErr != nil && !errors.Is(feedErr, syscall.EPIPE) && !errors.Is(feedErr, os.ErrClosed):
		return fmt.Errorf("writing to ffmpeg: %w", feedErr)
	case drainErr != nil && !errors.Is(drainErr, io.EOF) && !errors.Is(drainErr, os.ErrClosed):
		return fmt.Errorf("reading from ffmpeg: %w", drainErr)
	case waitErr != nil:
		return fmt.Errorf("ffmpeg: %w", waitErr)
	default:
		return errors.New("ffmpeg exited with status 0")
	}
}

// drain reads ADTS from the child and hands each access unit to Out,
// numbering the units of this child's life from 0.
func (a *AAC) drain(r io.Reader, tl *timeline) error {
	ar := newADTSReader(r)
	for n := uint64(0); ; n++ {
		au, err := ar.next()
		if err != nil {
			return err
		}
		ts, ok := tl.ts(n)
		if !ok { // output before any input: cannot happen with ffmpeg
			continue
		}
		a.o.Out(ts, au)
		a.out.Add(1)
	}
}

// feed writes queued packets to the child as Ogg Opus until ctx ends or a
// write fails. Its state (the expected next timestamp) lives only as long
// as the child: a new child starts a new count from its first packet.
func (a *AAC) feed(ctx context.Context, w io.Writer, tl *timeline) error {
	f := feeder{a: a, og: newOggWriter(w, rand.Uint32()), tl: tl}
	// The headers go out at once, so ffmpeg has opened its input and
	// decoder before the first packet arrives.
	if err := f.og.writeHeaders(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case p := <-a.queue:
			err := f.write(p)
			packetPool.Put(p)
			if err != nil {
				return err
			}
		}
	}
}

// feeder keeps the fed audio continuous in time: output unit n of a child
// is stamped base + n*1024 on the assumption that the child got exactly
// one sample for every tick of the RTP clock since base.
type feeder struct {
	a       *AAC
	og      *oggWriter
	tl      *timeline
	started bool
	ssrc    uint32
	next    uint32 // the RTP timestamp the next packet should have
}

func (f *feeder) write(p *packet) error {
	samples, _ := opusDuration(p.payload) // WriteOpus let only valid ones in
	switch d := int32(p.ts - f.next); {   // int32: right across wrap-around
	case !f.started || p.ssrc != f.ssrc:
		if f.started {
			f.a.discontinuities.Add(1)
		}
		f.started, f.ssrc = true, p.ssrc
		f.tl.add(f.og.granule, p.ts)
	case d == 0:
	case d < 0 && d > -maxJump:
		// Reordered or duplicated: its place was already filled (by
		// silence if it was late), so it is dropped.
		f.a.late.Add(1)
		return nil
	case d > 0 && d <= maxJump && d%opusStep == 0:
		if err := f.fill(int(d)); err != nil {
			return err
		}
	default:
		// A long silence with nothing sent (DTX), a source restart, or a
		// step that is no whole number of Opus frames. Silence would delay
		// the audio for nothing, or could not fill it exactly, so the count
		// starts afresh at this packet, in the same child: restarting
		// ffmpeg would cost ~100 ms of CPU and a gap each time, and DTX
		// cameras would do it at every pause in the sound.
		f.a.discontinuities.Add(1)
		f.tl.add(f.og.granule, p.ts)
	}
	f.next = p.ts + uint32(samples)
	return f.og.writePacket(p.payload, samples)
}

// fill feeds samples of silence in place of lost packets.
func (f *feeder) fill(samples int) error {
	for _, s := range opusSilence {
		for samples >= s.samples {
			if err := f.og.writePacket(s.frame, s.samples); err != nil {
				return err
			}
			samples -= s.samples
			f.a.silence.Add(1)
		}
	}
	return nil
}

// timeline maps a child's output units to RTP time. The child's decoded
// audio is one run of samples numbered from 0 (the Ogg granule position);
// each segment says that sample `at` has RTP timestamp base. The first
// segment starts at 0 with the first packet, so unit n is stamped
// base + n*1024; each discontinuity adds a segment where it happened.
//
// The list stays short without a cap: the reader drops the segments it
// has passed, and the ones ahead of it are bounded by what the pipes and
// ffmpeg hold, because the feeder blocks when they are full.
type timeline struct {
	mu   sync.Mutex
	segs []segment
}

type segment struct {
	at   uint64
	base uint32
}

func (t *timeline) add(at uint64, base uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.segs); n > 0 && t.segs[n-1].at == at {
		t.segs[n-1].base = base // nothing was fed since the last one
		return
	}
	t.segs = append(t.segs, segment{at, base})
}

// ts is the RTP timestamp of output unit n.
func (t *timeline) ts(n uint64) (uint32, bool) {
	s := n * aacFrameSamples
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.segs) == 0 {
		return 0, false
	}
	for len(t.segs) > 1 && t.segs[1].at <= s {
		t.segs = t.segs[1:]
	}
	return t.segs[0].base + uint32(s-t.segs[0].at), true
}

// sleep waits d unless ctx ends first; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// tailBuffer keeps the last max bytes written to it: ffmpeg's stderr, to
// quote when the child fails.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p) > t.max {
		p = p[len(p)-t.max:]
	}
	if over := len(t.b) + len(p) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
