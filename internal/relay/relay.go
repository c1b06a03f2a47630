// Package relay is a camera's output side: one RTSP ServerStream whose SDP,
// SSRCs and sequence numbers stay the same for as long as the path lives,
// fed by whichever upstream session is current. It re-packetises access
// units (Google's packets can exceed gortsplib's 1472-byte limit), keeps
// timestamps continuous across upstream swaps, and keeps the last GOP so a
// late joiner gets a picture at once instead of waiting for the next IDR.
package relay

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"
)

// Params are the codec parameters an upstream announces.
type Params struct {
	SPS, PPS []byte
	// Audio is nil when the upstream has no AAC track.
	Audio *mpeg4audio.AudioSpecificConfig
}

// Equal reports whether a stream built for p can carry an upstream with q
// without the readers' decoders noticing.
func (p Params) Equal(q Params) bool {
	if !bytes.Equal(p.SPS, q.SPS) || !bytes.Equal(p.PPS, q.PPS) || (p.Audio == nil) != (q.Audio == nil) {
		return false
	}
	if p.Audio == nil {
		return true
	}
	return p.Audio.Type == q.Audio.Type && p.Audio.SampleRate == q.Audio.SampleRate &&
		p.Audio.ChannelCount == q.Audio.ChannelCount
}

// Tracks names the output's tracks, for events.
func (p Params) Tracks() []string {
	t := []string{"H264"}
	if p.Audio != nil {
		t = append(t, "MPEG-4 Audio")
	}
	return t
}

const (
	videoPT = 96
	audioPT = 97
	// maxPayload keeps packets, with RTP header and RTSP interleaving,
	// under gortsplib's 1472-byte limit.
	maxPayload = 1400
	// gopMaxPackets bounds the memory of the GOP cache; a longer GOP is
	// not cached and late joiners wait for the next IDR.
	gopMaxPackets = 6000
	// WriteQueueSize must hold a whole cached GOP plus live packets for a
	// late joiner; the server must be configured with at least this.
	WriteQueueSize = 8192
	// replayHoldLimit releases the replay gate if the server never confirms
	// that the reader was activated (a connection dying mid-PLAY).
	replayHoldLimit = 2 * time.Second
)

// Relay is one camera's output stream.
type Relay struct {
	params Params
	stream *gortsplib.ServerStream
	video  *description.Media
	audio  *description.Media

	// mu is the feed gate: held while a packet is written to the stream and
	// the GOP, and by a late joiner from its GOP replay until gortsplib has
	// activated it, so that the joiner misses no packet between the two.
	mu         sync.Mutex
	venc       *rtph264.Encoder
	aenc       *rtpmpeg4audio.Encoder
	vts, ats   timeline
	waitingIDR bool
	segment    *Segment // the upstream currently allowed to write
	gop        []gopPacket
	gopValid   bool
	stats      Stats
}

type gopPacket struct {
	media *description.Media
	pkt   *rtp.Packet
}

// Stats counts what the relay forwarded.
type Stats struct {
	VideoFrames   uint64
	AudioFrames   uint64
	DroppedFrames uint64 // before the first IDR of a segment
	Segments      uint64 // upstreams attached
	LastFrame     time.Time
}

// New creates the output stream on srv (which must be started) for an
// upstream with params p.
func New(srv *gortsplib.Server, p Params) (*Relay, error) {
	if len(p.SPS) == 0 || len(p.PPS) == 0 {
		return nil, fmt.Errorf("relay: the upstream announced no H.264 SPS/PPS")
	}
	r := &Relay{params: p, waitingIDR: true}
	r.video = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{
		PayloadTyp: videoPT, SPS: p.SPS, PPS: p.PPS, PacketizationMode: 1}}}
	desc := &description.Session{Medias: []*description.Media{r.video}}
	r.venc = &rtph264.Encoder{PayloadType: videoPT, PacketizationMode: 1, PayloadMaxSize: maxPayload}
	if err := r.venc.Init(); err != nil {
		return nil, err
	}
	r.vts = timeline{defaultStep: 90000 / 25, clockRate: 90000}
	if p.Audio != nil {
		r.audio = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{&format.MPEG4Audio{
			PayloadTyp: audioPT, ProfileLevelID: 1, Config: p.Audio, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}}}
		desc.Medias = append(desc.Medias, r.audio)
		r.aenc = &rtpmpeg4audio.Encoder{PayloadType: audioPT, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3,
			PayloadMaxSize: maxPayload}
		if err := r.aenc.Init(); err != nil {
			return nil, err
		}
		r.ats = timeline{defaultStep: mpeg4audio.SamplesPerAccessUnit, clockRate: uint64(p.Audio.SampleRate)}
	}
	r.stream = &gortsplib.ServerStream{Server: srv, Desc: desc}
	if err := r.stream.Initialize(); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return r, nil
}

