package nestsim

import (
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/webrtc/v4"
)

const (
	streamPathPrefix = "/sdm_live_stream/"

	// readerGrace is how long a SETUP waits for a previous reader of the
	// same session to go away before it is refused: a client that
	// reconnects right after dropping its TCP connection may beat the
	// server's noticing the close.
	readerGrace = 500 * time.Millisecond

	// endedRetention keeps ended sessions (and their tokens) around so
	// late Extend/Stop calls get FAILED_PRECONDITION rather than
	// INVALID_ARGUMENT, without growing forever in a long demo.
	endedRetention = time.Hour

	// reapPoll caps the reaper's sleep so that an injected Options.Now
	// that jumps ahead still expires sessions promptly.
	reapPoll = 200 * time.Millisecond
)

type sessState int

const (
	stateLive sessState = iota
	stateStopped
	stateExpired
	stateFailed // a WebRTC peer connection failed or closed
)

// streamSession is one GenerateRtspStream result. Fields other than
// playing are guarded by Sim.mu; the media offsets are fixed at creation.
type streamSession struct {
	id          string
	dev         *device
	gen         int
	streamToken string
	extToken    string
	extHistory  []string
	expiresAt   time.Time
	state       sessState
	endedAt     time.Time

	stream       *gortsplib.ServerStream
	video, audio *description.Media
	// Random per-session offsets make each session look like a fresh
	// camera stream (random initial sequence numbers and timestamps)
	// while staying continuous across clip loops.
	vSeqOff, aSeqOff uint16
	vTSOff, aTSOff   uint32

	readers map[*gortsplib.ServerSession]bool // value: PLAY accepted
	conns   map[*gortsplib.ServerConn]struct{}
	playing atomic.Int32
}

func newStreamToken(gen int) string {
	return "g." + itoa(gen) + "." + randToken(48)
}

func (s *Sim) newSession(d *device) (*streamSession, error) {
	clip := d.player.currentClip()
	desc := &description.Session{
		Medias: []*description.Media{
			{Type: description.MediaTypeVideo, Formats: []format.Format{clip.videoFormat()}},
			{Type: description.MediaTypeAudio, Formats: []format.Format{clip.audioFormat()}},
		},
	}
	st := &gortsplib.ServerStream{Server: s.rtsp, Desc: desc}
	if err := st.Initialize(); err != nil {
		return nil, err
	}
	ss := &streamSession{
		id:          randToken(48),
		dev:         d,
		streamToken: newStreamToken(0),
		extToken:    randToken(96),
		stream:      st,
		video:       desc.Medias[0],
		audio:       desc.Medias[1],
		vSeqOff:     uint16(randUint32()),
		aSeqOff:     uint16(randUint32()),
		vTSOff:      randUint32(),
		aTSOff:      randUint32(),
		readers:     map[*gortsplib.ServerSession]bool{},
		conns:       map[*gortsplib.ServerConn]struct{}{},
	}
	ss.extHistory = []string{ss.extToken}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		st.Close()
		return nil, errors.New("simulator closed")
	}
	ss.expiresAt = s.now().Add(s.o.StreamTTL).Truncate(time.Millisecond)
	s.sessions[ss.id] = ss
	s.extTokens[ss.extToken] = ss
	d.player.sessions = append(d.player.sessions, ss)
	s.mu.Unlock()

	d.player.wakeUp()
	s.kickReaper()
	s.log.Debug("nestsim: stream generated", "device", d.cam.ID, "session", ss.id)
	return ss, nil
}

// cutList collects what to close so that closing happens outside Sim.mu:
// gortsplib callbacks take Sim.mu, and closing may wait on them.
type cutList struct {
	streams  []*gortsplib.ServerStream
	sessions []*gortsplib.ServerSession
	conns    []*gortsplib.ServerConn
	peers    []*webrtc.PeerConnection
}

