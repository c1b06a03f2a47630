package relay

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/pion/rtp"
)

// Player is a reader about to play.
type Player struct {
	Session *gortsplib.ServerSession
	// Conn is the reader's connection when the direct path can write to
	// it (TCP through the server's framebatch listener), else nil.
	Conn MediaConn
	// Channels are the interleaved RTP channels of the session's set-up
	// medias, in the order of Session.SetuppedMedias (TCP only).
	Channels []int
	// ReplayGOP sends the cached GOP first: for a reader's first PLAY,
	// not when it resumes after a PAUSE.
	ReplayGOP bool
	Log       *slog.Logger
}

// Playback is a reader's feed. Call Started once the server has answered
// its PLAY (gortsplib's OnResponse), and Stop when it pauses or leaves;
// both are safe to call more than once.
type Playback interface {
	Started()
	Stop()
}

// Play starts feeding a reader that set up Stream(direct) with direct
// true when p qualifies for the direct path: the cached GOP first, then
// the live units, with no gap. It must be called from the session's own
// callback (OnPlay).
func (r *Relay) Play(p Player) (Playback, error) {
	medias := p.Session.SetuppedMedias()
	if p.Session.SetuppedStream() != r.direct {
		return r.playServed(p.Session, p.ReplayGOP), nil
	}
	if p.Conn == nil || len(p.Channels) != len(medias) {
		return nil, fmt.Errorf("relay: the reader set up %d medias but %d interleaved channels are known", len(medias), len(p.Channels))
	}
	return r.playDirect(p, medias), nil
}

func (r *Relay) playDirect(p Player, medias []*description.Media) Playback {
	log := p.Log
	if log == nil {
		log = slog.Default()
	}
	d := &directReader{ss: p.Session, dropped: &r.dropped, sent: &r.sent, conn: p.Conn, log: log,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	d.channels = make([]int, len(r.tracks))
	for i, t := range r.tracks {
		d.channels[i] = -1
		for j, m := range medias {
			if m == t.media {
				d.channels[i] = p.Channels[j]
				d.remap = d.remap || p.Channels[j] != 2*t.index
			}
		}
	}
	return &directPlayback{r: r, d: d, replay: p.ReplayGOP}
}

type directPlayback struct {
	r      *Relay
	d      *directReader
	replay bool
	once   sync.Once
}

// Started joins the reader: sender reports, the cached GOP and from then
// on the live units are queued under the relay's lock, so none is missed
// or repeated; its writer waits until the PLAY response is on the wire.
func (pb *directPlayback) Started() {
	pb.once.Do(func() {
		r, d := pb.r, pb.d
		d.gate = d.conn.AfterResponse()
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			d.stop()
			return
		}
		var join []unit
		for _, t := range r.tracks {
			if t.tl.sentAny {
				join = append(join, r.senderReport(t))
			}
		}
		if pb.replay {
			switch {
			case !r.gopValid || r.join == JoinKeyframe:
				// Nothing cached to start from (or not wanted): the reader
				// starts at the camera's next IDR, not in the middle of a
				// GOP its decoder cannot use.
				d.waitKey = d.channels[0] >= 0 // an audio-only reader has no picture to wait for
			case r.join == JoinPaced:
				// The sender reports first (due at once), then the GOP,
				// each only for the tracks the reader set up.
				var units []unit
				for _, u := range append(join, r.gop...) {
					if d.channels[u.track] >= 0 {
						units = append(units, u)
					}
				}
				d.pace = newPacer(units, r.tracks[0].tl.ntp())
				join = nil
			default:
				join = append(join, r.gop...)
			}
		}
		d.mu.Lock()
		// The join's units are not counted against maxQueuedBytes: they
		// are the cached GOP's, which the relay holds anyway.
		for _, u := range join {
			if d.channels[u.track] >= 0 {
				d.queue = append(d.queue, u)
			}
		}
		d.running = true
		d.writers.Add(1)
		d.mu.Unlock()
		d.from = r.nextSerial // units held for the next batch are in the GOP already
		r.readers[d] = struct{}{}
		r.mu.Unlock()
		go func() {
			defer d.writers.Done()
			d.run()
		}()
	})
}

