// Package supervisor runs one goroutine per camera that owns everything
// live about it: the on-demand lifecycle (demand, ready, read, unread,
// unDemand, notReady), the Google stream session and its extensions, the
// upstream connection and the output relay. Everything else talks to it by
// posting closures to its inbox, so no camera state is shared under locks.
package supervisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
	"github.com/nestmtx/nestmtx/internal/source"
)

// Google is the part of the SDM client a camera uses.
type Google interface {
	GenerateRtspStream(ctx context.Context, deviceName string) (nest.RTSPStream, error)
	ExtendRtspStream(ctx context.Context, s nest.RTSPStream) (nest.RTSPStream, error)
	StopRtspStream(ctx context.Context, s nest.RTSPStream) error
}

// Config is what the camera row says.
type Config struct {
	ID         uint64
	Name       string
	Device     string // Google's device name
	Path       string
	Enabled    bool
	Persistent bool
	// Unsupported says why the camera cannot be served at all (say, it
	// streams only over WebRTC); "" when it can. Such a camera is failed
	// without a single call to Google.
	Unsupported string
}

// Options are shared by every camera.
type Options struct {
	// NewRelay makes the output relay a camera's readers are served from,
	// for a source with the given tracks (on the RTSP server).
	NewRelay     func(relay.Params) (*relay.Relay, error)
	Bus          *events.Bus
	UpstreamTLS  *tls.Config
	StartTimeout time.Duration
	CloseAfter   time.Duration
	// ExtendAt is the fraction of a session's lifetime after which it is
	// extended (0.8: at 4 of Google's 5 minutes).
	ExtendAt float64
	// StopTimeout bounds the Stops of a camera deleted while the daemon
	// runs; at shutdown the manager's deadline bounds them instead, and
	// otherwise a Stop waits for the quota until its session would expire.
	StopTimeout time.Duration
	// RefusedBackoff is how long a camera Google refused to stream (a 400
	// or 403 to Generate) stays failed before it is tried again; it doubles
	// with each refusal up to 12 times this. A config change or a sync
	// retries at once.
	RefusedBackoff time.Duration
	// StallTimeout is how long an upstream may send nothing before it is
	// regenerated (NestMTX #39: streams that looked alive for hours).
	StallTimeout time.Duration
	// DeviceGone is told when Google says a camera's device does not exist
	// (unshared in Partner Connections), so that a sync can record it.
	DeviceGone func(cameraID uint64)
	Log        *slog.Logger

	// shutdown gives the deadline of the daemon's stop (set by the Manager);
	// nil when the camera ends alone (deleted).
	shutdown func() context.Context
	// skew warns once about a host clock far from Google's (shared by the
	// Manager's cameras).
	skew *skewWarning
}

type phase int

const (
	idle     phase = iota // no source
	starting              // generating a session / connecting, readers held
	ready                 // frames flow
)

// Camera is one camera's supervisor.
type Camera struct {
	opts  Options
	inbox chan func()
	done  chan struct{}
	log   *slog.Logger

	// Everything below is owned by the run goroutine.
	cfg      Config
	google   Google
	credDown string // why the credential cannot be used, "" when it can
	gone     string // why Google says the device does not exist, until the row changes
	demanded bool   // a demand was emitted and its unDemand is still due
	phase    phase
	waiters  []waiter
	readers  map[*rtspserver.Reader]bool // value: playing
	relay    *relay.Relay
	upstream *source.Upstream // the playing upstream, for stall checks
	session  *nest.RTSPStream // the live Google session, if any
	// sessionLost: Google said the session is gone (a refused extension);
	// stopping it would only spend quota.
	sessionLost bool
	// retiring sessions are stopped after the next Generate, so that the
	// quota serves the replacement first.
	retiring  []nest.RTSPStream
	gen       int // source generation: stale reports are ignored
	cancelSrc context.CancelFunc
	srcCtx    context.Context // the current generation's; nil between generations
	lastError string
	attempts  int // consecutive failed starts, for backoff
	// failed says why Google refused to stream this camera; no start is
	// tried until failTimer fires or the row changes.
	failed    string
	failures  int // consecutive refusals, for the failed backoff
	failTimer *time.Timer
	// waitingFor says what a start waits for (Google's quota), "" when
	// nothing: published in the state and in the 503 of a start timeout.
	waitingFor string
	stopping   bool // the daemon is shutting down: the state says stopped

	startTimer, closeTimer, extendTimer, retryTimer *time.Timer
	watchdog                                        *time.Ticker
}

// waiter is a held DESCRIBE or SETUP; a SETUP's reader is already counted.
type waiter struct {
	reply  chan describeResult
	reader *rtspserver.Reader
	setup  bool
}

