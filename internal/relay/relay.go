// Package relay is a camera's output side: RTSP streams whose SDP, SSRCs
// and sequence numbers stay the same for as long as the path lives, fed by
// whichever upstream session is current. It re-packetises access units
// (Google's packets can exceed gortsplib's 1472-byte limit), keeps
// timestamps continuous across upstream swaps, and keeps the last GOP so a
// late joiner gets a picture at once instead of waiting for the next IDR
// (a UDP reader, when the GOP fits its write queue).
//
// Readers over TCP (nearly all: Frigate, ffmpeg with -rtsp_transport tcp,
// Home Assistant) are fed directly: each access unit is packetised once
// into shared memory and handed to every such reader as it is, one write
// per reader per batch (direct.go). Readers over UDP, or on a connection
// the direct path cannot use, go through gortsplib's own per-packet writer
// (served.go). gortsplib still answers every RTSP request for both.
package relay

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// Params are the codec parameters an upstream announces. At most one of
// Audio and OpusChannels is set.
type Params struct {
	SPS, PPS []byte
	// Audio is the AAC track's configuration; nil when there is none.
	Audio *mpeg4audio.AudioSpecificConfig
	// OpusChannels is the channel count of an Opus track (RFC 7587; 48 kHz
	// by definition), 0 when there is none.
	OpusChannels int
}

