package relay_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
)

// clipAUs splits the committed test clip into access units (x264 writes
// one slice per picture, with SPS/PPS before every IDR).
func clipAUs(t testing.TB) (aus [][][]byte, sps, pps []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "clip.h264"))
	if err != nil {
		t.Fatal(err)
	}
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	var cur [][]byte
	for _, n := range nalus {
		typ := h264.NALUType(n[0] & 0x1f)
		switch typ {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		case h264.NALUTypeAccessUnitDelimiter:
			continue
		}
		cur = append(cur, n)
		if typ == h264.NALUTypeIDR || typ == h264.NALUTypeNonIDR {
			aus = append(aus, cur)
			cur = nil
		}
	}
	return aus, sps, pps
}

// startRelay serves a relay at /cam through the daemon's own RTSP server,
// so that readers take the same paths (direct over TCP, gortsplib's over
// UDP) as they do in production.
func startRelay(t *testing.T, p relay.Params) (*relay.Relay, string) {
	t.Helper()
	r, url, _ := startRelayWith(t, p, &rtspserver.FixedPath{}, nil)
	return r, url
}

// startRelayWith is startRelay serving path (whose Log the readers' feeds
// log to), with the server's options adjusted; it also returns the server.
func startRelayWith(t *testing.T, p relay.Params, path *rtspserver.FixedPath, adjust func(*rtspserver.Options)) (*relay.Relay, string, *rtspserver.Server) {
	t.Helper()
	o := rtspserver.Options{Address: "127.0.0.1:0", StartTimeout: 5 * time.Second, Resolver: rtspserver.Paths{"cam": path}}
	if adjust != nil {
		adjust(&o)
	}
	srv, err := rtspserver.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	r, err := relay.New(srv.Gortsplib(), p)
	if err != nil {
		t.Fatal(err)
	}
	path.Relay = r
	t.Cleanup(r.Close)
	return r, "rtsp://" + srv.Addr() + "/cam", srv
}

// playStuck starts a reader that reads nothing once its first packet has
// arrived, until the test ends: its socket fills and it falls behind.
func playStuck(t *testing.T, url string) {
	t.Helper()
	stuck, desc := describe(t, url)
	if err := stuck.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	stuck.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) { <-block })
	if _, err := stuck.Play(nil); err != nil {
		t.Fatal(err)
	}
}

// checkGotAll waits until good has every packet of frames frames of r
// (all alike) and checks their sequence numbers run on without a gap.
func checkGotAll(t *testing.T, r *relay.Relay, good *received, frames int) {
	t.Helper()
	perFrame := int(r.Stats().RTPPackets) / frames
	pkts := good.waitFor(t, frames*perFrame)
	for i := 1; i < len(pkts); i++ {
		if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 {
			t.Fatalf("the good reader lost packets at %d", i)
		}
	}
}

type received struct {
	mu   sync.Mutex
	pkts []rtp.Packet
	idr  []bool // per packet: does it start an IDR access unit
	got  chan struct{}
}

// describe connects a gortsplib client (closed when the test ends) and
// reads the stream's SDP.
func describe(t *testing.T, url string) (*gortsplib.Client, *description.Session) {
	t.Helper()
	c := &gortsplib.Client{}
	u, _ := base.ParseURL(url)
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	return c, desc
}

// play connects a gortsplib client and records every video packet.
func play(t *testing.T, url string) *received {
	t.Helper()
	c, desc := describe(t, url)
	var f *format.H264
	medi := desc.FindFormat(&f)
	if medi == nil {
		t.Fatal("no H.264 in the SDP")
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	rec := &received{got: make(chan struct{}, 100000)}
	c.OnPacketRTP(medi, f, func(p *rtp.Packet) {
		rec.mu.Lock()
		rec.pkts = append(rec.pkts, *p)
		rec.idr = append(rec.idr, startsIDR(p.Payload))
		rec.mu.Unlock()
		rec.got <- struct{}{}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	return rec
}

// startsIDR reads the first NALU type of a packet (single, STAP-A or FU-A start).
func startsIDR(payload []byte) bool {
	if len(payload) < 2 {
		return false
	}
	switch typ := payload[0] & 0x1f; typ {
	case 24: // STAP-A: SPS/PPS aggregated before the IDR
		return true
	case 28: // FU-A
		return payload[1]&0x80 != 0 && payload[1]&0x1f == 5
	default:
		return typ == 5 || typ == 7
	}
}

func (r *received) waitFor(t *testing.T, n int) []rtp.Packet {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.pkts) >= n {
			out := append([]rtp.Packet(nil), r.pkts...)
			r.mu.Unlock()
			return out
		}
		r.mu.Unlock()
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("received %d packets, want %d", len(r.pkts), n)
		}
	}
}