type describeResult struct {
	relay *relay.Relay
	err   error
}

// New creates a camera's supervisor; Run starts it.
func New(cfg Config, g Google, o Options) *Camera {
	if o.ExtendAt <= 0 || o.ExtendAt >= 1 {
		o.ExtendAt = 0.8
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 5 * time.Second
	}
	if o.RefusedBackoff <= 0 {
		o.RefusedBackoff = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Camera{opts: o, inbox: make(chan func(), 64), done: make(chan struct{}),
		log: o.Log.With("camera_id", cfg.ID), cfg: cfg, google: g, readers: map[*rtspserver.Reader]bool{}}
}

// Run is the camera's goroutine; it returns when ctx ends, after stopping
// the Google session.
func (c *Camera) Run(ctx context.Context) {
	defer close(c.done)
	c.publishState()
	c.maybePersist()
	for {
		select {
		case <-ctx.Done():
			c.shutdown()
			return
		case fn := <-c.inbox:
			fn()
		case <-timerC(c.startTimer):
			c.startTimer = nil
			c.onStartTimeout()
		case <-timerC(c.closeTimer):
			c.closeTimer = nil
			c.onCloseAfter()
		case <-timerC(c.extendTimer):
			c.extendTimer = nil
			c.extend()
		case <-timerC(c.retryTimer):
			c.retryTimer = nil
			c.startSource()
		case <-timerC(c.failTimer):
			c.failTimer = nil
			c.log.Info("trying the camera again after Google refused it", "after", c.failedBackoff())
			c.failed = ""
			c.publishState()
			c.maybePersist()
		case <-tickerC(c.watchdog):
			c.checkStall()
		}
	}
}

// Done is closed when Run has returned.
func (c *Camera) Done() <-chan struct{} { return c.done }

// post runs fn on the camera's goroutine; it gives up if the camera has
// stopped or ctx ends first.
func (c *Camera) post(ctx context.Context, fn func()) bool {
	select {
	case c.inbox <- fn:
		return true
	case <-c.done:
		return false
	case <-ctx.Done():
		return false
	}
}

// call runs fn on the camera's goroutine and waits for it.
func (c *Camera) call(fn func()) bool {
	ran := make(chan struct{})
	if !c.post(context.Background(), func() { fn(); close(ran) }) {
		return false
	}
	select {
	case <-ran:
		return true
	case <-c.done:
		return false
	}
}

func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func tickerC(t *time.Ticker) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func stopTimer(t **time.Timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}

// --- the rtspserver.Path side -------------------------------------------

var errCameraGone = &rtspserver.StatusError{Status: base.StatusNotFound, Reason: "no such camera"}

// Describe implements rtspserver.Path.
func (c *Camera) Describe(ctx context.Context, r *rtspserver.Reader) (*relay.Relay, error) {
	return c.await(ctx, r, false)
}

// Setup implements rtspserver.Path.
func (c *Camera) Setup(ctx context.Context, r *rtspserver.Reader) (*relay.Relay, error) {
	return c.await(ctx, r, true)
}

// await answers at once when the stream is ready, otherwise holds the
// request until it is (starting the source when nothing is running).
func (c *Camera) await(ctx context.Context, r *rtspserver.Reader, addReader bool) (*relay.Relay, error) {
	reply := make(chan describeResult, 1)
	if !c.post(ctx, func() { c.onRequest(r, addReader, reply) }) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errCameraGone
	}
	select {
	case res := <-reply:
		return res.relay, res.err
	case <-ctx.Done():
		// The RTSP server's own start timeout usually ends the wait a
		// moment before the camera's: the reader still gets the camera's
		// reason (what it waits for, what failed).
		var why string
		c.call(func() {
			c.dropWaiter(reply)
			why = c.startTimeoutReason()
		})
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && why != "" {
			return nil, &rtspserver.StatusError{Status: base.StatusServiceUnavailable, Reason: why}
		}
		return nil, ctx.Err()
	case <-c.done:
		return nil, errCameraGone
	}
}

