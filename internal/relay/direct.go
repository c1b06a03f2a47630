package relay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bluenviron/gortsplib/v4"

	"github.com/nestmtx/nestmtx/internal/framebatch"
)

// The direct path: a reader over TCP gets the relay's units as they are,
// with no copy for readers on the default channels, one writev(2) per
// access unit (audio rides with the next video unit).
//
// Who writes: the goroutine that publishes a unit writes it to every
// reader that is keeping up, itself, with a writev that never waits
// (framebatch's TryWriteBuffers). A reader that is not keeping up (its
// socket is full, it is starting, or another write holds its connection)
// gets the units queued for its own writer goroutine, which waits on the
// socket, and is written to inline again once that goroutine has caught
// up. Measured with scripts/bench-relay.sh at 50 readers, a wake-up of
// 50 goroutines per frame cost a third of the relay's CPU (the scheduler,
// futexes and the runtime's sysmon kept busy by them); one goroutine
// writing 50 sockets costs the system calls alone.

const (
	// maxQueuedBytes is how much a reader that is not keeping up may have
	// queued (besides the cached GOP it joined with, which the relay
	// holds anyway) before it is dropped: about 8 s at 4 Mbit/s.
	maxQueuedBytes = 4 << 20
	// writeTimeout drops a reader whose socket accepts nothing for this
	// long, as gortsplib's WriteTimeout does.
	writeTimeout = 10 * time.Second
)

// maxBehind is how long a unit may wait in a reader's queue before the
// reader is dropped. A paced join catches up within paceCatchUp, so a
// reader this far behind is stuck, and its queue only pins memory. A
// variable for tests.
var maxBehind = 6 * time.Second

