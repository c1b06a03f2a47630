package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

// gapThreshold: a connected reader that gets no RTP packet for longer than
// this has a gap.
const gapThreshold = 2 * time.Second

type gap struct {
	cam, reader string
	start, end  time.Time
	atClose     bool // still open when the connection ended
}

func (g gap) length() time.Duration { return g.end.Sub(g.start) }

type connFailure struct {
	cam, reader string
	start, end  time.Time
	reason      string
}

type connDrop struct {
	cam, reader string
	at          time.Time
	after       time.Duration // how long the connection had lasted
	reason      string
}

type violation struct {
	cam, reader, what string
	at                time.Time
}

// readerLog is everything the readers recorded.
type readerLog struct {
	mu          sync.Mutex
	connected   atomic.Int64
	attempts    int
	conns       int
	packets     uint64
	gaps        []gap
	failures    []connFailure
	drops       []connDrop
	seqBreaks   int    // packets whose sequence number was not the last one + 1 (same SSRC)
	seqLost     uint64 // packets skipped over by forward jumps
	tsBackwards int    // packets whose timestamp went back (same SSRC)
	violations  []violation
	ssrcConns   int // connections in which an SSRC changed
	ssrcPackets int // packets gortsplib dropped for carrying another SSRC
}

// track is the continuity state of one SSRC of one medium.
type track struct {
	seq uint16
	ts  uint32
}

type trackKey struct {
	medi *description.Media
	ssrc uint32
}

// conn is one reader connection's state, touched by gortsplib's reading
// goroutine and by the loop that closes it.
type conn struct {
	h           *harness
	cam, reader string
	mu          sync.Mutex
	last        time.Time
	tracks      map[trackKey]*track
	ssrcByMedia map[*description.Media]uint32
	ssrcChanged bool
}

func (c *conn) onPacket(medi *description.Media, _ format.Format, p *rtp.Packet) {
	now := time.Now()
	h := c.h
	c.mu.Lock()
	if d := now.Sub(c.last); d > gapThreshold {
		h.recordGap(gap{cam: c.cam, reader: c.reader, start: c.last, end: now})
	}
	c.last = now
	if first, ok := c.ssrcByMedia[medi]; !ok {
		c.ssrcByMedia[medi] = p.SSRC
	} else if first != p.SSRC && !c.ssrcChanged {
		c.ssrcChanged = true
		h.noteSSRCChange(c, fmt.Sprintf("%s SSRC %08x -> %08x", medi.Type, first, p.SSRC))
	}
	k := trackKey{medi, p.SSRC}
	t := c.tracks[k]
	if t == nil {
		c.tracks[k] = &track{seq: p.SequenceNumber, ts: p.Timestamp}
		c.mu.Unlock()
		h.rd.mu.Lock()
		h.rd.packets++
		h.rd.mu.Unlock()
		return
	}
	seqOK := p.SequenceNumber == t.seq+1
	jump := p.SequenceNumber - t.seq - 1
	back := int32(p.Timestamp-t.ts) < 0
	what := ""
	if !seqOK {
		what = fmt.Sprintf("%s seq %d -> %d", medi.Type, t.seq, p.SequenceNumber)
	}
	if back {
		what += fmt.Sprintf(" %s timestamp %d -> %d (%d)", medi.Type, t.ts, p.Timestamp, int32(p.Timestamp-t.ts))
	}
	t.seq, t.ts = p.SequenceNumber, p.Timestamp
	c.mu.Unlock()

	h.rd.mu.Lock()
	h.rd.packets++
	if !seqOK {
		h.rd.seqBreaks++
		if jump < 0x8000 {
			h.rd.seqLost += uint64(jump)
		}
	}
	if back {
		h.rd.tsBackwards++
	}
	if what != "" && len(h.rd.violations) < 1000 {
		h.rd.violations = append(h.rd.violations, violation{cam: c.cam, reader: c.reader, what: strings.TrimSpace(what), at: now})
	}
	h.rd.mu.Unlock()
	if what != "" {
		h.incident("%s %s %s", c.cam, c.reader, strings.TrimSpace(what))
	}
}

func (c *conn) onDecodeError(err error) {
	msg := err.Error()
	if strings.Contains(msg, "wrong SSRC") {
		c.mu.Lock()
		first := !c.ssrcChanged
		c.ssrcChanged = true
		c.mu.Unlock()
		c.h.rd.mu.Lock()
		c.h.rd.ssrcPackets++
		c.h.rd.mu.Unlock()
		if first {
			c.h.noteSSRCChange(c, msg)
		}
		return
	}
	c.h.incident("%s %s decode error: %s", c.cam, c.reader, msg)
}

func (h *harness) noteSSRCChange(c *conn, what string) {
	h.rd.mu.Lock()
	h.rd.ssrcConns++
	h.rd.mu.Unlock()
	h.incident("%s %s SSRC changed within the connection: %s", c.cam, c.reader, what)
}

func (h *harness) recordGap(g gap) {
	h.rd.mu.Lock()
	h.rd.gaps = append(h.rd.gaps, g)
	h.rd.mu.Unlock()
	cause := h.sched.explainGap(g.start.Sub(h.t0))
	if cause == "" {
		cause = "UNEXPLAINED"
	}
	tail := ""
	if g.atClose {
		tail = " (open when the connection ended)"
	}
	h.incident("%s %s gap %.1fs from %s [%s]%s", g.cam, g.reader, g.length().Seconds(), fmtOffset(g.start.Sub(h.t0)), cause, tail)
}