func (c *Camera) onRequest(r *rtspserver.Reader, addReader bool, reply chan describeResult) {
	if !c.cfg.Enabled {
		reply <- describeResult{err: errCameraGone}
		return
	}
	if c.credDown != "" {
		reply <- describeResult{err: &rtspserver.StatusError{Status: base.StatusServiceUnavailable, Reason: c.credDown}}
		return
	}
	if c.gone != "" {
		// Answered without asking Google again: a reader retrying every
		// 10 s must not spend the quota on a device that is not there.
		reply <- describeResult{err: &rtspserver.StatusError{Status: base.StatusNotFound, Reason: c.gone}}
		return
	}
	if why := c.refusal(); why != "" {
		// The same for a camera Google will not stream: at once, and no
		// Generate until the backoff ends or the row changes.
		reply <- describeResult{err: &rtspserver.StatusError{Status: base.StatusServiceUnavailable, Reason: why}}
		return
	}
	if addReader {
		// From SETUP on a reader counts (MediaMTX's rule): it holds the
		// source open, and cancels a pending close.
		c.readers[r] = false
		stopTimer(&c.closeTimer)
	}
	if c.phase == ready {
		reply <- describeResult{relay: c.relay}
		c.publishState()
		return
	}
	c.waiters = append(c.waiters, waiter{reply: reply, reader: r, setup: addReader})
	if c.phase == idle {
		c.emit(events.CameraDemand, map[string]any{"path": c.cfg.Path, "reader_type": r.Type,
			"reader_id": r.ID, "query": r.Query})
		c.demanded = true
		c.phase = starting
		c.attempts = 0
		c.startTimer = time.NewTimer(c.opts.StartTimeout)
		c.startSource()
	}
	c.publishState()
}

func (c *Camera) dropWaiter(reply chan describeResult) {
	for i, w := range c.waiters {
		if w.reply == reply {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			if w.setup {
				c.forgetReader(w.reader)
			}
			return
		}
	}
}

// answerWaiters answers every held request; a SETUP that failed is no
// reader (gortsplib will not tell us about a session that never set up).
func (c *Camera) answerWaiters(res describeResult) {
	for _, w := range c.waiters {
		w.reply <- res
		if res.err != nil && w.setup {
			c.forgetReader(w.reader)
		}
	}
	c.waiters = nil
}

// forgetReader removes a reader that never played.
func (c *Camera) forgetReader(r *rtspserver.Reader) {
	if playing, ok := c.readers[r]; ok && !playing {
		delete(c.readers, r)
		c.armCloseIfUnused()
	}
}

// endDemand emits the unDemand that pairs the last demand, once.
func (c *Camera) endDemand() {
	if c.demanded {
		c.demanded = false
		c.emit(events.CameraUnDemand, map[string]any{"path": c.cfg.Path})
	}
}

// Play implements rtspserver.Path.
func (c *Camera) Play(r *rtspserver.Reader) (relay.Playback, error) {
	var rel *relay.Relay
	ok := c.call(func() {
		if _, known := c.readers[r]; !known || c.relay == nil {
			return
		}
		if !c.readers[r] {
			c.readers[r] = true
			c.emit(events.CameraRead, readerDetails(c.cfg.Path, r))
			c.publishState()
		}
		rel = c.relay
	})
	if !ok || rel == nil {
		return nil, errCameraGone
	}
	// The replay runs here, on the reader's session goroutine, as gortsplib
	// requires; the camera goroutine is not held up by it.
	return rel.Play(r.Player(c.log))
}

// Pause implements rtspserver.Path.
func (c *Camera) Pause(r *rtspserver.Reader) {
	c.post(context.Background(), func() {
		if c.readers[r] {
			c.readers[r] = false
			c.emit(events.CameraUnread, readerDetails(c.cfg.Path, r))
			c.publishState()
		}
	})
}

// Remove implements rtspserver.Path.
func (c *Camera) Remove(r *rtspserver.Reader) {
	c.post(context.Background(), func() {
		playing, known := c.readers[r]
		if !known {
			return
		}
		delete(c.readers, r)
		if playing {
			c.emit(events.CameraUnread, readerDetails(c.cfg.Path, r))
		}
		c.armCloseIfUnused()
		c.publishState()
	})
}

func readerDetails(path string, r *rtspserver.Reader) map[string]any {
	return map[string]any{"path": path, "reader_type": r.Type, "reader_id": r.ID, "remote_addr": r.RemoteAddr}
}

// --- control from the manager -------------------------------------------

// Update applies a changed camera row.
func (c *Camera) Update(cfg Config) {
	c.post(context.Background(), func() {
		old := c.cfg
		c.cfg = cfg
		// A changed row (a sync, an edit) gets a new chance.
		c.gone = ""
		if c.failed != "" {
			c.failed, c.failures = "", 0
			stopTimer(&c.failTimer)
			c.lastError = ""
		}
		switch {
		case !cfg.Enabled && old.Enabled:
			c.takeDown("the camera was disabled")
		case cfg.Path != old.Path && old.Path != "":
			// Readers of the old name cannot follow; let them reconnect.
			c.takeDown("the camera's path changed")
		case cfg.Persistent != old.Persistent:
			c.armCloseIfUnused()
		}
		c.maybePersist()
		c.publishState()
	})
}

