package supervisor

import (
	"context"
	"errors"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
)

// The RTSP side of a camera: it implements rtspserver.Path, and counts its
// readers.

var errCameraGone = &rtspserver.StatusError{Status: base.StatusNotFound, Reason: "no such camera"}

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
func (c *Camera) await(ctx context.Context, r *rtspserver.Reader, setup bool) (*relay.Relay, error) {
	reply := make(chan describeResult, 1)
	if !c.post(ctx, requestIn{reader: r, setup: setup, reply: reply}) {
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
		why := make(chan string, 1)
		if !c.post(context.Background(), cancelWaitIn{reply: reply, why: why}) {
			return nil, ctx.Err()
		}
		select {
		case reason := <-why:
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, &rtspserver.StatusError{Status: base.StatusServiceUnavailable, Reason: reason}
			}
		case <-c.done:
		}
		return nil, ctx.Err()
	case <-c.done:
		return nil, errCameraGone
	}
}

func (c *Camera) onRequest(r *rtspserver.Reader, setup bool, reply chan describeResult) {
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
	if setup {
		// From SETUP on a reader counts (as in MediaMTX): it holds the
		// source open, and cancels a pending close.
		c.readers[r] = false
		stopTimer(&c.closeTimer)
	}
	if c.phase == ready {
		reply <- describeResult{relay: c.relay}
		c.publishState()
		return
	}
	c.waiters = append(c.waiters, waiter{reply: reply, reader: r, setup: setup})
	if c.phase == idle {
		c.emit(events.CameraDemand, map[string]any{"path": c.cfg.Path, "reader_type": r.Type,
			"reader_id": r.ID, "query": r.Query})
		c.demanded = true
		c.phase = starting
		c.attempts = 0
		c.startTimer = c.clock.NewTimer(c.opts.StartTimeout)
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

// Play implements rtspserver.Path.
func (c *Camera) Play(r *rtspserver.Reader) (relay.Playback, error) {
	reply := make(chan *relay.Relay, 1)
	if !c.post(context.Background(), playIn{reader: r, reply: reply}) {
		return nil, errCameraGone
	}
	var rel *relay.Relay
	select {
	case rel = <-reply:
	case <-c.done:
	}
	if rel == nil {
		return nil, errCameraGone
	}
	// The replay runs here, on the reader's session goroutine, as gortsplib
	// requires; the camera goroutine is not held up by it.
	return rel.Play(r.Player(c.log))
}

func (c *Camera) onPlay(r *rtspserver.Reader) *relay.Relay {
	if _, known := c.readers[r]; !known || c.relay == nil {
		return nil
	}
	if !c.readers[r] {
		c.readers[r] = true
		c.emitCounted(events.CameraRead, readerDetails(c.cfg.Path, r))
		c.publishState()
	}
	return c.relay
}

// Pause implements rtspserver.Path.
func (c *Camera) Pause(r *rtspserver.Reader) { c.post(context.Background(), pauseIn{reader: r}) }

func (c *Camera) onPause(r *rtspserver.Reader) {
	if c.readers[r] {
		c.readers[r] = false
		c.emit(events.CameraUnread, readerDetails(c.cfg.Path, r))
		c.publishState()
	}
}

// Remove implements rtspserver.Path.
func (c *Camera) Remove(r *rtspserver.Reader) { c.post(context.Background(), removeIn{reader: r}) }

func (c *Camera) onRemove(r *rtspserver.Reader) {
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
}

func readerDetails(path string, r *rtspserver.Reader) map[string]any {
	return map[string]any{"path": path, "reader_type": r.Type, "reader_id": r.ID, "remote_addr": r.RemoteAddr,
		"query": r.Query}
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