// Stop ends the feed and waits for the writer to return, so that nothing
// is written after the response to the PAUSE (or TEARDOWN) that stopped
// it. The wait is bounded by the write deadline, or ends at once if the
// connection is closed.
func (pb *directPlayback) Stop() {
	pb.once.Do(func() {}) // a Stop before Started never starts; after, Started has finished
	pb.d.stop()
	pb.d.writers.Wait()
}

// playServed is the gortsplib path: the GOP is queued to the session now,
// and the relay holds gortsplib's live units until Started (see
// servedJoining in Relay).
func (r *Relay) playServed(ss *gortsplib.ServerSession, replay bool) Playback {
	// A reader may have set up only some tracks; writing another panics.
	setup := map[*description.Media]bool{}
	for _, m := range ss.SetuppedMedias() {
		setup[m] = true
	}
	r.mu.Lock()
	r.viaServer++
	if !replay {
		r.mu.Unlock()
		pb := &servedPlayback{r: r}
		pb.released.Do(func() {}) // not joining: nothing to release
		return pb
	}
	if r.gopValid && r.servedGOPFits(setup) {
		var pkt rtp.Packet
	replay:
		for _, u := range r.gop {
			m := r.tracks[u.track].media
			if !setup[m] {
				continue // the GOP holds no sender reports
			}
			for b := u.data; len(b) > 0; {
				var p []byte
				_, p, b = splitFrame(b)
				if err := pkt.Unmarshal(p); err != nil {
					break replay
				}
				if err := ss.WritePacketRTP(m, &pkt); err != nil {
					break replay
				}
			}
		}
	}
	r.servedJoining++
	r.mu.Unlock()
	pb := &servedPlayback{r: r}
	// If the server never confirms the PLAY, the others wait no longer.
	pb.hold = time.AfterFunc(replayHoldLimit, pb.release)
	return pb
}

// servedGOPFits tells whether the cached GOP's packets for the medias a
// reader set up fit its gortsplib write queue with room to spare. A longer
// GOP is not replayed: the reader starts with the live packets and its
// decoder with the next IDR, as with a relay that caches nothing.
func (r *Relay) servedGOPFits(setup map[*description.Media]bool) bool {
	n := 0
	for _, u := range r.gop {
		if setup[r.tracks[u.track].media] {
			n += int(u.packets)
		}
	}
	return n <= servedReplayMax
}

type servedPlayback struct {
	r        *Relay
	hold     *time.Timer
	released sync.Once
	stopped  sync.Once
}

// release ends the reader's join; the last joiner's release sends what
// was held, in order.
func (pb *servedPlayback) release() {
	pb.released.Do(func() {
		r := pb.r
		r.mu.Lock()
		defer r.mu.Unlock()
		r.servedJoining--
		if r.servedJoining > 0 {
			return
		}
		r.releaseServedHeld()
	})
}

// releaseServedHeld writes the units held for joiners, in order; r.mu is
// held.
func (r *Relay) releaseServedHeld() {
	for _, u := range r.servedHeld {
		if !r.closed {
			r.writeServed(u)
		}
	}
	clear(r.servedHeld)
	r.servedHeld = r.servedHeld[:0]
	r.servedHeldPackets = 0
}

func (pb *servedPlayback) Started() {
	if pb.hold != nil {
		pb.hold.Stop()
	}
	pb.release()
}

func (pb *servedPlayback) Stop() {
	pb.Started()
	pb.stopped.Do(func() {
		pb.r.mu.Lock()
		pb.r.viaServer--
		pb.r.mu.Unlock()
	})
}

// writeServed hands a unit's packets to gortsplib, which copies and sends
// them to its readers with its own RTCP sender reports.
func (r *Relay) writeServed(u unit) {
	t := r.tracks[u.track]
	var pkt rtp.Packet
	for b := u.data; len(b) > 0; {
		var p []byte
		_, p, b = splitFrame(b)
		if pkt.Unmarshal(p) == nil {
			r.served.WritePacketRTPWithNTP(t.media, &pkt, u.at) //nolint:errcheck // per-reader errors go to OnStreamWriteError
		}
	}
}