// SetGoogle swaps the SDM client (after re-authentication) and clears or
// sets the reason the credential is unusable.
func (c *Camera) SetGoogle(g Google, downReason string) {
	c.post(context.Background(), func() {
		wasDown := c.credDown
		c.credDown = downReason
		if downReason != "" && wasDown == "" {
			// With the old client: it may still stop the live session.
			c.takeDown(downReason)
		}
		if g != nil {
			c.google = g
		}
		c.lastError = downReason
		c.maybePersist()
		c.publishState()
	})
}

// --- source management (on the camera goroutine) -------------------------

func (c *Camera) maybePersist() {
	if c.wantsPersistent() && c.cfg.Path != "" && c.phase == idle && c.retryTimer == nil {
		c.phase = starting
		c.attempts = 0
		c.startSource()
		c.publishState()
	}
}

// startSource begins a new generation: a fresh Google session and upstream.
func (c *Camera) startSource() {
	c.stopSource()
	c.gen++
	gen := c.gen
	ctx, cancel := context.WithCancel(context.Background())
	c.srcCtx, c.cancelSrc = ctx, cancel
	g := c.google
	device := c.cfg.Device
	retire := c.retiring
	c.retiring = nil
	go c.runSource(ctx, gen, g, device, retire)
}

// stopSource ends the current generation's upstream and stops its Google
// session in the background (best effort): an unread session only costs.
func (c *Camera) stopSource() {
	if c.cancelSrc != nil {
		c.cancelSrc()
		c.srcCtx, c.cancelSrc = nil, nil
		// Its reports (a cancelled Generate, say) are stale from now on.
		c.gen++
	}
	c.upstream = nil
	if c.watchdog != nil {
		c.watchdog.Stop()
		c.watchdog = nil
	}
	stopTimer(&c.extendTimer)
	if c.session != nil {
		if !c.sessionLost {
			c.retiring = append(c.retiring, *c.session)
		}
		c.session, c.sessionLost = nil, false
	}
}

// stopRetiring stops retired sessions now: no Generate is coming, and
// nobody reads them, so these Stops may use the quota's reserve.
func (c *Camera) stopRetiring() {
	for _, s := range c.retiring {
		c.stopSessionWith(c.google, s, true)
	}
	c.retiring = nil
}

// stopSessionWith stops a session in the background, best effort. A Stop
// waits for the quota as long as its session lives: once the session has
// expired Google would refuse it, and the slot is better spent on a live
// camera. A final Stop (the camera's readers are gone) may use the
// reserve the limiter keeps for extensions and starts; the Stop of a
// session replaced by a regeneration may not. It reads only immutable
// fields, so any goroutine may call it.
func (c *Camera) stopSessionWith(g Google, s nest.RTSPStream, final bool) {
	log := c.log
	if g == nil || !time.Now().Before(s.LocalExpiry()) {
		return
	}
	go func() {
		ctx, cancel := context.WithDeadline(context.Background(), s.LocalExpiry())
		defer cancel()
		if final {
			ctx = nest.WithReserve(ctx)
		}
		if err := g.StopRtspStream(ctx, s); err != nil {
			log.Debug("stopping the Google stream session", "error", err)
		}
	}()
}