// Equal reports whether a stream built for p can carry an upstream with q
// without the readers' decoders noticing.
func (p Params) Equal(q Params) bool {
	if !bytes.Equal(p.SPS, q.SPS) || !bytes.Equal(p.PPS, q.PPS) || (p.Audio == nil) != (q.Audio == nil) ||
		p.OpusChannels != q.OpusChannels {
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
	switch {
	case p.Audio != nil:
		t = append(t, "MPEG-4 Audio")
	case p.OpusChannels > 0:
		t = append(t, "Opus")
	}
	return t
}

// AudioCodec names the audio the output carries: "aac", "opus" or "none".
func (p Params) AudioCodec() string {
	switch {
	case p.Audio != nil:
		return "aac"
	case p.OpusChannels > 0:
		return "opus"
	}
	return "none"
}

const (
	videoPT = 96
	audioPT = 97
	// gopMaxBytes bounds the memory of the GOP cache; a longer GOP is not
	// cached and late joiners wait for the next IDR.
	gopMaxBytes = 8 << 20
	// WriteQueueSize is the server's per-session write queue, in packets.
	// gortsplib allocates it for every reader that plays, the direct
	// path's too (which never use it), so it is kept small: 8192 slots
	// cost 128 KB a reader and, scanned by every collection, made up half
	// the live heap at 50 readers. Readers fed by gortsplib (UDP) get the
	// cached GOP only when it fits with room for live packets (see
	// servedReplayMax); the server must be configured with this.
	WriteQueueSize = 512
	// servedReplayMax is the most packets of cached GOP replayed to a
	// reader fed by gortsplib: the rest of its queue takes the live
	// packets (an IDR is about a hundred) that arrive while it drains.
	servedReplayMax = WriteQueueSize - 192
	// servedHoldMax is the most packets held back for joiners (see
	// servedJoining): with a replay, they must fit the queue too.
	servedHoldMax = 128
	// replayHoldLimit releases the replay gate if the server never confirms
	// that the reader was activated (a connection dying mid-PLAY).
	replayHoldLimit = 2 * time.Second
	// maxHeldAudio is how many audio units may wait for the next video
	// unit, so that both reach a reader in one write (about 64 ms at
	// 48 kHz; audio never waits longer than that for a stalled video).
	maxHeldAudio = 3
	// arenaChunk is the size of the memory the units are packetised into.
	arenaChunk = 512 << 10
)

// unit is one access unit (or sender report) of one track, as interleaved
// frames on the default channels. Its bytes are never written again once
// published, so every reader can be handed the same slice.
type unit struct {
	track  int
	serial uint64 // order of creation; a reader gets live units from its join on
	data   []byte
	// at is the unit's time on its track's timeline (the NTP time its
	// sender reports pair with it): a paced join spaces units by it.
	at time.Time
	// key marks a video IDR, where a reader may start.
	key bool
	// control marks an RTCP sender report, which carries no media.
	control bool
	// packets is the number of RTP packets in data, for the counters.
	packets uint32
}

// Relay is one camera's output.
type Relay struct {
	params Params
	// served is the stream gortsplib writes itself, for the readers that
	// cannot be fed directly (UDP). direct is never written to: it gives
	// direct readers their SDP, SSRCs and session handling.
	served *gortsplib.ServerStream
	direct *gortsplib.ServerStream
	tracks []*track

	// mu guards everything below. It is never held beyond the function
	// that takes it.
	mu         sync.Mutex
	join       JoinMode
	waitingIDR bool
	segment    *Segment // the upstream currently allowed to write
	arena      []byte   // where units are packetised; full chunks are left to the GC
	gop        []unit   // the units since the last IDR
	gopBytes   int
	gopValid   bool
	heldAudio  []unit // audio units waiting to go out with the next video unit
	batch      []unit // scratch: the units being published
	fan        fanOut // scratch: writing them to the direct readers
	readers    map[*directReader]struct{}
	viaServer  int // readers fed by gortsplib
	// servedJoining counts gortsplib's readers between their GOP replay
	// and gortsplib's activation of their session (Started). Meanwhile the
	// live units for gortsplib's stream are held in servedHeld and
	// written when the last joiner is active, so that a joiner misses no
	// unit between its replay and its first live packet; direct readers
	// and the upstream do not wait.
	servedJoining     int
	servedHeld        []unit
	servedHeldPackets int
	nextSerial        uint64
	closed            bool
	stats             Stats
	dropped           atomic.Uint64 // direct readers dropped (too slow, write error)
	// sent counts what the direct path wrote to readers (gortsplib's
	// readers are counted by its stream's own statistics).
	sent sentCounters
	// received counts what the upstreams received (Segment.Received).
	received sentCounters
}

// sentCounters are shared by a relay's direct readers.
type sentCounters struct {
	bytes, packets atomic.Uint64
}

// Stats counts what the relay forwarded.
type Stats struct {
	VideoFrames   uint64
	AudioFrames   uint64
	DroppedFrames uint64 // before the first IDR of a segment
	// DroppedAudio counts audio units not forwarded: ahead of the video
	// at a segment's start (see alignAudio), or too large to send.
	DroppedAudio uint64
	Segments     uint64 // upstreams attached
	RTPPackets   uint64 // packets built
	// ReadersDropped counts the readers cut off for falling too far
	// behind or for a failed write (their connection is closed).
	ReadersDropped uint64
	LastFrame      time.Time
	// BytesReceived and PacketsReceived count the RTP payloads the
	// upstreams received from Google; BytesSent and PacketsSent what went
	// out to every reader (headers included).
	BytesReceived   uint64
	PacketsReceived uint64
	BytesSent       uint64
	PacketsSent     uint64
}

// maxAudioLead is the most audio dropped at a segment's start to bring it
// back in line with the video; a larger lead is not the swap's doing.
const maxAudioLead = 2 * time.Second

// alignAudio places the first audio unit of a segment (after the first)
// against the video, and reports whether to forward it.
//
// Each track's timeline squeezes an outage out on its own, so after a swap
// audio and video would resume in line with each other only by chance, and
// a camera regenerated every few minutes would drift apart a little more
// each time. Instead, the segment's first audio unit goes out at the
// video's position plus the time since the video's last unit: audio that
// would lag is moved forward (a short silence), audio that would lead is
// dropped until the video has caught up.
func (r *Relay) alignAudio(t *track) bool {
	v := r.tracks[0]
	if !v.tl.sentAny {
		return true
	}
	due := v.tl.ntp().Add(time.Since(r.stats.LastFrame))
	at := t.tl.extAt(due)
	next := t.tl.ext + uint64(t.tl.stepOrDefault())
	switch {
	case at >= next:
		t.tl.startAt(uint32(at))
	case next-at <= uint64(maxAudioLead.Seconds()*float64(t.tl.clockRate)):
		return false
	}
	return true
}

// New creates the output streams on srv (which must be started) for an
// upstream with params p.
func New(srv *gortsplib.Server, p Params) (*Relay, error) {
	if len(p.SPS) == 0 || len(p.PPS) == 0 {
		return nil, fmt.Errorf("relay: the upstream announced no H.264 SPS/PPS")
	}
	if p.Audio != nil && p.OpusChannels > 0 {
		return nil, fmt.Errorf("relay: an output carries one audio track, AAC or Opus, not both")
	}
	r := &Relay{params: p, waitingIDR: true, readers: map[*directReader]struct{}{}}
	video := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{
		PayloadTyp: videoPT, SPS: p.SPS, PPS: p.PPS, PacketizationMode: 1}}}
	r.tracks = append(r.tracks, &track{media: video, index: 0, pt: videoPT,
		tl: timeline{defaultStep: 90000 / 25, clockRate: 90000}})
	if p.Audio != nil {
		audio := &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{&format.MPEG4Audio{
			PayloadTyp: audioPT, ProfileLevelID: 1, Config: p.Audio, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}}}
		r.tracks = append(r.tracks, &track{media: audio, index: 1, pt: audioPT,
			tl: timeline{defaultStep: mpeg4audio.SamplesPerAccessUnit, clockRate: uint64(p.Audio.SampleRate)}})
	}
	if p.OpusChannels > 0 {
		audio := &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{&format.Opus{
			PayloadTyp: audioPT, ChannelCount: p.OpusChannels}}}
		r.tracks = append(r.tracks, &track{media: audio, index: 1, pt: audioPT, opus: true,
			tl: timeline{defaultStep: opusFrameTicks, clockRate: 48000}})
	}
	desc := &description.Session{}
	for _, t := range r.tracks {
		desc.Medias = append(desc.Medias, t.media)
	}
	r.served = &gortsplib.ServerStream{Server: srv, Desc: desc}
	if err := r.served.Initialize(); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r.direct = &gortsplib.ServerStream{Server: srv, Desc: desc}
	if err := r.direct.Initialize(); err != nil {
		r.served.Close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	stats := r.direct.Stats()
	for _, t := range r.tracks {
		for _, f := range stats.Medias[t.media].Formats {
			t.ssrc = f.LocalSSRC
		}
	}
	return r, nil
}

