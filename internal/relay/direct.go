package relay

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bluenviron/gortsplib/v4"
)

// The direct path: a reader over TCP gets the relay's units as they are,
// by its own writer goroutine, in one writev(2) per wake-up. Compared with
// gortsplib's writer (a closure, a copy and a write call per packet per
// reader), it costs one wake-up and one system call per reader per video
// frame, and no copy at all for readers on the default channels.

const (
	// maxQueuedBytes is how far a reader may fall behind before it is
	// dropped: a whole cached GOP (the late-join replay) plus a margin.
	maxQueuedBytes = gopMaxBytes + 4<<20
	// writeTimeout drops a reader whose socket accepts nothing for this
	// long, as gortsplib's WriteTimeout does.
	writeTimeout = 10 * time.Second
)

// MediaConn is a reader's connection as the direct path needs it:
// framebatch.Conn, which serialises these writes with gortsplib's.
type MediaConn interface {
	// WriteBuffers writes whole interleaved frames.
	WriteBuffers(net.Buffers) error
	// AfterResponse is closed once the response being prepared is written.
	AfterResponse() <-chan struct{}
	SetWriteDeadline(time.Time) error
}

// directReader is one reader fed by the direct path.
type directReader struct {
	ss *gortsplib.ServerSession
	// dropped counts, on the relay, the readers fail drops.
	dropped *atomic.Uint64
	// sent counts, on the relay, what the direct readers were sent.
	sent *sentCounters
	// channels are the reader's interleaved RTP channels per track, -1 for
	// a track it did not set up; remap is set when they are not the
	// defaults the units carry.
	channels []int
	remap    bool
	from     uint64 // serial of the first live unit it gets

	conn MediaConn
	gate <-chan struct{}

	mu     sync.Mutex
	queue  []unit
	queued int
	dead   bool
	// waitKey drops media until the next IDR: the reader joined with
	// nothing to start from.
	waitKey bool
	// pace, set before the writer starts, paces the reader's start; the
	// writer alone uses it.
	pace *pacer

	wake chan struct{}
	done chan struct{}
	once sync.Once
	log  *slog.Logger

	// The writer goroutine's own scratch, reused from batch to batch.
	bufs    net.Buffers
	scratch []byte
	lastDL  time.Time // when the write deadline was last moved
}