// runSource is one generation's goroutine: it owns the upstream connection
// and reports to the camera goroutine, which ignores reports of stale
// generations.
func (c *Camera) runSource(ctx context.Context, gen int, g Google, device string, retire []nest.RTSPStream) {
	report := func(fn func()) {
		c.post(context.Background(), func() {
			if c.gen == gen {
				fn()
			}
		})
	}
	// While the Generate waits for the quota, the camera says so.
	noticed := nest.WithQuotaNotice(ctx, func(w nest.QuotaWait) {
		report(func() { c.onQuotaWait(w) })
	})
	s, err := g.GenerateRtspStream(noticed, device)
	for _, old := range retire {
		c.stopSessionWith(g, old, false)
	}
	if nest.IsNotFound(err) {
		// The device itself is unknown (an expired session would fail on
		// Extend, never here): it was unshared.
		report(func() { c.deviceGone(err) })
		return
	}
	if nest.IsRefused(err) {
		report(func() { c.onRefused(err) })
		return
	}
	if err != nil {
		report(func() { c.onSourceFailed(fmt.Errorf("generating a stream: %w", err)) })
		return
	}
	posted := c.post(context.Background(), func() {
		if c.gen != gen {
			// Superseded while Google answered: nobody will read it.
			c.stopSessionWith(g, s, true)
			return
		}
		c.onSession(s)
	})
	if !posted {
		c.stopSessionWith(g, s, true) // the camera is gone
		return
	}
	if ctx.Err() != nil {
		return
	}
	up, err := source.Dial(ctx, s.URL, source.Options{TLS: c.opts.UpstreamTLS, Log: c.log})
	if err != nil {
		report(func() { c.onSourceFailed(fmt.Errorf("connecting to the stream: %w", err)) })
		return
	}
	defer up.Close()
	segCh := make(chan *relay.Segment, 1)
	errCh := make(chan error, 1)
	report(func() {
		r, err := c.relayFor(up.Params())
		if err != nil {
			errCh <- err
			return
		}
		segCh <- r.BeginSegment()
	})
	var seg *relay.Segment
	select {
	case seg = <-segCh:
	case err := <-errCh:
		report(func() { c.onSourceFailed(err) })
		return
	case <-ctx.Done():
		return
	}
	if err := up.Play(seg); err != nil {
		report(func() { c.onSourceFailed(err) })
		return
	}
	// Ready means frames flow: wait for the segment's first IDR.
	select {
	case <-seg.FirstFrame():
	case <-time.After(c.opts.StallTimeout):
		report(func() {
			c.onSourceFailed(fmt.Errorf("no picture from Google within %s of connecting", c.opts.StallTimeout))
		})
		return
	case <-ctx.Done():
		return
	}
	report(func() { c.upstream = up; c.onReady(up.Params()) })
	ended := make(chan error, 1)
	go func() { ended <- up.Wait() }()
	select {
	case err := <-ended:
		report(func() { c.onSourceFailed(fmt.Errorf("the upstream ended: %w", err)) })
	case <-ctx.Done():
		// Superseded (a regeneration, unDemand): hang up now, not when
		// Google ends the old session.
		up.Close()
		<-ended
	}
}

// relayFor returns the relay to feed an upstream with params p: the current
// one when it can carry p (readers notice nothing), else a new one.
func (c *Camera) relayFor(p relay.Params) (*relay.Relay, error) {
	if c.relay != nil && !c.relay.Params().Equal(p) {
		// Feeding readers a stream their decoders were not set up for
		// would wedge them: end their sessions so they reconnect.
		c.log.Info("the camera's codec parameters changed; readers reconnect")
		c.closeRelay()
	}
	if c.relay == nil {
		r, err := c.opts.NewRelay(p)
		if err != nil {
			return nil, err
		}
		c.relay = r
	}
	return c.relay, nil
}

func (c *Camera) closeRelay() {
	if c.relay == nil {
		return
	}
	c.relay.Close()
	c.relay = nil
	// The readers' sessions end; their Remove calls find nothing to do.
	// Readers whose SETUP is still held will get the next stream instead.
	pending := map[*rtspserver.Reader]bool{}
	for _, w := range c.waiters {
		pending[w.reader] = w.setup
	}
	for r, playing := range c.readers {
		if pending[r] {
			continue
		}
		if playing {
			c.emit(events.CameraUnread, readerDetails(c.cfg.Path, r))
		}
		delete(c.readers, r)
	}
}

func (c *Camera) onSession(s nest.RTSPStream) {
	c.session = &s
	c.waitingFor = ""
	c.opts.skew.note(c.log, s.ClockSkew)
	c.armExtend()
	c.publishState()
}

// onQuotaWait records that the start waits for Google's quota: the state
// and a start timeout's 503 say until when, and the log says it once per
// wait.
func (c *Camera) onQuotaWait(w nest.QuotaWait) {
	first := c.waitingFor == ""
	c.waitingFor = describeQuotaWait(w)
	if first {
		c.log.Info("the camera's start waits for Google's command quota", "until", w.Until.UTC().Format(time.RFC3339),
			"queued_ahead", w.Ahead, "after_429", w.Penalized)
	}
	c.publishState()
}

func describeQuotaWait(w nest.QuotaWait) string {
	at := w.Until.UTC().Format(time.RFC3339)
	if w.Penalized {
		return "Google's command quota: Google answered 429 (quota exhausted), so no command is sent before " + at
	}
	msg := fmt.Sprintf("Google's command quota: the credential's %d commands per %s are in use", w.PerWindow, w.Window.Round(time.Second))
	if w.Ahead > 0 {
		msg += fmt.Sprintf(", %d queued ahead", w.Ahead)
	}
	return msg + "; next slot about " + at
}

