package main

// The RTSP readers: gortsplib clients over TCP, all in this process. The
// first reader of each camera starts its stream (a cold start); the others
// join it later, all at once, and each notes when its first packet and its
// first IDR arrived.

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

// epoch is what the readers' timestamps count from: time.Since reads the
// monotonic clock, so a wall-clock step cannot bend a join time, and the
// value fits an atomic.Int64.
var epoch = time.Now()

// now is the time since epoch in nanoseconds, never 0 (0 means "not yet").
func now() int64 { return int64(time.Since(epoch)) + 1 }

// counters are one reader's, written by its gortsplib reading goroutine and
// read by the measurement; padded so readers do not share cache lines.
type counters struct {
	pkts, bytes, video, audio, lost atomic.Uint64
	_                               [24]byte
}

type reader struct {
	c      *gortsplib.Client
	cam    int  // index of its camera
	joiner bool // false for the camera's first reader
	n      counters
	// startAt is when a first reader began connecting, playAt when any
	// reader sent PLAY (now() values, written before Play, read after the
	// run); firstPkt and firstIDR when its first RTP packet and the first
	// packet that starts an IDR arrived, 0 until then.
	startAt, playAt    int64
	firstPkt, firstIDR atomic.Int64
	dropped            atomic.Bool // its session ended during the run
	onPacket           func(*counters)
}

// packet counts one RTP packet; until the reader has seen an IDR it also
// notes the first packet's and the first IDR's arrival.
func (r *reader) packet(m *description.Media, f format.Format, p *rtp.Packet) {
	r.n.pkts.Add(1)
	r.n.bytes.Add(uint64(p.MarshalSize()))
	video := m.Type == description.MediaTypeVideo
	if video {
		r.n.video.Add(1)
	} else {
		r.n.audio.Add(1)
	}
	if r.firstIDR.Load() == 0 {
		t := now()
		r.firstPkt.CompareAndSwap(0, t)
		if _, h264 := f.(*format.H264); h264 && video && startsIDR(p.Payload) {
			r.firstIDR.Store(t)
		}
	}
	if r.onPacket != nil {
		r.onPacket(&r.n)
	}
}

// H.264 NAL unit types (RFC 6184 for the aggregation and fragmentation
// units).
const (
	naluIDR   = 5
	naluSPS   = 7
	naluSTAPA = 24
	naluFUA   = 28
)

// startsIDR says whether an H.264 RTP payload begins a random access
// point, the first packet from which a decoder can show a picture: a
// single IDR slice or SPS (which the camera sends right before its IDR), a
// STAP-A aggregating one, or the first fragment (FU-A with the start bit)
// of an IDR slice.
func startsIDR(payload []byte) bool {
	if len(payload) == 0 {
		return false
	}
	switch t := payload[0] & 0x1f; t {
	case naluIDR, naluSPS:
		return true
	case naluSTAPA:
		// Each aggregated unit: a 16-bit size, then the unit.
		for b := payload[1:]; len(b) >= 3; {
			size := int(b[0])<<8 | int(b[1])
			if size == 0 || len(b) < 2+size {
				return false
			}
			if nt := b[2] & 0x1f; nt == naluIDR || nt == naluSPS {
				return true
			}
			b = b[2+size:]
		}
		return false
	case naluFUA:
		return len(payload) >= 2 && payload[1]&0x80 != 0 && payload[1]&0x1f == naluIDR
	default:
		return false
	}
}

type readers struct {
	list     []*reader // the first readers of each camera, then the joiners that played
	tracks   []string  // the codec of each medium of the first reader's SDP
	onPacket func(*counters)
	mu       sync.Mutex
	errs     []error // sessions that ended during the run
	joinErrs []error // joiners that could not connect, DESCRIBE, SETUP or PLAY
	closing  atomic.Bool
}

func (rs *readers) err() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d reader(s) failed, first: %w", len(rs.errs), rs.errs[0])
}

// counts are the readers dropped so far (their sessions ended) and the
// joiners that never played.
func (rs *readers) counts() (dropped, failed int) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.errs), len(rs.joinErrs)
}

func (rs *readers) joinErr() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.joinErrs) == 0 {
		return nil
	}
	return fmt.Errorf("%d joiner(s) failed, first: %w", len(rs.joinErrs), rs.joinErrs[0])
}

func (rs *readers) close() {
	rs.closing.Store(true)
	rs.mu.Lock()
	list := slices.Clone(rs.list)
	rs.mu.Unlock()
	for _, r := range list {
		r.c.Close()
	}
}

// dial connects one reader of camera cam and sends DESCRIBE and SETUP; it
// plays nothing yet.
func (rs *readers) dial(u *base.URL, cam int, joiner bool) (*reader, *description.Session, error) {
	tcp := gortsplib.TransportTCP
	r := &reader{cam: cam, joiner: joiner, onPacket: rs.onPacket}
	r.c = &gortsplib.Client{
		Scheme:        u.Scheme,
		Host:          u.Host,
		Transport:     &tcp,
		ReadTimeout:   10 * time.Second,
		UserAgent:     "nestmtx-relaybench",
		OnPacketsLost: func(lost uint64) { r.n.lost.Add(lost) },
		OnDecodeError: func(error) {},
	}
	if err := r.c.Start2(); err != nil {
		return nil, nil, err
	}
	desc, _, err := r.c.Describe(u)
	if err == nil {
		err = r.c.SetupAll(desc.BaseURL, desc.Medias)
	}
	if err != nil {
		r.c.Close()
		return nil, nil, err
	}
	r.c.OnPacketRTPAny(r.packet)
	return r, desc, nil
}