func (c *cutList) do() {
	for _, st := range c.streams {
		st.Close()
	}
	for _, ss := range c.sessions {
		ss.Close()
	}
	for _, sc := range c.conns {
		sc.Close()
	}
	for _, pc := range c.peers {
		pc.Close()
	}
}

// disconnectLocked forgets the session's readers and connections and queues
// them for closing; the session itself is untouched.
func (s *Sim) disconnectLocked(ss *streamSession, cut *cutList) {
	for r := range ss.readers {
		cut.sessions = append(cut.sessions, r)
		delete(s.readerSess, r)
	}
	for c := range ss.conns {
		cut.conns = append(cut.conns, c)
		delete(s.connSess, c)
	}
	clear(ss.readers)
	clear(ss.conns)
	ss.playing.Store(0)
}

func (s *Sim) endLocked(ss *streamSession, state sessState, cut *cutList) {
	if ss.state != stateLive {
		return
	}
	ss.state = state
	ss.endedAt = s.now()
	p := ss.dev.player
	if i := indexOf(p.sessions, ss); i >= 0 {
		p.sessions = append(p.sessions[:i], p.sessions[i+1:]...)
	}
	s.disconnectLocked(ss, cut)
	cut.streams = append(cut.streams, ss.stream)
	s.log.Debug("nestsim: stream ended", "device", ss.dev.cam.ID, "session", ss.id, "expired", state == stateExpired)
}

func indexOf(list []*streamSession, ss *streamSession) int {
	for i, x := range list {
		if x == ss {
			return i
		}
	}
	return -1
}

func (s *Sim) dropStreams() {
	var cut cutList
	s.mu.Lock()
	for _, ss := range s.sessions {
		if ss.state == stateLive {
			s.disconnectLocked(ss, &cut)
		}
	}
	s.mu.Unlock()
	cut.do()
}

func (s *Sim) kickReaper() {
	select {
	case s.reapKick <- struct{}{}:
	default:
	}
}

// reaper ends sessions (RTSP and WebRTC) whose expiresAt passed without an extension.
func (s *Sim) reaper() {
	defer s.wg.Done()
	t := time.NewTimer(reapPoll)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.reapKick:
		}
		t.Reset(s.reap())
	}
}

func (s *Sim) reap() time.Duration {
	var cut cutList
	defer cut.do()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	next := reapPoll
	for id, ss := range s.sessions {
		switch {
		case ss.state == stateLive && !now.Before(ss.expiresAt) && !s.faults.lingering():
			s.endLocked(ss, stateExpired, &cut)
		case ss.state == stateLive:
			next = min(next, ss.expiresAt.Sub(now))
		case now.Sub(ss.endedAt) > endedRetention:
			delete(s.sessions, id)
			for _, t := range ss.extHistory {
				delete(s.extTokens, t)
			}
		}
	}
	next = s.reapRTCLocked(now, next, &cut)
	return max(next, time.Millisecond)
}

// validateLocked applies dropcam's rules to an RTSP request: 404 for an
// unknown, expired or stopped session, 403 for a token that is not the
// session's current stream token.
func (s *Sim) validateLocked(path, query string) (*streamSession, base.StatusCode) {
	id, ok := strings.CutPrefix(path, streamPathPrefix)
	if !ok || id == "" || strings.Contains(id, "/") {
		return nil, base.StatusNotFound
	}
	ss := s.sessions[id]
	if ss == nil || ss.state != stateLive || !s.now().Before(ss.expiresAt) {
		return nil, base.StatusNotFound
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, base.StatusBadRequest
	}
	if q.Get("auth") != ss.streamToken {
		return nil, base.StatusForbidden
	}
	return ss, base.StatusOK
}

type rtspHandler struct{ s *Sim }

func (h *rtspHandler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.connSess[ctx.Conn]; ss != nil {
		delete(ss.conns, ctx.Conn)
		delete(s.connSess, ctx.Conn)
	}
}

