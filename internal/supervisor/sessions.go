package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/source"
)

// Google's side of a camera: a generation generates a session, runs the
// upstream behind the source contract, and is extended, retired and
// stopped here. Reports come back as inputs carrying their generation.

// startSource begins a new generation: a fresh Google session and upstream.
func (c *Camera) startSource() {
	c.stopSource()
	c.gen++
	ctx, cancel := context.WithCancel(context.Background())
	c.srcCtx, c.cancelSrc = ctx, cancel
	retire := c.retiring
	c.retiring = nil
	go c.runSource(ctx, c.gen, c.google, c.cfg, retire)
}

// handover is a generation that still feeds the readers while the next one
// connects: make before break.
type handover struct {
	cancel  context.CancelFunc
	session *session // nil if Google said it is gone
}

// handOver replaces a WebRTC session whose extension Google refused (as
// battery doorbells refuse every one) while it still streams: the
// replacement is generated and connected while the old upstream keeps
// feeding the relay, and the old one is ended once the new one has its
// first picture (onConnected). The readers see one stream, without a gap
// or a notReady.
func (c *Camera) handOver() {
	c.endHandover()
	h := &handover{cancel: c.cancelSrc}
	if c.session != nil && !c.sessionLost {
		s := *c.session
		h.session = &s
	}
	c.cancelSrc, c.srcCtx = nil, nil
	c.session, c.sessionLost = nil, false
	c.startSource()
	c.handing = h
}

// endHandover ends the generation being handed over, if any: its
// replacement has connected, or failed.
func (c *Camera) endHandover() {
	h := c.handing
	if h == nil {
		return
	}
	c.handing = nil
	h.cancel()
	if h.session != nil {
		c.stopSessionWith(c.google, *h.session, false)
	}
}