// play sends PLAY and, once it is answered, watches the session: one that
// ends before the benchmark closes it is a dropped reader.
func (rs *readers) play(r *reader) error {
	r.playAt = now()
	if _, err := r.c.Play(nil); err != nil {
		r.c.Close()
		return err
	}
	rs.mu.Lock()
	rs.list = append(rs.list, r)
	i := len(rs.list) - 1
	rs.mu.Unlock()
	go func() {
		if err := r.c.Wait(); err != nil && !rs.closing.Load() {
			r.dropped.Store(true)
			rs.mu.Lock()
			rs.errs = append(rs.errs, fmt.Errorf("reader %d (camera %d): %w", i, r.cam+1, err))
			rs.mu.Unlock()
		}
	}()
	return nil
}

// coldStart connects the first reader of each camera, all cameras at once:
// its DESCRIBE starts the camera on demand and is held until frames flow.
// Any failure is the run's.
func (rs *readers) coldStart(urls []*base.URL) error {
	firsts := make([]*reader, len(urls))
	errs := make([]error, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Go(func() {
			start := now()
			r, desc, err := rs.dial(u, i, false)
			if err != nil {
				errs[i] = fmt.Errorf("first reader of %s: %w", u.CloneWithoutCredentials(), err)
				return
			}
			r.startAt = start
			if i == 0 {
				for _, m := range desc.Medias {
					codec := "?"
					if len(m.Formats) > 0 {
						codec = m.Formats[0].Codec()
					}
					rs.tracks = append(rs.tracks, codec)
				}
			}
			firsts[i] = r
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, r := range firsts {
			if r != nil {
				r.c.Close()
			}
		}
		return err
	}
	// PLAY in camera order, so that the first readers lead rs.list.
	for i, r := range firsts {
		if err := rs.play(r); err != nil {
			for _, r := range firsts[i+1:] {
				r.c.Close()
			}
			return fmt.Errorf("first reader of %s: %w", urls[i].CloneWithoutCredentials(), err)
		}
	}
	return nil
}

// joinStats say how the joiners' set-up went.
type joinStats struct {
	prepared int           // joiners that connected, DESCRIBEd and SETUP
	setup    time.Duration // the time that took, concurrency readers at a time
	play     time.Duration // from the simultaneous PLAYs to the last answer
}

// join connects perCamera readers to every camera, concurrency at a time
// (round robin over the cameras), each up to SETUP; then, once all are
// ready, they send PLAY at the same moment: simultaneous joiners. A joiner
// that fails is counted (joinErrs), not fatal.
func (rs *readers) join(urls []*base.URL, perCamera, concurrency int) joinStats {
	n := perCamera * len(urls)
	var st joinStats
	ready := make([]*reader, n)
	t0 := time.Now()
	sem := make(chan struct{}, max(1, concurrency))
	var wg sync.WaitGroup
	for i := range n {
		cam := i % len(urls)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r, _, err := rs.dial(urls[cam], cam, true)
			if err != nil {
				rs.mu.Lock()
				rs.joinErrs = append(rs.joinErrs, fmt.Errorf("joiner %d of camera %d (setting up): %w", i/len(urls)+1, cam+1, err))
				rs.mu.Unlock()
				return
			}
			ready[i] = r
		})
	}
	wg.Wait()
	st.setup = time.Since(t0)

	// The barrier: every prepared joiner's goroutine waits for go, so that
	// their PLAYs leave within the scheduler's reach of each other.
	goCh := make(chan struct{})
	for i, r := range ready {
		if r == nil {
			continue
		}
		st.prepared++
		wg.Go(func() {
			<-goCh
			if err := rs.play(r); err != nil {
				rs.mu.Lock()
				rs.joinErrs = append(rs.joinErrs, fmt.Errorf("joiner %d of camera %d (PLAY): %w", i/len(urls)+1, r.cam+1, err))
				rs.mu.Unlock()
			}
		})
	}
	t1 := time.Now()
	close(goCh)
	wg.Wait()
	st.play = time.Since(t1)
	return st
}

// startReaders connects n readers to one URL: the first alone (it starts
// the camera), then the rest joining at once; every one must play.
// onPacket, if not nil, runs after each counted RTP packet.
func startReaders(url string, n int, onPacket func(*counters)) (*readers, error) {
	u, err := base.ParseURL(url)
	if err != nil {
		return nil, err
	}
	rs := &readers{onPacket: onPacket}
	if err := rs.coldStart([]*base.URL{u}); err != nil {
		return rs, err
	}
	if n > 1 {
		rs.join([]*base.URL{u}, n-1, 8)
	}
	return rs, rs.joinErr()
}

// joinTimes are the joiners' times from PLAY to their first packet and to
// their first IDR, in milliseconds, with how many saw none by the end.
type joinTimes struct {
	firstPkt, firstIDR []float64
	noPkt, noIDR       int
}

// timesOf collects the join times of the readers joiner selects, from
// from(r) (playAt for joiners, startAt for first readers).
func timesOf(list []*reader, joiner bool, from func(*reader) int64) joinTimes {
	var jt joinTimes
	for _, r := range list {
		if r.joiner != joiner {
			continue
		}
		t0 := from(r)
		if p := r.firstPkt.Load(); p != 0 {
			jt.firstPkt = append(jt.firstPkt, float64(p-t0)/1e6)
		} else {
			jt.noPkt++
		}
		if p := r.firstIDR.Load(); p != 0 {
			jt.firstIDR = append(jt.firstIDR, float64(p-t0)/1e6)
		} else {
			jt.noIDR++
		}
	}
	return jt
}