// push queues units for the reader; it reports false once the reader is
// gone, so the relay forgets it.
func (d *directReader) push(units []unit) bool {
	d.mu.Lock()
	if d.dead {
		d.mu.Unlock()
		return false
	}
	added := false
	for _, u := range units {
		if u.serial < d.from || d.channels[u.track] < 0 {
			continue
		}
		if d.waitKey && !u.control {
			if !u.key {
				continue
			}
			d.waitKey = false
		}
		d.queue = append(d.queue, u)
		d.queued += len(u.data)
		added = true
	}
	if d.queued > maxQueuedBytes {
		d.mu.Unlock()
		d.fail(errors.New("reader too slow: its queue exceeded the limit"))
		return false
	}
	d.mu.Unlock()
	if added {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// run writes the queue to the socket until the reader stops.
func (d *directReader) run() {
	select {
	case <-d.gate:
	case <-d.done:
		return
	case <-time.After(replayHoldLimit):
		d.fail(errors.New("the PLAY response was never written"))
		return
	}
	if d.pace != nil && !d.runPaced() {
		return
	}
	var batch []unit
	for {
		select {
		case <-d.wake:
		case <-d.done:
			return
		}
		d.mu.Lock()
		batch, d.queue = d.queue, batch[:0]
		d.queued = 0
		d.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		if err := d.write(batch); err != nil {
			d.fail(err)
			return
		}
		// Let the arena chunks go as soon as nobody needs them.
		clear(batch)
	}
}

// maxWriteBytes splits a large batch (a late joiner's GOP) into writes
// that each get a fresh deadline, so that a slow but moving reader is not
// dropped for needing more than writeTimeout for the whole of it.
const maxWriteBytes = 1 << 20

// write sends a batch, in writes of at most maxWriteBytes, stopping early
// if the reader was stopped meanwhile.
func (d *directReader) write(batch []unit) error {
	for len(batch) > 0 {
		select {
		case <-d.done:
			return nil
		default:
		}
		d.bufs, d.scratch = d.bufs[:0], d.scratch[:0]
		size, n, packets := 0, 0, uint64(0)
		for ; n < len(batch) && (n == 0 || size+len(batch[n].data) <= maxWriteBytes); n++ {
			u := batch[n]
			size += len(u.data)
			packets += uint64(u.packets)
			if d.remap {
				d.scratch = d.appendRemapped(d.scratch, u)
			} else {
				d.bufs = append(d.bufs, u.data)
			}
		}
		if d.remap {
			d.bufs = append(d.bufs, d.scratch)
		}
		batch = batch[n:]
		// The deadline moves once a second or per large write, not per
		// write: a timer update per write is measurable at 50 readers.
		if now := time.Now(); now.Sub(d.lastDL) >= time.Second || len(batch) > 0 {
			d.lastDL = now
			d.conn.SetWriteDeadline(now.Add(writeTimeout)) //nolint:errcheck // applied at the write
		}
		err := d.conn.WriteBuffers(d.bufs)
		clear(d.bufs)
		if err != nil {
			return err
		}
		d.sent.bytes.Add(uint64(size))
		d.sent.packets.Add(packets)
	}
	return nil
}

// appendRemapped copies a unit, rewriting its channels to the reader's.
func (d *directReader) appendRemapped(dst []byte, u unit) []byte {
	start := len(dst)
	dst = append(dst, u.data...)
	for b := dst[start:]; len(b) > 0; {
		var f []byte
		f, _, b = splitFrame(b)
		f[1] = byte(d.channels[u.track]) + f[1]&1 // keep RTP/RTCP
	}
	return dst
}

// fail drops a reader that cannot keep up or whose socket failed: its
// session is closed, as gortsplib does when its own write queue overflows.
func (d *directReader) fail(err error) {
	d.mu.Lock()
	already := d.dead
	d.dead = true
	d.mu.Unlock()
	d.stop()
	if !already {
		d.dropped.Add(1)
		if hungUp(err) {
			// The reader left while a write was under way: an ordinary
			// disconnect, not something an operator needs to see.
			d.log.Debug("RTSP reader disconnected during a write", "reason", err)
		} else {
			d.log.Info("RTSP reader dropped", "reason", err)
		}
		go d.ss.Close()
	}
}

// hungUp tells a write that failed because the reader closed its side
// (or gortsplib closed the session) from a reader the relay gave up on.
func hungUp(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// stop ends the writer; the relay forgets the reader at its next push.
func (d *directReader) stop() {
	d.once.Do(func() {
		d.mu.Lock()
		d.dead = true
		clear(d.queue)
		d.queue = nil
		d.mu.Unlock()
		close(d.done)
	})
}

// Pacing a join. A reader that joins gets the cached GOP, which starts up
// to a GOP's length in the past. Sent at once, a reader that stamps frames
// by their arrival (Frigate's ffmpeg) would give a second of frames nearly
// the same time, and its recorder would log non-monotonic DTS. Paced, each
// unit goes out at the join's start plus its media time since the IDR,
// divided by a catch-up speed: the IDR at once, the frames after it at a
// multiple of their rate, until the reader has caught up with the live
// units, which from then on go out as they come.

const (
	// minPaceSpeed keeps the spacing plausible for a decoder and short
	// enough that a 1 s GOP is caught up within a second.
	minPaceSpeed = 2
	// paceCatchUp bounds the time to catch up with live: a longer GOP is
	// replayed faster.
	paceCatchUp = 2 * time.Second
	// minPaceGap is the least time between two pictures of a paced join:
	// MP4's usual 1/12800 s timebase needs them 78 µs apart at least.
	minPaceGap = 2 * time.Millisecond
)

type pacer struct {
	units []unit // the cached GOP, then whatever was queued meanwhile
	base  time.Time
	speed float64
}

// newPacer paces gop, whose newest unit is live (the track's time now).
func newPacer(gop []unit, live time.Time) *pacer {
	p := &pacer{units: gop, speed: minPaceSpeed}
	for _, u := range gop {
		if !u.control {
			p.base = u.at
			break
		}
	}
	if lag := live.Sub(p.base); lag > 0 {
		p.speed = max(minPaceSpeed, 1+float64(lag)/float64(paceCatchUp))
	}
	return p
}

// due is when u goes out, for a join that started at start.
func (p *pacer) due(start time.Time, u unit) time.Time {
	if u.control || !u.at.After(p.base) {
		return start
	}
	return start.Add(time.Duration(float64(u.at.Sub(p.base)) / p.speed))
}

// runPaced writes the reader's first units paced (see pacer) until it has
// written everything queued and all of it was due: the reader is live. It
// reports false when the reader stopped or failed meanwhile.
func (d *directReader) runPaced() bool {
	p := d.pace
	d.pace = nil
	start := time.Now()
	var lastVideo time.Time
	pending := p.units
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if len(pending) == 0 {
			d.mu.Lock()
			pending, d.queue = d.queue, nil
			d.queued = 0
			d.mu.Unlock()
			if len(pending) == 0 {
				return true // caught up
			}
		}
		now := time.Now()
		n, video := 0, false
		for n < len(pending) && !p.due(start, pending[n]).After(now) {
			if isVideo := pending[n].track == 0 && !pending[n].control; isVideo {
				if video {
					break // one picture per write, even when the writer is late
				}
				video = true
			}
			n++
		}
		if video && now.Sub(lastVideo) < minPaceGap {
			// Late: the units due pile up. Apart by at least this, a
			// reader that stamps by arrival still tells them apart.
			timer.Reset(minPaceGap - now.Sub(lastVideo))
			select {
			case <-timer.C:
			case <-d.done:
				return false
			}
			continue
		}
		if video {
			lastVideo = now
		}
		if n > 0 {
			if err := d.write(pending[:n]); err != nil {
				d.fail(err)
				return false
			}
			clear(pending[:n])
			pending = pending[n:]
			continue
		}
		timer.Reset(p.due(start, pending[0]).Sub(now))
		select {
		case <-timer.C:
		case <-d.done:
			return false
		}
	}
}