// TestSwapIsInvisible feeds two upstream segments with unrelated timestamps
// and checks what a reader sees: one SSRC, continuous sequence numbers,
// timestamps that continue one frame after the last, and an IDR first.
func TestSwapIsInvisible(t *testing.T) {
	aus, sps, pps := clipAUs(t)
	r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps})
	rec := play(t, url)

	// Segment 1 starts mid-GOP (frame 5): the relay waits for frame 25's IDR.
	seg := r.BeginSegment()
	ts := uint32(1_000_000)
	for _, au := range aus[5:40] {
		if err := seg.WriteVideo(ts, au); err != nil {
			t.Fatal(err)
		}
		ts += 3600
	}
	// Segment 2: a new upstream whose clock is elsewhere, also mid-GOP.
	old := seg
	seg = r.BeginSegment()
	ts2 := uint32(7)
	for i, au := range aus[3:60] {
		if err := seg.WriteVideo(ts2, au); err != nil {
			t.Fatal(err)
		}
		ts2 += 3600
		// The old upstream, still winding down, is ignored.
		if err := old.WriteVideo(ts+uint32(i)*3600, au); err != nil {
			t.Fatal(err)
		}
	}
	stats := r.Stats()
	if stats.VideoFrames != 15+35 || stats.DroppedFrames != 20+22 || stats.Segments != 2 {
		t.Fatalf("stats %+v", stats)
	}
	pkts := rec.waitFor(t, int(r.Stats().RTPPackets))
	if !rec.idr[0] {
		t.Fatal("the first packet a reader gets must start an IDR")
	}
	ssrc := pkts[0].SSRC
	frames := 0
	for i, p := range pkts {
		if p.Marker {
			frames++
		}
		if p.SSRC != ssrc {
			t.Fatalf("packet %d: SSRC changed %d -> %d", i, ssrc, p.SSRC)
		}
		if i == 0 {
			continue
		}
		if p.SequenceNumber != pkts[i-1].SequenceNumber+1 {
			t.Fatalf("packet %d: sequence %d after %d", i, p.SequenceNumber, pkts[i-1].SequenceNumber)
		}
		if d := int32(p.Timestamp - pkts[i-1].Timestamp); d != 0 && d != 3600 {
			t.Fatalf("packet %d: timestamp step %d, want 0 or one frame (3600)", i, d)
		}
	}
	if frames != 50 {
		t.Fatalf("reader got %d frames, want 50", frames)
	}
}

// TestLateJoinerGetsGOPFirst: a reader joining mid-GOP gets the cached GOP
// from its IDR, then the live packets, with no gap between the two, while
// the feed keeps running concurrently.
func TestLateJoinerGetsGOPFirst(t *testing.T) {
	aus, sps, pps := clipAUs(t)
	r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps})
	seg := r.BeginSegment()
	ts := uint32(0)
	write := func(from, to int, pace time.Duration) {
		for _, au := range aus[from:to] {
			if err := seg.WriteVideo(ts, au); err != nil {
				t.Error(err)
				return
			}
			ts += 3600
			time.Sleep(pace) // a camera's pace, so the join lands mid-feed
		}
	}
	write(0, 37, 0) // the GOP that starts at frame 25 holds 12 frames now
	done := make(chan struct{})
	go func() { defer close(done); write(37, 150, time.Millisecond) }()
	rec := play(t, url) // joins while frames 37.. are being written
	<-done
	pkts := rec.waitFor(t, 1)
	if !rec.idr[0] {
		t.Fatal("a late joiner must start at an IDR")
	}
	deadline := time.After(10 * time.Second)
	for last := pkts[len(pkts)-1]; !(last.Marker && last.Timestamp == ts-3600); last = pkts[len(pkts)-1] {
		select {
		case <-rec.got:
			pkts = rec.waitFor(t, len(pkts)+1)
		case <-deadline:
			t.Fatalf("the last frame never arrived (%d packets)", len(pkts))
		}
	}
	for i := 1; i < len(pkts); i++ {
		if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 {
			t.Fatalf("gap between packet %d and %d: %d -> %d", i-1, i, pkts[i-1].SequenceNumber, pkts[i].SequenceNumber)
		}
	}
}