// JoinMode is how a reader that joins a live stream gets its first
// picture (the direct path's readers; gortsplib's get JoinReplay when
// the cached GOP fits their write queue, else start with the live units).
type JoinMode int

const (
	// JoinPaced sends the cached GOP's IDR at once, then the rest of the
	// GOP and the live units paced by their media time, faster than real
	// time, until the reader is live. The reader has a picture at once,
	// and one that stamps frames by their arrival (Frigate's ffmpeg, with
	// -use_wallclock_as_timestamps) sees times that grow as the media's do.
	JoinPaced JoinMode = iota
	// JoinReplay sends the cached GOP at once: a picture at once, but a
	// reader that stamps by arrival sees a GOP of frames within a few
	// milliseconds, and its muxer complains of non-monotonic DTS.
	JoinReplay
	// JoinKeyframe sends nothing until the camera's next IDR, as a relay
	// without a cache does: clean timestamps, but a wait of up to a GOP.
	JoinKeyframe
)

// JoinModes names the modes, in JoinMode order, as settings spell them.
var JoinModes = []string{"paced", "replay", "keyframe"}

// ParseJoinMode reads a mode's name.
func ParseJoinMode(s string) (JoinMode, error) {
	for i, n := range JoinModes {
		if strings.EqualFold(s, n) {
			return JoinMode(i), nil
		}
	}
	return 0, fmt.Errorf("relay: unknown late-join mode %q (want one of %s)", s, strings.Join(JoinModes, ", "))
}