// onRefused fails the camera after Google refused to stream it (a 400 or
// 403 to Generate): asking again will not change the answer, so readers get
// a 503 at once and no Generate is spent until the backoff ends, the row
// changes or a sync runs.
func (c *Camera) onRefused(err error) {
	c.failures++
	wait := c.failedBackoff()
	c.log.Warn("Google refused to stream the camera; not trying again for a while", "error", err, "retry_in", wait)
	reason := fmt.Sprintf("Google refused to stream this camera (%v); tried again in %s, or at once after an edit or a sync", err, wait)
	c.takeDown(reason)
	c.failed, c.lastError = reason, reason
	c.failTimer = time.NewTimer(wait)
	c.publishState()
}

// failedBackoff doubles with each refusal, from RefusedBackoff up to 12
// times it (an hour by default).
func (c *Camera) failedBackoff() time.Duration {
	return min(c.opts.RefusedBackoff<<min(max(c.failures-1, 0), 4), 12*c.opts.RefusedBackoff)
}

// refusal is why the camera cannot be streamed now, "" when it can.
func (c *Camera) refusal() string {
	if c.cfg.Unsupported != "" {
		return c.cfg.Unsupported
	}
	return c.failed
}

func (c *Camera) onReady(p relay.Params) {
	c.lastError = ""
	c.attempts = 0
	stopTimer(&c.startTimer)
	stopTimer(&c.retryTimer)
	c.phase = ready
	if c.watchdog == nil {
		c.watchdog = time.NewTicker(max(c.opts.StallTimeout/4, 100*time.Millisecond))
	}
	c.emit(events.CameraReady, map[string]any{"path": c.cfg.Path, "source_type": "rtspsSource",
		"source_id": "", "tracks": p.Tracks()})
	c.answerWaiters(describeResult{relay: c.relay})
	// Clients answered here have only DESCRIBEd; their SETUP is on its way.
	// A close-after shorter than that round trip would stop the stream under
	// them and cost a second Generate.
	c.armCloseIfUnusedAtLeast(describeGrace)
	c.publishState()
}

// describeGrace is the least time a just-started stream waits for the
// SETUP of the clients that asked for it.
const describeGrace = 5 * time.Second

// onSourceFailed handles every failure of a generation: before ready it is
// retried with backoff while someone waits; after ready it regenerates at
// once while the readers stay connected.
func (c *Camera) onSourceFailed(err error) {
	c.lastError = err.Error()
	if !nest.IsRateLimited(err) {
		c.waitingFor = ""
	}
	c.log.Warn("camera stream failed", "error", err)
	wasReady := c.phase == ready
	c.stopSource()
	if wasReady {
		c.emit(events.CameraNotReady, map[string]any{"path": c.cfg.Path, "source_type": "rtspsSource",
			"source_id": "", "reason": err.Error()})
	}
	if len(c.readers) == 0 && len(c.waiters) == 0 && !c.wantsPersistent() {
		c.goIdle()
		return
	}
	c.phase = starting
	if wasReady {
		c.attempts = 0
		c.startSource()
	} else {
		c.attempts++
		c.retryTimer = time.NewTimer(backoff(c.attempts))
	}
	c.publishState()
}

// deviceGone takes the camera down for good when Google no longer knows its
// device, and asks for a sync to record it.
func (c *Camera) deviceGone(err error) {
	c.gone = "Google no longer shares this camera (" + err.Error() + "); share it again in Partner Connections"
	c.lastError = c.gone
	c.log.Warn("camera gone from Google", "error", err)
	c.takeDown(c.gone)
	if c.opts.DeviceGone != nil {
		c.opts.DeviceGone(c.cfg.ID)
	}
}

func (c *Camera) wantsPersistent() bool {
	return c.cfg.Enabled && c.cfg.Persistent && c.credDown == "" && c.gone == "" && c.refusal() == ""
}

// backoff grows from 1 s to 30 s; the Google client's own limiter already
// spaces commands, this keeps a broken camera from spinning.
func backoff(attempt int) time.Duration {
	d := time.Second << min(attempt-1, 5)
	return min(d, 30*time.Second)
}

// startTimeoutReason is the 503 reason for a reader whose wait ended.
func (c *Camera) startTimeoutReason() string {
	reason := fmt.Sprintf("the camera did not start within %s", c.opts.StartTimeout)
	if c.waitingFor != "" {
		reason += ": waiting for " + c.waitingFor
	} else if c.lastError != "" {
		reason += ": " + c.lastError
	}
	return reason
}