// Stream is what readers are given at DESCRIBE and SETUP.
func (r *Relay) Stream() *gortsplib.ServerStream { return r.stream }

// Params are the codec parameters the stream was built for.
func (r *Relay) Params() Params { return r.params }

// Close ends the stream, which disconnects every reader.
func (r *Relay) Close() { r.stream.Close() }

// Stats returns a copy of the counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Segment is one upstream's right to feed the relay. Beginning a new
// segment revokes the previous one: an old upstream still delivering
// packets while it shuts down cannot interleave them with the new one's.
type Segment struct {
	r     *Relay
	first chan struct{} // closed when the segment's first IDR is forwarded
}

// BeginSegment prepares for a new upstream: forwarding resumes at its first
// IDR, with timestamps continuing one frame after the last one sent.
func (r *Relay) BeginSegment() *Segment {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waitingIDR = true
	r.segment = &Segment{r: r, first: make(chan struct{})}
	r.vts.newSegment()
	r.ats.newSegment()
	r.stats.Segments++
	return r.segment
}

// FirstFrame is closed once the segment's first IDR has been forwarded.
func (s *Segment) FirstFrame() <-chan struct{} { return s.first }

// WriteVideo forwards one H.264 access unit with its upstream RTP timestamp.
// It is called from the upstream's reading goroutine only.
func (s *Segment) WriteVideo(ts uint32, au [][]byte) error {
	idr := h264.IsRandomAccess(au)
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.segment != s {
		return nil // superseded
	}
	if r.waitingIDR {
		if !idr {
			r.stats.DroppedFrames++
			return nil
		}
		r.waitingIDR = false
		defer close(s.first)
	}
	if idr {
		au = r.withParameterSets(au)
	}
	pkts, err := r.venc.Encode(au)
	if err != nil {
		return err
	}
	out := r.vts.next(ts)
	ntp := r.vts.ntp()
	if idr {
		r.gop = r.gop[:0]
		r.gopValid = true
	}
	for _, p := range pkts {
		p.Timestamp = out
		if err := r.stream.WritePacketRTPWithNTP(r.video, p, ntp); err != nil {
			return err
		}
		r.remember(r.video, p)
	}
	r.stats.VideoFrames++
	r.stats.LastFrame = time.Now()
	return nil
}

// WriteAudio forwards one AAC access unit with its upstream RTP timestamp.
func (s *Segment) WriteAudio(ts uint32, au []byte) error {
	r := s.r
	if r.audio == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.segment != s {
		return nil
	}
	// Audio waits for the video's IDR so that every reader's stream (and
	// every recording segment) starts with a decodable picture.
	if r.waitingIDR {
		return nil
	}
	pkts, err := r.aenc.Encode([][]byte{au})
	if err != nil {
		return err
	}
	out := r.ats.next(ts)
	ntp := r.ats.ntp()
	for _, p := range pkts {
		p.Timestamp += out
		if err := r.stream.WritePacketRTPWithNTP(r.audio, p, ntp); err != nil {
			return err
		}
		r.remember(r.audio, p)
	}
	r.stats.AudioFrames++
	return nil
}

// withParameterSets puts SPS and PPS in band before an IDR that lacks them,
// so a decoder that joins (or a recorder that cuts a segment) there can start.
func (r *Relay) withParameterSets(au [][]byte) [][]byte {
	var hasSPS, hasPPS bool
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			hasSPS = true
		case h264.NALUTypePPS:
			hasPPS = true
		}
	}
	if hasSPS && hasPPS {
		return au
	}
	out := make([][]byte, 0, len(au)+2)
	if !hasSPS {
		out = append(out, r.params.SPS)
	}
	if !hasPPS {
		out = append(out, r.params.PPS)
	}
	return append(out, au...)
}