func (m JoinMode) String() string {
	if int(m) < len(JoinModes) {
		return JoinModes[m]
	}
	return fmt.Sprintf("JoinMode(%d)", int(m))
}

// SetJoin sets how late joiners start (JoinPaced unless set).
func (r *Relay) SetJoin(m JoinMode) {
	r.mu.Lock()
	r.join = m
	r.mu.Unlock()
}

// Stream is the stream for DESCRIBE, and for the SETUP of a reader that
// will be fed directly (direct) or by gortsplib.
func (r *Relay) Stream(direct bool) *gortsplib.ServerStream {
	if direct {
		return r.direct
	}
	return r.served
}

// Params are the codec parameters the stream was built for.
func (r *Relay) Params() Params { return r.params }

// Close ends the streams, which disconnects every reader.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closed = true
	readers := r.readers
	r.readers = map[*directReader]struct{}{}
	r.mu.Unlock()
	for d := range readers {
		d.stop()
	}
	r.served.Close()
	r.direct.Close()
}

// Stats returns a copy of the counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	st := r.stats
	r.mu.Unlock()
	st.ReadersDropped = r.dropped.Load()
	st.BytesReceived, st.PacketsReceived = r.received.bytes.Load(), r.received.packets.Load()
	st.BytesSent, st.PacketsSent = r.sent.bytes.Load(), r.sent.packets.Load()
	if ss := r.served.Stats(); ss != nil {
		st.BytesSent += ss.BytesSent
		st.PacketsSent += ss.RTPPacketsSent
	}
	return st
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
	for _, t := range r.tracks {
		t.tl.newSegment()
	}
	r.stats.Segments++
	return r.segment
}