func (c *Camera) onStartTimeout() {
	reason := c.startTimeoutReason()
	c.answerWaiters(describeResult{err: &rtspserver.StatusError{Status: base.StatusServiceUnavailable, Reason: reason}})
	if c.wantsPersistent() || len(c.readers) > 0 {
		return // keep trying for those who stay
	}
	if c.waitingFor != "" {
		// The start holds its place in the quota queue: a reader that
		// retries (Frigate does, every few seconds) joins it rather than
		// making a new demand at the back of the queue. If nobody comes
		// back, the stream closes after the close delay once it is ready.
		return
	}
	c.endDemand()
	c.stopSource()
	c.goIdle()
}

func (c *Camera) armCloseIfUnused() { c.armCloseIfUnusedAtLeast(0) }

func (c *Camera) armCloseIfUnusedAtLeast(least time.Duration) {
	if c.phase != ready || len(c.readers) > 0 || c.wantsPersistent() || c.closeTimer != nil {
		return
	}
	c.closeTimer = time.NewTimer(max(c.opts.CloseAfter, least))
}

func (c *Camera) onCloseAfter() {
	if len(c.readers) > 0 || c.wantsPersistent() {
		return
	}
	c.endDemand() // before notReady, as MediaMTX orders them
	c.takeDown("not needed by anyone")
}

// takeDown stops everything and ends the readers' sessions.
func (c *Camera) takeDown(reason string) {
	wasReady := c.phase == ready
	c.stopSource()
	c.answerWaiters(describeResult{err: &rtspserver.StatusError{Status: base.StatusServiceUnavailable, Reason: reason}})
	c.closeRelay()
	if wasReady {
		c.emit(events.CameraNotReady, map[string]any{"path": c.cfg.Path, "source_type": "rtspsSource",
			"source_id": "", "reason": reason})
	}
	c.goIdle()
}

func (c *Camera) goIdle() {
	c.stopRetiring()
	c.endDemand()
	c.waitingFor = ""
	stopTimer(&c.startTimer)
	stopTimer(&c.closeTimer)
	stopTimer(&c.extendTimer)
	stopTimer(&c.retryTimer)
	if c.relay != nil && len(c.readers) == 0 {
		c.relay.Close()
		c.relay = nil
	}
	c.phase = idle
	c.publishState()
}

// shutdown ends the camera, for a daemon stop or its deletion: its live
// Google session is stopped first (a Stop may use the quota's reserve,
// within the manager's deadline), then the readers get unread, the demand
// its unDemand and a ready stream its notReady, and at a daemon stop the
// retained state says stopped, so that nothing keeps believing the camera
// streams. (A deleted camera's state is removed by the manager.)
func (c *Camera) shutdown() {
	var ctx context.Context
	if c.opts.shutdown != nil {
		ctx = c.opts.shutdown()
	}
	if ctx != nil {
		c.stopping = true
	} else {
		ctx = context.Background()
	}
	c.stopSource()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.StopTimeout)
		defer cancel()
	}
	var wg sync.WaitGroup
	for _, s := range c.retiring {
		if c.google == nil || !time.Now().Before(s.LocalExpiry()) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithDeadline(nest.WithReserve(ctx), s.LocalExpiry())
			defer cancel()
			if err := c.google.StopRtspStream(sctx, s); err != nil {
				c.log.Warn("could not stop the Google stream session at shutdown; it expires by itself",
					"expires_at", s.ExpiresAt.UTC().Format(time.RFC3339), "error", err)
			}
		}()
	}
	c.retiring = nil

	const reason = "the server is shutting down"
	for r, playing := range c.readers {
		if playing {
			c.emit(events.CameraUnread, readerDetails(c.cfg.Path, r))
		}
	}
	clear(c.readers)
	c.endDemand() // before notReady, as MediaMTX orders them
	if c.phase == ready {
		c.emit(events.CameraNotReady, map[string]any{"path": c.cfg.Path, "source_type": "rtspsSource",
			"source_id": "", "reason": reason})
	}
	c.answerWaiters(describeResult{err: &rtspserver.StatusError{Status: base.StatusServiceUnavailable, Reason: reason}})
	if c.relay != nil {
		c.relay.Close()
		c.relay = nil
	}
	for _, t := range []**time.Timer{&c.startTimer, &c.closeTimer, &c.extendTimer, &c.retryTimer, &c.failTimer} {
		stopTimer(t)
	}
	c.phase = idle
	c.waitingFor = ""
	if c.stopping {
		c.publishState()
	}
	wg.Wait()
}