func (r *Relay) remember(m *description.Media, p *rtp.Packet) {
	if !r.gopValid {
		return
	}
	if len(r.gop) >= gopMaxPackets {
		r.gop = r.gop[:0]
		r.gopValid = false
		return
	}
	r.gop = append(r.gop, gopPacket{media: m, pkt: p})
}

// ReplayGOP queues the cached GOP to a reader that is about to start
// playing, and holds the feed until release is called: call it once
// gortsplib has activated the reader (the server's OnResponse to PLAY).
// Whatever happens, the hold ends after a short limit.
// It must be called from the session's own callback (OnPlay).
func (r *Relay) ReplayGOP(ss *gortsplib.ServerSession) (release func()) {
	// A reader may have set up only some tracks; writing another panics.
	setup := map[*description.Media]bool{}
	for _, m := range ss.SetuppedMedias() {
		setup[m] = true
	}
	r.mu.Lock()
	if r.gopValid {
		for _, g := range r.gop {
			if !setup[g.media] {
				continue
			}
			if err := ss.WritePacketRTP(g.media, g.pkt); err != nil {
				break
			}
		}
	}
	var once sync.Once
	t := time.AfterFunc(replayHoldLimit, func() { once.Do(r.mu.Unlock) })
	return func() {
		once.Do(func() {
			t.Stop()
			r.mu.Unlock()
		})
	}
}

// timeline maps one track's upstream timestamps to output timestamps that
// never jump by an outage and never go backwards: each upstream segment
// starts one frame after the last timestamp sent.
//
// It also keeps the track's NTP clock for RTCP sender reports. Readers such
// as ffmpeg compute presentation times from the latest report, which pairs
// an RTP time with an NTP time; were that NTP the wall clock, every outage
// would shift the pairing, and timestamps would jump by the outage (or run
// backwards after reports extrapolated through it). Deriving NTP from the
// output timeline keeps one fixed offset between the two for the stream's
// whole life.
type timeline struct {
	clockRate   uint64
	ext         uint64    // the last output timestamp, unwrapped
	originExt   uint64    // ext of the first packet
	origin      time.Time // wall time of the first packet
	defaultStep uint32
	started     bool // a segment is running
	sentAny     bool
	inBase      uint32
	outBase     uint32
	lastIn      uint32
	lastOut     uint32
	step        uint32 // the last observed frame duration
}

func (t *timeline) newSegment() { t.started = false }

// maxForwardJump is the largest upstream timestamp step taken as it is
// (in clock ticks, 5 s at 90 kHz); anything larger, or any step back, is a
// discontinuity in the upstream and starts a new segment.
const maxForwardJump = 5 * 90000

func (t *timeline) next(in uint32) uint32 {
	if t.started {
		d := int32(in - t.lastIn)
		if d <= 0 || d > maxForwardJump {
			t.started = false
		} else if uint32(d) < t.defaultStep*4 {
			t.step = uint32(d)
		}
	}
	if !t.started {
		t.started = true
		t.inBase = in
		switch {
		case !t.sentAny:
			t.outBase = in // the first segment keeps the upstream's own origin
		case t.step > 0:
			t.outBase = t.lastOut + t.step
		default:
			t.outBase = t.lastOut + t.defaultStep
		}
	}
	out := t.outBase + (in - t.inBase)
	if !t.sentAny {
		t.ext, t.originExt, t.origin = uint64(out), uint64(out), time.Now()
	} else {
		t.ext += uint64(out - t.lastOut) // forward by construction
	}
	t.lastIn = in
	t.lastOut = out
	t.sentAny = true
	return out
}

// ntp is the reference time of the last output timestamp.
func (t *timeline) ntp() time.Time {
	d := t.ext - t.originExt
	return t.origin.Add(time.Duration(d/t.clockRate)*time.Second +
		time.Duration(d%t.clockRate*uint64(time.Second)/t.clockRate))
}