// Received counts one RTP packet of payloadBytes the upstream received
// (whether or not it is forwarded), for the camera's statistics.
func (s *Segment) Received(payloadBytes int) {
	s.r.received.packets.Add(1)
	s.r.received.bytes.Add(uint64(payloadBytes))
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
	if r.segment != s || r.closed {
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
	t := r.tracks[0]
	// Parameter sets go in band before every IDR that lacks them, so a
	// decoder that joins (or a recorder that cuts a segment) there can
	// start.
	var prefix [2][]byte
	if idr {
		sps, pps := parameterSetsMissing(au)
		if sps {
			prefix[0] = r.params.SPS
		}
		if pps {
			prefix[1] = r.params.PPS
		}
	}
	out := t.tl.next(ts)
	dst := r.reserve(h264Bound(au, prefix[:]...))
	start, packets := len(dst), t.packets
	dst = t.appendH264(dst, out, prefix[:], au)
	u := r.seal(0, dst, start, t.tl.ntp())
	u.key = idr
	u.packets = t.packets - packets
	r.stats.RTPPackets += uint64(t.packets - packets)

	if idr {
		r.startGOP()
	}
	r.remember(u)
	r.stats.VideoFrames++
	r.stats.LastFrame = time.Now()
	r.publish(u)
	return nil
}

// WriteAudio forwards one audio access unit (AAC, or one Opus packet) with
// its upstream RTP timestamp.
func (s *Segment) WriteAudio(ts uint32, au []byte) error {
	r := s.r
	if len(r.tracks) < 2 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.segment != s || r.closed {
		return nil
	}
	// Audio waits for the video's IDR so that every reader's stream (and
	// every recording segment) starts with a decodable picture.
	if r.waitingIDR {
		return nil
	}
	t := r.tracks[1]
	if t.opus && len(au) > maxPayload {
		// An Opus packet cannot be fragmented (RFC 7587 §4.2); none this
		// large comes from a camera (a 20 ms frame is at most 1275 bytes).
		r.stats.DroppedAudio++
		return nil
	}
	if !t.tl.started && t.tl.sentAny {
		if !r.alignAudio(t) {
			r.stats.DroppedAudio++
			return nil
		}
	}
	out := t.tl.next(ts)
	var dst []byte
	start, packets := 0, t.packets
	if t.opus {
		dst = r.reserve(interleavedHeader + rtpHeader + len(au))
		start = len(dst)
		dst = t.appendOpus(dst, out, au)
	} else {
		dst = r.reserve(aacBound(au))
		start = len(dst)
		dst = t.appendAAC(dst, out, au)
	}
	u := r.seal(1, dst, start, t.tl.ntp())
	u.packets = t.packets - packets
	r.stats.RTPPackets += uint64(t.packets - packets)

	r.remember(u)
	r.stats.AudioFrames++
	r.publish(u)
	return nil
}

// reserve returns the arena with room for n more bytes, starting a new
// chunk when the current one is short. Units already handed out keep the
// old chunk alive until every reader has written them.
func (r *Relay) reserve(n int) []byte {
	if cap(r.arena)-len(r.arena) < n {
		r.arena = make([]byte, 0, max(arenaChunk, n))
	}
	return r.arena
}

// seal makes the bytes appended to the arena since start a unit, which is
// never written again.
func (r *Relay) seal(track int, dst []byte, start int, at time.Time) unit {
	r.arena = dst
	u := unit{track: track, serial: r.nextSerial, data: dst[start:len(dst):len(dst)], at: at}
	r.nextSerial++
	return u
}

func (r *Relay) startGOP() {
	clear(r.gop)
	r.gop = r.gop[:0]
	r.gopBytes = 0
	r.gopValid = true
}

func (r *Relay) remember(u unit) {
	if !r.gopValid {
		return
	}
	if r.gopBytes+len(u.data) > gopMaxBytes {
		clear(r.gop)
		r.gop = r.gop[:0]
		r.gopValid = false
		return
	}
	r.gop = append(r.gop, u)
	r.gopBytes += len(u.data)
}

// publish hands a new unit to every reader. Audio waits (briefly) for the
// next video unit so that a reader gets both in one write.
func (r *Relay) publish(u unit) {
	if r.viaServer > 0 {
		if r.servedJoining > 0 {
			r.servedHeld = append(r.servedHeld, u)
			r.servedHeldPackets += int(u.packets)
			if r.servedHeldPackets > servedHoldMax {
				// The joiners' PLAY responses are late (the hold is
				// usually microseconds): what is held would no longer
				// fit the readers' queues with a replay. Send it now; a
				// joiner not yet active misses it and starts at the next
				// IDR, which is better than every reader losing packets.
				r.releaseServedHeld()
			}
		} else {
			r.writeServed(u)
		}
	}
	if len(r.readers) == 0 {
		clear(r.heldAudio)
		r.heldAudio = r.heldAudio[:0]
		return
	}
	if u.track != 0 && len(r.heldAudio) < maxHeldAudio {
		r.heldAudio = append(r.heldAudio, u)
		return
	}
	r.batch = append(r.batch[:0], r.heldAudio...)
	clear(r.heldAudio)
	r.heldAudio = r.heldAudio[:0]
	r.batch = append(r.batch, u)
	now := time.Now()
	for _, t := range r.tracks {
		if t.tl.sentAny && now.Sub(t.lastSR) >= senderReportPeriod {
			t.lastSR = now
			r.batch = append(r.batch, r.senderReport(t))
		}
	}
	f := &r.fan
	f.now = time.Time{}
	for d := range r.readers {
		if !d.offer(r.batch, f) {
			delete(r.readers, d)
		}
	}
	clear(f.pick)
	clear(r.batch)
	if f.bytes > 0 {
		r.sent.bytes.Add(f.bytes)
		r.sent.packets.Add(f.packets)
		f.bytes, f.packets = 0, 0
	}
}

// senderReport is a unit with t's RTCP sender report, for direct readers
// (gortsplib sends its own to the readers it feeds).
func (r *Relay) senderReport(t *track) unit {
	dst := r.reserve(interleavedHeader + srSize)
	start := len(dst)
	u := r.seal(t.index, t.appendSenderReport(dst), start, t.tl.ntp())
	u.control = true
	return u
}