// connectOnce connects one reader, plays until `until` (or until the
// connection ends or ctx does), and records what happened. It reports
// whether the reader got to play.
func (h *harness) connectOnce(ctx context.Context, cam, reader string, until time.Time) bool {
	tcp := gortsplib.TransportTCP
	st := &conn{h: h, cam: cam, reader: reader, tracks: map[trackKey]*track{}, ssrcByMedia: map[*description.Media]uint32{}}
	c := &gortsplib.Client{
		Scheme:        "rtsp",
		Host:          h.rtspAddr,
		Transport:     &tcp,
		ReadTimeout:   h.o.readTimeout,
		OnPacketsLost: func(uint64) {}, // counted in onPacket
		OnDecodeError: st.onDecodeError,
	}
	began := time.Now()
	h.rd.mu.Lock()
	h.rd.attempts++
	h.rd.mu.Unlock()
	fail := func(step string, err error) bool {
		f := connFailure{cam: cam, reader: reader, start: began, end: time.Now(), reason: step + ": " + err.Error()}
		if ctx.Err() != nil {
			return false // the soak is ending: not the daemon's doing
		}
		h.rd.mu.Lock()
		h.rd.failures = append(h.rd.failures, f)
		h.rd.mu.Unlock()
		cause := h.sched.explainSpan(f.start.Sub(h.t0), f.end.Sub(h.t0))
		if cause == "" {
			cause = "UNEXPLAINED"
		}
		h.incident("%s %s could not connect after %.1fs: %s [%s]", cam, reader, f.end.Sub(f.start).Seconds(), f.reason, cause)
		return false
	}
	if err := c.Start2(); err != nil {
		return fail("connect", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()
	u, err := base.ParseURL(h.rtspURL(cam))
	if err != nil {
		return fail("url", err)
	}
	desc, _, err := c.Describe(u)
	if err != nil {
		return fail("DESCRIBE", err)
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		return fail("SETUP", err)
	}
	c.OnPacketRTPAny(st.onPacket)
	st.mu.Lock()
	st.last = time.Now()
	st.mu.Unlock()
	if _, err := c.Play(nil); err != nil {
		return fail("PLAY", err)
	}
	playing := time.Now()
	h.rd.mu.Lock()
	h.rd.conns++
	h.rd.mu.Unlock()
	h.rd.connected.Add(1)
	defer h.rd.connected.Add(-1)

	waitErr := make(chan error, 1)
	go func() { waitErr <- c.Wait() }()
	hold := time.NewTimer(time.Until(until))
	defer hold.Stop()
	var ended error
	select {
	case <-hold.C:
	case <-ctx.Done():
	case ended = <-waitErr:
	}
	c.Close()
	now := time.Now()
	st.mu.Lock()
	if d := now.Sub(st.last); d > gapThreshold {
		h.recordGap(gap{cam: cam, reader: reader, start: st.last, end: now, atClose: true})
	}
	st.last = now // no later packet may count a gap after the close
	st.mu.Unlock()
	if ended != nil && ctx.Err() == nil {
		d := connDrop{cam: cam, reader: reader, at: now, after: now.Sub(playing), reason: ended.Error()}
		h.rd.mu.Lock()
		h.rd.drops = append(h.rd.drops, d)
		h.rd.mu.Unlock()
		h.incident("%s %s was disconnected after %s: %s", cam, reader, d.after.Round(time.Second), d.reason)
	}
	return true
}

// hold keeps a reader on cam until `until`, reconnecting 2 s after a failed
// attempt or a dropped connection.
func (h *harness) hold(ctx context.Context, cam, reader string, until time.Time) {
	for n := 0; ctx.Err() == nil && time.Now().Before(until); n++ {
		id := reader
		if n > 0 {
			id = fmt.Sprintf("%s#%d", reader, n)
		}
		h.connectOnce(ctx, cam, id, until)
		if time.Now().Before(until) {
			sleepCtx(ctx, 2*time.Second)
		}
	}
}

// cycleReader comes and goes on one camera: it stays 20-120 s, then leaves
// for 0-40 s, or for 5 s three times in ten (a Frigate restart). The
// durations come from a PCG seeded with the soak's seed and the camera, so a
// run with the same seed draws the same ones.
func (h *harness) cycleReader(ctx context.Context, camIndex int) {
	cam := fmt.Sprintf("cam%d", camIndex)
	rng := rand.New(rand.NewPCG(h.o.seed, uint64(camIndex)))
	if !sleepCtx(ctx, time.Duration(rng.IntN(10))*time.Second) {
		return
	}
	for n := 1; ctx.Err() == nil; n++ {
		on := time.Duration(20+rng.IntN(101)) * time.Second
		off := time.Duration(rng.IntN(41)) * time.Second
		if rng.IntN(10) < 3 {
			off = 5 * time.Second
		}
		h.hold(ctx, cam, fmt.Sprintf("%s.r%d", cam, n), time.Now().Add(on))
		sleepCtx(ctx, off)
	}
}