// checkStall regenerates a stream that stopped sending, or whose Google
// session is past its expiry (an extension that never came back): either
// way the readers would otherwise wait on a dead stream.
func (c *Camera) checkStall() {
	if c.phase != ready || c.upstream == nil {
		return
	}
	if quiet := time.Since(c.upstream.LastPacket()); quiet > c.opts.StallTimeout {
		c.onSourceFailed(fmt.Errorf("no media from Google for %s", quiet.Round(time.Second)))
		return
	}
	if c.session != nil && time.Now().After(c.session.LocalExpiry()) {
		c.onSourceFailed(fmt.Errorf("the Google session expired at %s without an extension",
			c.session.ExpiresAt.UTC().Format(time.RFC3339)))
	}
}

// --- extension ------------------------------------------------------------

// armExtend schedules the next extension at ExtendAt of the session's
// remaining lifetime, re-armed from every new expiresAt.
func (c *Camera) armExtend() {
	stopTimer(&c.extendTimer)
	if c.session == nil {
		return
	}
	// On the monotonic clock, from the lifetime Google's own clock gave:
	// a host clock minutes off must neither extend late nor never.
	left := time.Until(c.session.LocalExpiry())
	c.extendTimer = time.NewTimer(max(time.Duration(float64(left)*c.opts.ExtendAt), 0))
}

func (c *Camera) extend() {
	if c.session == nil {
		return
	}
	s, g, gen := *c.session, c.google, c.gen
	// The extension belongs to this generation: one still queued behind
	// the quota when the generation ends (a regeneration, unDemand) is
	// dropped rather than spent on a session nobody reads.
	genCtx := c.srcCtx
	if genCtx == nil {
		genCtx = context.Background()
	}
	go func() {
		ctx, cancel := context.WithTimeout(genCtx, 30*time.Second)
		defer cancel()
		next, err := g.ExtendRtspStream(ctx, s)
		posted := c.post(context.Background(), func() {
			if c.gen != gen || c.session == nil {
				// Retired while Google answered: the retired copy holds the
				// old extension token, which Google now refuses; only the
				// new one can stop the session.
				if err == nil {
					c.stopSessionWith(g, next, false)
				}
				return
			}
			if err != nil {
				c.emit(events.CameraFailedExtension, map[string]any{"name": c.cfg.Name, "error": err.Error()})
				c.sessionLost = nest.IsSessionLost(err)
				c.onSourceFailed(fmt.Errorf("extending the stream: %w", err))
				return
			}
			// The live connection keeps running; the new URL (new auth
			// token) is what a reconnect would use.
			c.session = &next
			c.opts.skew.note(c.log, next.ClockSkew)
			c.emit(events.CameraExtended, map[string]any{"name": c.cfg.Name,
				"expires_at": next.ExpiresAt.UTC().Format(time.RFC3339)})
			c.armExtend()
			c.publishState()
		})
		if !posted && err == nil {
			c.stopSessionWith(g, next, true) // the camera is gone
		}
	}()
}

// --- events and state -----------------------------------------------------

func (c *Camera) emit(name string, details map[string]any) {
	c.opts.Bus.Emit(events.Event{Domain: events.DomainCamera, Entity: events.ID(c.cfg.ID), Event: name, Details: details})
}

// State is the retained per-camera state (mqtt-api.md §4).
type State struct {
	Status    string     `json:"status"`
	Ready     bool       `json:"ready"`
	Readers   int        `json:"readers"`
	Path      *string    `json:"path"`
	ExpiresAt *time.Time `json:"expires_at"`
	LastError *string    `json:"last_error"`
	// WaitingFor says what a start waits for (Google's quota, with the
	// time of the next slot); null when it waits for nothing.
	WaitingFor *string `json:"waiting_for"`
}

func (c *Camera) publishState() {
	st := State{Readers: len(c.readers), Ready: c.phase == ready}
	if c.cfg.Path != "" {
		p := c.cfg.Path
		st.Path = &p
	}
	if c.session != nil {
		t := c.session.ExpiresAt.UTC()
		st.ExpiresAt = &t
	}
	if c.lastError != "" {
		e := c.lastError
		st.LastError = &e
	}
	if c.waitingFor != "" {
		w := c.waitingFor
		st.WaitingFor = &w
	}
	switch {
	case c.stopping:
		st.Status = "stopped"
	case c.cfg.Path == "":
		st.Status = "unconfigured"
	case !c.cfg.Enabled:
		st.Status = "disabled"
	case c.credDown != "":
		st.Status = "unauthenticated"
	case c.refusal() != "" || c.gone != "":
		st.Status = "failed"
		if st.LastError == nil {
			e := c.refusal()
			st.LastError = &e
		}
	case c.phase == ready:
		st.Status = "ready"
	case c.phase == starting:
		st.Status = "starting"
	default:
		st.Status = "idle"
	}
	c.opts.Bus.SetState(events.DomainCamera, c.cfg.ID, st)
}
