package relay_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/relay"
)

// avReader plays every track and keeps each packet with its media type.
type avReader struct {
	video, audio chan rtp.Packet
}

func playAV(t *testing.T, url string) (*avReader, *description.Session) {
	t.Helper()
	c, desc := describe(t, url)
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	rd := &avReader{video: make(chan rtp.Packet, 10000), audio: make(chan rtp.Packet, 10000)}
	c.OnPacketRTPAny(func(m *description.Media, _ format.Format, p *rtp.Packet) {
		if m.Type == description.MediaTypeVideo {
			rd.video <- *p
		} else {
			rd.audio <- *p
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	return rd, desc
}

func next(t *testing.T, c chan rtp.Packet, what string) rtp.Packet {
	t.Helper()
	select {
	case p := <-c:
		return p
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s packet", what)
		return rtp.Packet{}
	}
}

// TestOpusTrack: an output with Opus announces it as RFC 7587 does
// (opus/48000/2) and sends each Opus packet as it is, one per RTP packet,
// with timestamps and sequence numbers continuous across a new segment.
func TestOpusTrack(t *testing.T) {
	aus, sps, pps := clipAUs(t)
	r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps, OpusChannels: 2})
	if got := r.Params().AudioCodec(); got != "opus" {
		t.Fatalf("AudioCodec = %q", got)
	}
	rd, desc := playAV(t, url)
	var opus *format.Opus
	if desc.FindFormat(&opus) == nil {
		t.Fatal("no Opus in the SDP")
	}
	if opus.ClockRate() != 48000 || opus.ChannelCount != 2 {
		t.Fatalf("Opus track: %d Hz, %d channels", opus.ClockRate(), opus.ChannelCount)
	}
	frame := func(i int) []byte { return append([]byte{0xfc}, bytes.Repeat([]byte{byte(i)}, 80)...) }
	seg := r.BeginSegment()
	// Audio before the first IDR is not sent: a recording starts with a picture.
	if err := seg.WriteAudio(500, frame(99)); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := seg.WriteVideo(uint32(i)*3600, aus[i]); err != nil {
			t.Fatal(err)
		}
		if err := seg.WriteAudio(1000+uint32(i)*1920, frame(i)); err != nil { // two 20 ms frames a 40 ms video frame
			t.Fatal(err)
		}
	}
	var prev rtp.Packet
	for i := range 9 { // the last waits for the next video frame
		p := next(t, rd.audio, "audio")
		if !bytes.Equal(p.Payload, frame(i)) {
			t.Fatalf("audio packet %d: payload % x…", i, p.Payload[:2])
		}
		if i > 0 && (p.SequenceNumber != prev.SequenceNumber+1 || p.Timestamp-prev.Timestamp != 1920) {
			t.Fatalf("audio packet %d: seq %d ts %d after seq %d ts %d", i, p.SequenceNumber, p.Timestamp, prev.SequenceNumber, prev.Timestamp)
		}
		prev = p
	}
	if st := r.Stats(); st.AudioFrames != 10 {
		t.Fatalf("%d audio frames forwarded, want 10 (the one before the IDR dropped)", st.AudioFrames)
	}
}

// TestAudioStaysInLineWithVideoAcrossSegments: each track squeezes an
// outage out on its own, so a swap would leave audio and video out of
// line by however differently their streams resumed, and the error would
// grow with every swap. The relay places a segment's first audio against
// the video instead: lagging audio jumps forward, leading audio waits.
func TestAudioStaysInLineWithVideoAcrossSegments(t *testing.T) {
	aus, sps, pps := clipAUs(t)
	r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps, OpusChannels: 2})
	rd, _ := playAV(t, url)
	opus := []byte{0xfc, 1, 2, 3}
	var firstV, firstA uint32
	// offset is how far (in seconds) the audio is ahead of the video at
	// the audio packet p, by their output timestamps since the first.
	offset := func(v, a rtp.Packet) float64 {
		return float64(a.Timestamp-firstA)/48000 - float64(v.Timestamp-firstV)/90000
	}
	vi := 0
	writeV := func(seg *relay.Segment, ts uint32) rtp.Packet {
		t.Helper()
		if err := seg.WriteVideo(ts, aus[vi%len(aus)]); err != nil {
			t.Fatal(err)
		}
		vi++
		var last rtp.Packet
		for last = next(t, rd.video, "video"); !last.Marker; last = next(t, rd.video, "video") {
		}
		return last
	}

	// Segment 1: 20 video frames (0.8 s) but only 10 audio frames (0.2 s).
	seg := r.BeginSegment()
	v := writeV(seg, 0)
	firstV = v.Timestamp
	for i := range 20 {
		if i > 0 {
			v = writeV(seg, uint32(i)*3600)
		}
		if i < 10 {
			if err := seg.WriteAudio(uint32(i)*960, opus); err != nil {
				t.Fatal(err)
			}
		}
	}
	firstA = next(t, rd.audio, "audio").Timestamp

	// Segment 2: the audio would lag by 0.6 s; it moves forward instead.
	seg, vi = r.BeginSegment(), 0
	v = writeV(seg, 777_000)
	if err := seg.WriteAudio(55_000, opus); err != nil {
		t.Fatal(err)
	}
	writeV(seg, 777_000+3600) // lets the held audio go
	for range 9 {
		next(t, rd.audio, "audio") // the rest of segment 1's audio
	}
	a := next(t, rd.audio, "audio")
	if off := offset(v, a); off < -0.01 || off > 0.1 {
		t.Fatalf("after the swap the audio is %.3f s ahead of the video, want about 0", off)
	}

	// Segment 3: audio runs 0.4 s ahead (20 frames against 5 video
	// frames); it is held back until the video catches up.
	for i := range 20 {
		if err := seg.WriteAudio(55_000+uint32(i+1)*960, opus); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		writeV(seg, 777_000+uint32(i+2)*3600)
	}
	for range 20 {
		next(t, rd.audio, "audio")
	}
	dropped := r.Stats().DroppedAudio
	seg, vi = r.BeginSegment(), 0
	base := uint32(1 << 31)
	var got *rtp.Packet
	for i := 0; got == nil && i < 30; i++ {
		v = writeV(seg, base+uint32(i)*3600)
		if err := seg.WriteAudio(9_000+uint32(i)*960, opus); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-rd.audio:
			got = &p
		default:
		}
	}
	if got == nil {
		writeV(seg, base+31*3600)
		p := next(t, rd.audio, "audio")
		got = &p
	}
	if r.Stats().DroppedAudio == dropped {
		t.Fatal("no audio was held back although it led the video by 0.4 s")
	}
	if off := offset(v, *got); off < -0.05 || off > 0.05 {
		t.Fatalf("after the swap the audio is %.3f s ahead of the video, want about 0", off)
	}
}
