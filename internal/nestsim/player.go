package nestsim

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"
)

// maxLag is how far the player may fall behind real time (a stopped VM, a
// debugger) before it skips ahead instead of bursting the backlog.
const maxLag = time.Second

// player is a camera: one goroutine that plays the clip in real time and
// writes every access unit to all of the camera's live sessions.
type player struct {
	s    *Sim
	dev  *device
	clip *Clip // owned by the player goroutine
	// clipShared mirrors clip for other goroutines, under Sim.mu.
	clipShared *Clip
	wake       chan struct{}

	sessions []*streamSession // guarded by Sim.mu
	frames   atomic.Int64
	// keyframe asks for the next picture to be an IDR: a camera's encoder
	// starts every new RTSP session with a keyframe.
	keyframe atomic.Bool
	// next is a clip to switch to at the next frame (SetCameraClip): the
	// camera's encoder settings changed, as after a firmware update.
	next atomic.Pointer[Clip]

	// Camera-level RTP state, continuous across loops; sessions add their
	// own offsets.
	vSeq, aSeq uint16
	vTS, aTS   uint32
	vIdx, aIdx int

	pkt  rtp.Packet
	snap []*streamSession
}

func newPlayer(s *Sim, d *device) *player {
	return &player{s: s, dev: d, clip: s.clip, clipShared: s.clip, wake: make(chan struct{}, 1)}
}

func (p *player) wakeUp() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *player) snapshot() []*streamSession {
	p.s.mu.Lock()
	p.snap = append(p.snap[:0], p.sessions...)
	p.s.mu.Unlock()
	return p.snap
}

func (p *player) run() {
	defer p.s.wg.Done()
	ctx := p.s.ctx
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	audioNS := int64(mpeg4audio.SamplesPerAccessUnit) * int64(time.Second) / int64(p.clip.SampleRate)
	videoNS := int64(time.Second) / int64(p.clip.FPS)

	for {
		// An idle camera parks rather than ticking ~70 times a second, so
		// a sim with many cameras costs nothing until streams are asked for.
		if len(p.snapshot()) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
				continue
			}
		}

		base := time.Now()
		var vN, aN int64
		for {
			nextV := base.Add(time.Duration(vN * videoNS))
			nextA := base.Add(time.Duration(aN * audioNS))
			next := nextV
			if nextA.Before(next) {
				next = nextA
			}
			timer.Reset(time.Until(next))
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}

			now := time.Now()
			if now.Sub(next) > maxLag {
				base, vN, aN = now, 0, 0
				continue
			}
			sessions := p.snapshot()
			if len(sessions) == 0 {
				break
			}
			for !nextV.After(now) {
				p.writeVideo(sessions, nextV)
				vN++
				nextV = base.Add(time.Duration(vN * videoNS))
			}
			for !nextA.After(now) {
				p.writeAudio(sessions, nextA)
				aN++
				nextA = base.Add(time.Duration(aN * audioNS))
			}
		}
	}
}

// currentClip is the clip new sessions announce; safe from any goroutine.
func (p *player) currentClip() *Clip {
	if n := p.next.Load(); n != nil {
		return n
	}
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.clipShared
}

func (p *player) writeVideo(sessions []*streamSession, ntp time.Time) {
	if n := p.next.Swap(nil); n != nil {
		p.s.mu.Lock()
		p.clip, p.clipShared = n, n
		p.s.mu.Unlock()
		p.vIdx, p.aIdx = 0, 0
	}
	if p.keyframe.Swap(false) {
		// Skip ahead to the clip's next IDR; timestamps go on as before.
		for !p.clip.video[p.vIdx].idr {
			p.vIdx = (p.vIdx + 1) % len(p.clip.video)
		}
	}
	u := &p.clip.video[p.vIdx]
	if p.s.faults.frozen() {
		sessions = nil // the camera keeps its clock but sends nothing
	}
	for _, ss := range sessions {
		ok := p.writeUnit(ss, ss.video, u, 96, p.vSeq+ss.vSeqOff, p.vTS+ss.vTSOff, ntp)
		if ok && ss.playing.Load() > 0 {
			p.frames.Add(1)
		}
	}
	p.vSeq += uint16(len(u.payloads))
	p.vTS += p.clip.frameDur
	p.vIdx = (p.vIdx + 1) % len(p.clip.video)
}

func (p *player) writeAudio(sessions []*streamSession, ntp time.Time) {
	u := &p.clip.audio[p.aIdx]
	if p.s.faults.frozen() {
		sessions = nil
	}
	for _, ss := range sessions {
		p.writeUnit(ss, ss.audio, u, 97, p.aSeq+ss.aSeqOff, p.aTS+ss.aTSOff, ntp)
	}
	p.aSeq += uint16(len(u.payloads))
	p.aTS += mpeg4audio.SamplesPerAccessUnit
	p.aIdx = (p.aIdx + 1) % len(p.clip.audio)
}

// writeUnit stamps and writes one access unit. The packet struct is reused:
// gortsplib marshals synchronously inside WritePacketRTPWithNTP.
func (p *player) writeUnit(ss *streamSession, medi *description.Media, u *clipUnit,
	pt uint8, seq uint16, ts uint32, ntp time.Time,
) bool {
	for i, payload := range u.payloads {
		p.pkt = rtp.Packet{
			Header: rtp.Header{
				Version:        2,
				PayloadType:    pt,
				SequenceNumber: seq + uint16(i),
				Timestamp:      ts,
				Marker:         u.markers[i],
			},
			Payload: payload,
		}
		if err := ss.stream.WritePacketRTPWithNTP(medi, &p.pkt, ntp); err != nil {
			// A session ended between the snapshot and the write.
			var closed liberrors.ErrServerStreamClosed
			if !errors.As(err, &closed) {
				p.s.log.Debug("nestsim: rtp write", "device", p.dev.cam.ID, "err", err)
			}
			return false
		}
	}
	return true
}
