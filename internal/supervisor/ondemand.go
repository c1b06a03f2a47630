package supervisor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/nestmtx/nestmtx/internal/backoff"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
)

// The on-demand lifecycle: when a camera starts, waits, closes, fails and
// ends, and the inputs from the manager that change it.

// Update applies a changed camera configuration.
func (c *Camera) Update(cfg Spec) { c.post(context.Background(), updateIn{cfg: cfg}) }

// SetCredential swaps the SDM client (after re-authentication) and clears
// or sets the reason the credential is unusable.
func (c *Camera) SetCredential(cred Credential) {
	c.post(context.Background(), credentialIn{google: cred.Google, down: cred.Down})
}

// Restart replaces the camera's Google session with a new one (Home
// Assistant's "restart stream" button): a streaming camera connects the new
// session before it drops the old, so its readers notice nothing; one that
// is starting starts over; an idle one has nothing to restart.
func (c *Camera) Restart() { c.post(context.Background(), restartIn{}) }

func (c *Camera) onRestart() {
	switch c.phase {
	case ready:
		c.log.Info("restarting the camera's stream on request")
		c.counters.pendingSwap = "restart requested"
		c.handOver()
	case starting:
		c.log.Info("restarting the camera's start on request")
		c.attempts = 0
		stopTimer(&c.retryTimer)
		c.startSource()
	}
	c.publishState()
}

func (c *Camera) onUpdate(cfg Spec) {
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
	case cfg.Audio != old.Audio && (c.relay != nil || c.phase != idle):
		// The stream's tracks change: its readers must DESCRIBE again.
		c.takeDown("the camera's audio setting changed")
	case cfg.Persistent != old.Persistent:
		c.armCloseIfUnused()
	}
	c.startIfPersistent()
	c.publishState()
}

func (c *Camera) onCredential(g SessionAPI, downReason string) {
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
	c.startIfPersistent()
	c.publishState()
}

func (c *Camera) startIfPersistent() {
	if c.wantsPersistent() && c.cfg.Path != "" && c.phase == idle && c.retryTimer == nil {
		c.phase = starting
		c.attempts = 0
		c.startSource()
		c.publishState()
	}
}

func (c *Camera) wantsPersistent() bool {
	return c.cfg.Enabled && c.cfg.Persistent && c.credDown == "" && c.gone == "" && c.refusal() == ""
}

// endDemand emits the unDemand that pairs the last demand, once.
func (c *Camera) endDemand() {
	if c.demanded {
		c.demanded = false
		c.emit(events.CameraUnDemand, map[string]any{"path": c.cfg.Path})
	}
}

// startBackoff grows from 1 s to 30 s; the Google client's own limiter
// already spaces commands, this keeps a broken camera from spinning.
var startBackoff = backoff.Backoff{First: time.Second, Max: 30 * time.Second}

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
	c.closeTimer = c.clock.NewTimer(max(c.opts.CloseAfter, least))
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
		c.emit(events.CameraNotReady, map[string]any{"path": c.cfg.Path, "source_type": c.sourceType(),
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
	c.failTimer = c.clock.NewTimer(wait)
	c.publishState()
}

func (c *Camera) onFailedBackoffOver() {
	c.log.Info("trying the camera again after Google refused it", "after", c.failedBackoff())
	c.failed = ""
	c.publishState()
	c.startIfPersistent()
}

// failedBackoff doubles with each refusal, from RefusedBackoff up to 12
// times it (an hour by default).
func (c *Camera) failedBackoff() time.Duration {
	return backoff.Backoff{First: c.opts.RefusedBackoff, Max: 12 * c.opts.RefusedBackoff}.Delay(c.failures)
}

// refusal is why the camera cannot be streamed now, "" when it can.
func (c *Camera) refusal() string {
	if c.cfg.Unsupported != "" {
		return c.cfg.Unsupported
	}
	return c.failed
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
		if c.google == nil || !c.clock.Now().Before(s.localExpiry()) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithDeadline(nest.WithReserve(ctx), s.localExpiry())
			defer cancel()
			if err := s.stop(sctx, c.google); err != nil {
				c.log.Warn("could not stop the Google stream session at shutdown; it expires by itself",
					"expires_at", s.expiresAt().UTC().Format(time.RFC3339), "error", err)
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
		c.emit(events.CameraNotReady, map[string]any{"path": c.cfg.Path, "source_type": c.sourceType(),
			"source_id": "", "reason": reason})
	}
	c.answerWaiters(describeResult{err: &rtspserver.StatusError{Status: base.StatusServiceUnavailable, Reason: reason}})
	if c.relay != nil {
		c.relay.Close()
		c.relay = nil
	}
	for _, t := range []*Timer{&c.startTimer, &c.closeTimer, &c.extendTimer, &c.retryTimer, &c.failTimer} {
		stopTimer(t)
	}
	c.phase = idle
	c.waitingFor = ""
	if c.stopping {
		c.publishState()
	}
	wg.Wait()
}