// MediaConn is a reader's connection as the direct path needs it:
// framebatch.Conn, which serialises these writes with gortsplib's.
type MediaConn interface {
	// WriteBuffers writes whole interleaved frames.
	WriteBuffers(net.Buffers) error
	// TryWriteBuffers writes them without waiting, keeping what the
	// socket does not take for Flush.
	TryWriteBuffers(net.Buffers) (framebatch.TryResult, error)
	// Flush sends what TryWriteBuffers kept.
	Flush() error
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
	// oldest is when the first unit now queued was queued: maxBehind,
	// which applies once the reader is live, its join written.
	oldest time.Time
	live   bool
	dead   bool
	// idle says the reader has nothing queued and is owed nothing, past
	// its gate and its paced start: the publisher may write to the socket
	// itself. owed says the connection holds the rest of a batch the
	// publisher could not finish, for the writer to flush. running says a
	// writer goroutine is at work: one runs only while the reader starts
	// or is behind, and writers counts them, for Stop.
	idle, owed, running bool
	writers             sync.WaitGroup
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

// accept reports whether u goes to the reader: live from its join on,
// on a track it set up, and from an IDR on when it waits for one. It is
// called under d.mu, in unit order.
func (d *directReader) accept(u unit) bool {
	if u.serial < d.from || d.channels[u.track] < 0 {
		return false
	}
	if d.waitKey && !u.control {
		if !u.key {
			return false
		}
		d.waitKey = false
	}
	return true
}

// fanOut is the publisher's scratch, reused from unit to unit; its totals
// go to the relay's counters once per batch.
type fanOut struct {
	pick           []unit
	vec            net.Buffers
	now            time.Time // read once per batch, when a queue needs it
	bytes, packets uint64
}

// clock is the batch's time, read at most once.
func (f *fanOut) clock() time.Time {
	if f.now.IsZero() {
		f.now = time.Now()
	}
	return f.now
}

// offer hands the reader a batch of new units: written at once when it
// keeps up, else queued for its writer. It reports false once the reader
// is gone, so the relay forgets it.
func (d *directReader) offer(units []unit, f *fanOut) bool {
	d.mu.Lock()
	if d.dead {
		d.mu.Unlock()
		return false
	}
	f.pick = f.pick[:0]
	for _, u := range units {
		if d.accept(u) {
			f.pick = append(f.pick, u)
		}
	}
	if len(f.pick) == 0 {
		d.mu.Unlock()
		return true
	}
	if d.idle {
		f.vec = f.vec[:0]
		size, packets := 0, uint64(0)
		for _, u := range f.pick {
			f.vec = append(f.vec, u.data)
			size += len(u.data)
			packets += uint64(u.packets)
		}
		res, err := d.conn.TryWriteBuffers(f.vec)
		clear(f.vec)
		if err != nil {
			d.mu.Unlock()
			d.fail(err)
			return false
		}
		switch res {
		case framebatch.TryWritten:
			d.mu.Unlock()
			f.bytes += uint64(size)
			f.packets += packets
			return true
		case framebatch.TryOwed:
			// The connection sends the rest before anything else; a
			// writer flushes it, waiting on the socket.
			f.bytes += uint64(size)
			f.packets += packets
			d.idle, d.owed = false, true
			d.startWriter()
			d.mu.Unlock()
			return true
		}
		// TryBusy: the writer takes it, as for a reader behind.
	}
	d.idle = false
	if d.oldest.IsZero() {
		d.oldest = f.clock()
	} else if d.live && f.clock().Sub(d.oldest) > maxBehind {
		d.mu.Unlock()
		d.fail(fmt.Errorf("reader too slow: more than %s behind live", maxBehind))
		return false
	}
	for _, u := range f.pick {
		d.queue = append(d.queue, u)
		d.queued += len(u.data)
	}
	if d.queued > maxQueuedBytes {
		d.mu.Unlock()
		d.fail(errors.New("reader too slow: its queue exceeded the limit"))
		return false
	}
	if !d.running {
		d.startWriter()
		d.mu.Unlock()
		return true
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return true
}

// startWriter starts a goroutine to write what is queued or owed; it is
// called under d.mu, on a reader that is not dead and has none running.
func (d *directReader) startWriter() {
	d.running = true
	d.writers.Add(1)
	go func() {
		defer d.writers.Done()
		d.drain()
	}()
}

// run is the reader's first writer: it waits for the PLAY response to be
// on the wire, writes the paced start, then what was queued meanwhile.
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
	d.drain()
}

// drain writes the queue (and flushes what the connection is owed) until
// nothing is left, then leaves the reader to the publisher and returns.
// A reader whose frames need their channels rewritten keeps its writer,
// which waits for more.
func (d *directReader) drain() {
	var batch []unit
	for {
		d.mu.Lock()
		batch, d.queue = d.queue, batch[:0]
		d.queued = 0
		d.oldest = time.Time{}
		owed := d.owed
		d.owed = false
		if len(batch) == 0 && !owed {
			// The join is written: from here on a reader this far behind
			// is too slow, not starting.
			d.live = true
			if !d.remap {
				// Caught up: the publisher writes from here on, with
				// writes that never wait and need no deadline. One left
				// to lapse would turn them all away (TryBusy) until a
				// writer set another. A gortsplib response being written
				// meanwhile keeps the deadline it set only if it set it
				// after this; if not, a stalled reader still ends, by
				// the publisher's queue filling up.
				d.conn.SetWriteDeadline(time.Time{}) //nolint:errcheck // nothing to report
				d.lastDL = time.Time{}
				d.idle, d.running = !d.dead, false
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
			select {
			case <-d.wake:
			case <-d.done:
				return
			}
			continue
		}
		d.mu.Unlock()
		if owed {
			d.moveDeadline(false)
			if err := d.conn.Flush(); err != nil {
				d.fail(err)
				return
			}
		}
		if err := d.write(batch); err != nil {
			d.fail(err)
			return
		}
		// Let the arena chunks go as soon as nobody needs them.
		clear(batch)
	}
}

// moveDeadline gives the socket a fresh write deadline once a second, or
// before each piece of a large batch (more), not per write: a timer update
// per write is measurable at 50 readers.
func (d *directReader) moveDeadline(more bool) {
	if now := time.Now(); now.Sub(d.lastDL) >= time.Second || more {
		d.lastDL = now
		d.conn.SetWriteDeadline(now.Add(writeTimeout)) //nolint:errcheck // applied at the write
	}
}

// maxWriteBytes splits a large batch (a late joiner's GOP) into writes
// that each get a fresh deadline, so that a slow but moving reader is not
// dropped for needing more than writeTimeout for the whole of it (nor is
// it for maxBehind: that applies once the join is written).
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
		d.moveDeadline(len(batch) > 0)
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

// stop ends the writer; the relay forgets the reader at its next offer.
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
			d.oldest = time.Time{}
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