func (h *rtspHandler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.readerSess[ctx.Session]; ss != nil {
		if ss.readers[ctx.Session] {
			ss.playing.Add(-1)
		}
		delete(ss.readers, ctx.Session)
		delete(s.readerSess, ctx.Session)
	}
}

func (s *Sim) trackConnLocked(ss *streamSession, c *gortsplib.ServerConn) {
	if old := s.connSess[c]; old != nil && old != ss {
		delete(old.conns, c)
	}
	s.connSess[c] = ss
	ss.conns[c] = struct{}{}
}

func (h *rtspHandler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, code := s.validateLocked(ctx.Path, ctx.Query)
	if code == base.StatusOK && s.faults.takeStreamRefusal() {
		code = base.StatusNotFound // dropcam's answer for a URL it will not serve
	}
	if code != base.StatusOK {
		s.log.Debug("nestsim: rtsp describe refused", "path", ctx.Path, "status", int(code))
		return &base.Response{StatusCode: code}, nil, nil
	}
	s.trackConnLocked(ss, ctx.Conn)
	return &base.Response{StatusCode: base.StatusOK}, ss.stream, nil
}

func (h *rtspHandler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s := h.s
	deadline := time.Now().Add(readerGrace)
	for {
		s.mu.Lock()
		ss, code := s.validateLocked(ctx.Path, ctx.Query)
		if code != base.StatusOK {
			s.mu.Unlock()
			s.log.Debug("nestsim: rtsp setup refused", "path", ctx.Path, "status", int(code))
			return &base.Response{StatusCode: code}, nil, nil
		}
		if prev := s.readerSess[ctx.Session]; prev != nil || ctx.Session.SetuppedStream() != nil {
			// A later track of the same reader must get the same stream.
			s.mu.Unlock()
			if prev != ss || ctx.Session.SetuppedStream() != ss.stream {
				return &base.Response{StatusCode: base.StatusSessionNotFound}, nil, nil
			}
			return &base.Response{StatusCode: base.StatusOK}, ss.stream, nil
		}
		if len(ss.readers) == 0 {
			ss.readers[ctx.Session] = false
			s.readerSess[ctx.Session] = ss
			s.trackConnLocked(ss, ctx.Conn)
			s.mu.Unlock()
			return &base.Response{StatusCode: base.StatusOK}, ss.stream, nil
		}
		s.mu.Unlock()
		// Google allows one client per stream URL.
		if time.Now().After(deadline) {
			s.log.Debug("nestsim: second reader refused", "session", ss.id)
			return &base.Response{StatusCode: base.StatusNotEnoughBandwidth}, nil, nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-s.ctx.Done():
			return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil, nil
		}
	}
}

func (h *rtspHandler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.readerSess[ctx.Session]
	if ss == nil {
		// Cut by DropStreams or expiry between SETUP and PLAY.
		return &base.Response{StatusCode: base.StatusSessionNotFound}, nil
	}
	v, code := s.validateLocked(ctx.Path, ctx.Query)
	if code != base.StatusOK {
		return &base.Response{StatusCode: code}, nil
	}
	if v != ss {
		return &base.Response{StatusCode: base.StatusBadRequest}, nil
	}
	if !ss.readers[ctx.Session] {
		ss.readers[ctx.Session] = true
		ss.playing.Add(1)
		ss.dev.player.keyframe.Store(true)
	}
	s.trackConnLocked(ss, ctx.Conn)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// The remaining callbacks exist so gortsplib does not log every event to
// the standard logger.

func (h *rtspHandler) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	h.s.log.Debug("nestsim: rtsp packets lost", "lost", ctx.Lost)
}

func (h *rtspHandler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	h.s.log.Debug("nestsim: rtsp decode error", "err", ctx.Error)
}

func (h *rtspHandler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	h.s.log.Debug("nestsim: rtsp write error", "err", ctx.Error)
}