// stopSource ends the current generation's upstream; its session is kept
// to be stopped after the next Generate (or by stopRetiring).
func (c *Camera) stopSource() {
	c.endHandover()
	if c.cancelSrc != nil {
		c.cancelSrc()
		c.srcCtx, c.cancelSrc = nil, nil
		// Its reports (a cancelled Generate, say) are stale from now on.
		c.gen++
	}
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
func (c *Camera) stopSessionWith(g SessionAPI, s session, final bool) {
	log := c.log
	if g == nil || !c.clock.Now().Before(s.localExpiry()) {
		return
	}
	go func() {
		ctx, cancel := context.WithDeadline(context.Background(), s.localExpiry())
		defer cancel()
		if final {
			ctx = nest.WithReserve(ctx)
		}
		if err := s.stop(ctx, g); err != nil {
			log.Debug("stopping the Google stream session", "error", err)
		}
	}()
}

// runSource is one generation's goroutine: it generates the session and
// runs the upstream, reporting to the camera goroutine, which ignores
// reports of stale generations.
func (c *Camera) runSource(ctx context.Context, gen int, g SessionAPI, cfg Spec, retire []session) {
	report := func(in input) { c.post(context.Background(), in) }
	// While the Generate waits for the quota, the camera says so.
	noticed := func(ctx context.Context) context.Context {
		return nest.WithQuotaNotice(ctx, func(w nest.QuotaWait) { report(quotaWaitIn{gen: gen, wait: w}) })
	}
	// generated hands a new session to the camera, once the sessions it
	// replaces may go (the quota served the replacement first).
	generated := func(s session, err error) bool {
		for _, old := range retire {
			c.stopSessionWith(g, old, false)
		}
		retire = nil
		if err != nil {
			report(generateFailedIn{gen: gen, err: err})
			return false
		}
		if !c.post(context.Background(), sessionIn{gen: gen, session: s, google: g}) {
			c.stopSessionWith(g, s, true) // the camera is gone
			return false
		}
		return ctx.Err() == nil
	}
	params := source.RunParams{StallTimeout: c.opts.StallTimeout, Audio: cfg.Audio}
	runner := c.opts.Runner
	failedGenerate := false
	if cfg.WebRTC {
		// The source makes the offer; Generate trades it for the answer.
		runner = c.opts.WebRTCRunner
		params.Negotiate = func(nctx context.Context, offer string) (string, error) {
			s, err := g.GenerateWebRtcStream(noticed(nctx), cfg.Device, offer)
			if !generated(rtcSession(s), err) {
				failedGenerate = err != nil
				if err == nil {
					err = errSuperseded
				}
				return "", err
			}
			return s.AnswerSDP, nil
		}
	} else {
		s, err := g.GenerateRtspStream(noticed(ctx), cfg.Device)
		if !generated(rtspSession(s), err) {
			return
		}
		params.URL = s.URL
	}
	err := runner.Run(ctx, params, &sourceParent{c: c, gen: gen})
	for _, old := range retire { // the run ended before its Generate
		c.stopSessionWith(g, old, false)
	}
	if failedGenerate || ctx.Err() != nil {
		return // reported by generated, or superseded
	}
	if err == nil {
		err = errors.New("the upstream ended")
	}
	report(sourceEndedIn{gen: gen, err: err})
}

// sourceType names the source in events, as MediaMTX names its sources.
func (c *Camera) sourceType() string {
	if c.cfg.WebRTC {
		return "webrtcSource"
	}
	return "rtspsSource"
}

// sourceParent is how a generation's source reports to its camera.
type sourceParent struct {
	c   *Camera
	gen int
}

// Connected implements source.Parent.
func (p *sourceParent) Connected(ctx context.Context, params relay.Params) (*relay.Segment, error) {
	reply := make(chan segmentResult, 1)
	if !p.c.post(ctx, connectedIn{gen: p.gen, params: params, reply: reply}) {
		return nil, errCameraGone
	}
	select {
	case res := <-reply:
		return res.seg, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.c.done:
		return nil, errCameraGone
	}
}

// Ready implements source.Parent.
func (p *sourceParent) Ready(params relay.Params) {
	p.c.post(context.Background(), readyIn{gen: p.gen, params: params})
}

var errSuperseded = errors.New("the source was superseded")

// onConnected gives a connected upstream the segment of the relay that can
// carry its tracks.
func (c *Camera) onConnected(gen int, p relay.Params) segmentResult {
	if gen != c.gen {
		return segmentResult{err: errSuperseded}
	}
	r, err := c.relayFor(p)
	if err != nil {
		return segmentResult{err: err}
	}
	if r.Stats().Segments > 0 {
		// Another upstream fed these readers before: a swap.
		c.counters.swaps++
		c.counters.lastSwapReason = c.counters.pendingSwap
	}
	c.counters.pendingSwap = ""
	seg := r.BeginSegment()
	// The new segment has revoked the old upstream's: it may go.
	c.endHandover()
	return segmentResult{seg: seg}
}

func (c *Camera) onSession(m sessionIn) {
	if m.gen != c.gen {
		// Superseded while Google answered: nobody will read it.
		c.stopSessionWith(m.google, m.session, true)
		return
	}
	s := m.session
	c.session = &s
	c.waitingFor = ""
	c.opts.skew.note(c.log, s.clockSkew())
	c.armExtend()
	c.publishState()
}

func (c *Camera) onGenerateFailed(err error) {
	switch {
	case nest.IsNotFound(err):
		// The device itself is unknown (an expired session would fail on
		// Extend, never here): it was unshared.
		c.deviceGone(err)
	case nest.IsRefused(err):
		c.onRefused(err)
	default:
		c.onSourceFailed(fmt.Errorf("generating a stream: %w", err))
	}
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

func (c *Camera) onReady(p relay.Params) {
	handedOver := c.phase == ready // a replacement (handOver): nothing changed for anyone
	c.lastError = ""
	c.attempts = 0
	stopTimer(&c.startTimer)
	stopTimer(&c.retryTimer)
	c.phase = ready
	if c.watchdog == nil {
		c.watchdog = c.clock.NewTicker(max(c.opts.StallTimeout/4, 100*time.Millisecond))
	}
	if !handedOver {
		c.emit(events.CameraReady, map[string]any{"path": c.cfg.Path, "source_type": c.sourceType(),
			"source_id": "", "tracks": p.Tracks()})
	}
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
	c.counters.failures++
	c.counters.pendingSwap = err.Error()
	if !nest.IsRateLimited(err) {
		c.waitingFor = ""
	}
	c.log.Warn("camera stream failed", "error", err)
	wasReady := c.phase == ready
	c.stopSource()
	if wasReady {
		c.emit(events.CameraNotReady, map[string]any{"path": c.cfg.Path, "source_type": c.sourceType(),
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
		c.retryTimer = c.clock.NewTimer(startBackoff.Delay(c.attempts))
	}
	c.publishState()
}

// checkExpiry regenerates a stream whose Google session is past its expiry
// (an extension that never came back): the readers would otherwise wait on
// a dead stream. (The source itself notices a stream that stops sending.)
func (c *Camera) checkExpiry() {
	if c.phase != ready || c.session == nil {
		return
	}
	if c.clock.Now().After(c.session.localExpiry()) {
		c.onSourceFailed(fmt.Errorf("the Google session expired at %s without an extension",
			c.session.expiresAt().UTC().Format(time.RFC3339)))
	}
}

// armExtend schedules the next extension at ExtendAt of the session's
// remaining lifetime, re-armed from every new expiresAt.
func (c *Camera) armExtend() {
	stopTimer(&c.extendTimer)
	if c.session == nil {
		return
	}
	// On the monotonic clock, from the lifetime Google's own clock gave:
	// a host clock minutes off must neither extend late nor never.
	left := c.session.localExpiry().Sub(c.clock.Now())
	c.extendTimer = c.clock.NewTimer(max(time.Duration(float64(left)*c.opts.ExtendAt), 0))
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
		next, err := s.extend(ctx, g)
		if !c.post(context.Background(), extendedIn{gen: gen, google: g, next: next, err: err}) && err == nil {
			c.stopSessionWith(g, next, true) // the camera is gone
		}
	}()
}

func (c *Camera) onExtended(m extendedIn) {
	if m.gen != c.gen || c.session == nil {
		// Retired while Google answered: the retired copy holds the old
		// extension token, which Google now refuses; only the new one can
		// stop the session.
		if m.err == nil {
			c.stopSessionWith(m.google, m.next, false)
		}
		return
	}
	if m.err != nil {
		c.emit(events.CameraFailedExtension, map[string]any{"name": c.cfg.Name, "path": c.cfg.Path, "error": m.err.Error()})
		c.sessionLost = nest.IsSessionLost(m.err)
		if c.cfg.WebRTC && nest.IsRefused(m.err) && c.phase == ready {
			// A battery doorbell: the session streams on until it expires,
			// time enough to connect its replacement first.
			c.log.Info("Google refused to extend the WebRTC session; replacing it before it expires",
				"expires_at", expiryOf(c.session).UTC().Format(time.RFC3339))
			c.counters.pendingSwap = "Google refused the extension (" + m.err.Error() + "); replaced before expiry"
			c.handOver()
			c.publishState()
			return
		}
		c.onSourceFailed(fmt.Errorf("extending the stream: %w", m.err))
		return
	}
	// The live connection keeps running; the new URL (new auth token) is
	// what a reconnect would use.
	next := m.next
	c.session = &next
	c.opts.skew.note(c.log, next.clockSkew())
	c.emitCounted(events.CameraExtended, map[string]any{"name": c.cfg.Name, "path": c.cfg.Path,
		"expires_at": next.expiresAt().UTC().Format(time.RFC3339)})
	c.armExtend()
	c.publishState()
}

// expiryOf is a session's expiry, zero for none.
func expiryOf(s *session) time.Time {
	if s == nil {
		return time.Time{}
	}
	return s.expiresAt()
}