var testAudio = &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 1}

// TestAudioOnlyReaderGetsRemappedChannels: a reader that sets up only the
// audio track gets it on interleaved channels 0-1 instead of the 2-3 the
// shared units carry: the direct path rewrites them for it, and the
// packets are valid RFC 3640 AAC with continuous sequence numbers.
func TestAudioOnlyReaderGetsRemappedChannels(t *testing.T) {
	aus, sps, pps := clipAUs(t)
	r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps, Audio: testAudio})
	c, desc := describe(t, url)
	var af *format.MPEG4Audio
	medi := desc.FindFormat(&af)
	if medi == nil {
		t.Fatal("no AAC in the SDP")
	}
	if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		t.Fatal(err)
	}
	got := make(chan *rtp.Packet, 1000)
	c.OnPacketRTP(medi, af, func(p *rtp.Packet) { got <- p })
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	seg := r.BeginSegment()
	frame := bytes.Repeat([]byte{0x21}, 200)
	for i, au := range aus[:30] {
		if err := seg.WriteVideo(uint32(i)*3600, au); err != nil {
			t.Fatal(err)
		}
		if err := seg.WriteAudio(uint32(i)*1024, frame); err != nil {
			t.Fatal(err)
		}
	}
	// Audio rides with the next video frame (to share its write), so one
	// more frame lets the last audio go.
	if err := seg.WriteVideo(30*3600, aus[30]); err != nil {
		t.Fatal(err)
	}
	var prev *rtp.Packet
	for i := 0; i < 30; i++ {
		var p *rtp.Packet
		select {
		case p = <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("audio packet %d never arrived", i)
		}
		if len(p.Payload) != 4+len(frame) || p.Payload[1] != 16 || int(p.Payload[2])<<5|int(p.Payload[3])>>3 != len(frame) || !p.Marker {
			t.Fatalf("packet %d is not one AAC access unit with its AU-header: % x", i, p.Payload[:4])
		}
		if prev != nil && (p.SequenceNumber != prev.SequenceNumber+1 || p.Timestamp-prev.Timestamp != 1024) {
			t.Fatalf("packet %d: seq %d ts %d after seq %d ts %d", i, p.SequenceNumber, p.Timestamp, prev.SequenceNumber, prev.Timestamp)
		}
		prev = p
	}
}

// TestSlowReaderIsDroppedAlone: a reader that stops reading is cut off once
// its backlog passes the limit, while another reader of the same camera
// gets every frame.
func TestSlowReaderIsDroppedAlone(t *testing.T) {
	_, sps, pps := clipAUs(t)
	r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps})
	good := play(t, url)
	playStuck(t, url)

	// 100 kB IDR frames at 200 a second: 20 MB/s, which the stuck reader's
	// socket buffers and backlog limit cannot absorb for long.
	idr := append([]byte{0x65}, bytes.Repeat([]byte{0x55}, 100_000)...)
	seg := r.BeginSegment()
	frames := 0
	for r.Stats().ReadersDropped == 0 {
		if frames == 2000 {
			t.Fatal("the stuck reader was never dropped")
		}
		if err := seg.WriteVideo(uint32(frames)*3600, [][]byte{idr}); err != nil {
			t.Fatal(err)
		}
		frames++
		time.Sleep(5 * time.Millisecond) // the camera's pace, so the good reader keeps up
	}
	t.Logf("dropped after %d frames (%.1f MB)", frames, float64(frames*len(idr))/1e6)
	// The good reader got every frame: each is SPS, PPS and the IDR's
	// FU-A fragments, with continuous sequence numbers.
	checkGotAll(t, r, good, frames)
}
