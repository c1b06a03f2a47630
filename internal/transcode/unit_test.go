package transcode

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

// Durations from RFC 6716 §3.1: config (TOC >> 3) and code (TOC & 3).
func TestOpusDuration(t *testing.T) {
	for _, c := range []struct {
		p    []byte
		want int
		ok   bool
	}{
		{[]byte{0xF8, 0xFF, 0xFE}, 960, true}, // config 31 CELT FB 20 ms, code 0
		{[]byte{0x78}, 960, true},             // config 15 hybrid FB 20 ms: a TOC alone is a valid (empty) frame
		{[]byte{0x70}, 480, true},             // config 14 hybrid FB 10 ms
		{[]byte{0x00}, 480, true},             // config 0 SILK NB 10 ms
		{[]byte{0x18}, 2880, true},            // config 3 SILK NB 60 ms
		{[]byte{0x10}, 1920, true},            // config 2 SILK NB 40 ms
		{[]byte{0x80}, 120, true},             // config 16 CELT NB 2.5 ms
		{[]byte{0xF9, 1, 1}, 1920, true},      // code 1: two frames
		{[]byte{0xFA, 1, 1}, 1920, true},      // code 2: two frames
		{[]byte{0xFB, 0x06}, 5760, true},      // code 3: six 20 ms frames = 120 ms
		{[]byte{0xFB, 0x07}, 0, false},        // code 3: 140 ms is too long
		{[]byte{0x1B, 0x03}, 0, false},        // code 3: three 60 ms frames
		{[]byte{0xFB, 0x00}, 0, false},        // code 3: no frames
		{[]byte{0xFB}, 0, false},              // code 3 without its count byte
		{nil, 0, false},
	} {
		got, ok := opusDuration(c.p)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("opusDuration(% x) = %d, %v; want %d, %v", c.p, got, ok, c.want, c.ok)
		}
	}
	for _, s := range opusSilence {
		if got, ok := opusDuration(s.frame); !ok || got != s.samples {
			t.Errorf("silence frame % x lasts %d, %v; want %d", s.frame, got, ok, s.samples)
		}
	}
}

// The Ogg stream reads back with pion's reader, checksums on: headers
// first, then one page per packet with the running sample count.
func TestOggWriter(t *testing.T) {
	var buf bytes.Buffer
	o := newOggWriter(&buf, 7)
	if err := o.writeHeaders(); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{0xF8}, 255*3) // a multiple of 255 needs a 0 lacing value
	packets := [][]byte{{0xF8, 0xFF, 0xFE}, big, {0xF0, 1, 2, 3}}
	durations := []int{960, 960, 480}
	for i, p := range packets {
		if err := o.writePacket(p, durations[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.writePacket(make([]byte, oggMaxPacket+1), 960); !errors.Is(err, errPacketTooLarge) {
		t.Fatalf("oversized packet: %v", err)
	}
	r, head, err := oggreader.NewWith(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if head.Channels != 2 || head.PreSkip != 0 || head.SampleRate != 48000 {
		t.Fatalf("OpusHead %+v", head)
	}
	tags, _, err := r.ParseNextPage()
	if err != nil || !bytes.HasPrefix(tags, []byte("OpusTags")) {
		t.Fatalf("second page: %q, %v", tags, err)
	}
	var granule uint64
	for i, p := range packets {
		payload, h, err := r.ParseNextPage()
		if err != nil {
			t.Fatalf("page of packet %d: %v", i, err)
		}
		granule += uint64(durations[i])
		if !bytes.Equal(payload, p) || h.GranulePosition != granule || h.Serial != 7 {
			t.Fatalf("packet %d: %d bytes, granule %d, serial %d", i, len(payload), h.GranulePosition, h.Serial)
		}
	}
	if _, _, err := r.ParseNextPage(); err != io.EOF {
		t.Fatalf("after the last page: %v", err)
	}
}

func adtsStream(t testing.TB, aus ...[]byte) []byte {
	t.Helper()
	var ps mpeg4audio.ADTSPackets
	for _, au := range aus {
		ps = append(ps, &mpeg4audio.ADTSPacket{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 1, AU: au})
	}
	b, err := ps.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Frames split anywhere across reads, with garbage in between, come out
// whole and in order.
func TestADTSReader(t *testing.T) {
	a, b, c := []byte("first unit"), bytes.Repeat([]byte{0xFF}, 300), []byte{1}
	stream := adtsStream(t, a, b)
	stream = append(stream, "garbage \xff\xf1 more"...)
	stream = append(stream, adtsStream(t, c)...)
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(stream),
		"bytewise": iotest.OneByteReader(bytes.NewReader(stream)),
		"halves":   iotest.HalfReader(bytes.NewReader(stream)),
	} {
		ar := newADTSReader(r)
		for i, want := range [][]byte{a, b, c} {
			got, err := ar.next()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: unit %d = %q, %v", name, i, got, err)
			}
		}
		if _, err := ar.next(); err != io.EOF {
			t.Fatalf("%s: at the end: %v", name, err)
		}
		if ar.skipped == 0 {
			t.Fatalf("%s: the garbage was not counted", name)
		}
	}
}

// A header with a CRC (protection_absent 0) is 9 bytes long.
func TestADTSFrameWithCRC(t *testing.T) {
	f := adtsStream(t, []byte("xy"))
	f[1] &^= 1                    // protection_absent = 0
	f = append(f[:7], 0xAB, 0xCD) // CRC
	f = append(f, 'x', 'y')       // the unit
	f[4], f[5] = byte(11>>3), byte(11&7)<<5|f[5]&0x1F
	au, n := adtsFrame(f)
	if string(au) != "xy" || n != 11 {
		t.Fatalf("adtsFrame = %q, %d", au, n)
	}
}

// The timeline stamps unit n with base + n*1024 and moves to a new base
// where a discontinuity was fed, wrapping around 2^32 like RTP.
func TestTimeline(t *testing.T) {
	var tl timeline
	if _, ok := tl.ts(0); ok {
		t.Fatal("a unit before any input got a timestamp")
	}
	tl.add(0, 0xFFFFFC00)
	tl.add(3000, 1_000_000)
	tl.add(3000, 2_000_000) // two jumps without audio between: the last counts
	tl.add(5120, 7)
	for n, want := range []uint32{0xFFFFFC00, 0, 1024, 2_000_000 + 72, 2_000_000 + 1096, 7, 7 + 1024} {
		if got, _ := tl.ts(uint64(n)); got != want {
			t.Errorf("unit %d: ts %d, want %d", n, got, want)
		}
	}
	if len(tl.segs) != 1 {
		t.Errorf("passed segments kept: %v", tl.segs)
	}
}

// The feeder fills gaps with silence, drops late packets and rebases on
// long jumps and new SSRCs, keeping the timeline exact.
func TestFeeder(t *testing.T) {
	a := &AAC{}
	var buf bytes.Buffer
	tl := &timeline{}
	f := feeder{a: a, og: newOggWriter(&buf, 1), tl: tl}
	frame20 := []byte{0xF8, 1, 2, 3}
	frame10 := []byte{0xF0, 1, 2, 3}
	steps := []struct {
		ts, ssrc uint32
		payload  []byte
	}{
		{1000, 1, frame20},
		{1960, 1, frame20},
		{2920 + 3360, 1, frame10},       // lost 70 ms after 2920: 3×20 + 1×10 of silence
		{2920 + 960, 1, frame20},        // late: dropped
		{2920 + 3360 + 480, 1, frame20}, // in order again
		{500_000, 1, frame20},           // > 2 s ahead: a discontinuity
		{400_000, 1, frame20},           // > 2 s back: another
		{400_960, 2, frame20},           // new SSRC: another
	}
	for _, s := range steps {
		if err := f.write(&packet{ts: s.ts, ssrc: s.ssrc, payload: s.payload}); err != nil {
			t.Fatal(err)
		}
	}
	st := a.Stats()
	if st.SilenceFrames != 4 || st.Late != 1 || st.Discontinuities != 3 {
		t.Fatalf("stats %+v", st)
	}
	// Fed: 960+960 + 70 ms of silence (3360) + 480 + 960 = 6720 samples,
	// then 960 from each rebase.
	if f.og.granule != 6720+3*960 {
		t.Fatalf("granule %d", f.og.granule)
	}
	want := []segment{{0, 1000}, {6720, 500_000}, {7680, 400_000}, {8640, 400_960}}
	if len(tl.segs) != len(want) {
		t.Fatalf("segments %v, want %v", tl.segs, want)
	}
	for i := range want {
		if tl.segs[i] != want[i] {
			t.Fatalf("segments %v, want %v", tl.segs, want)
		}
	}
	// Unit 6 starts at sample 6144, before the first discontinuity.
	if ts, _ := tl.ts(6); ts != 1000+6144 {
		t.Fatalf("unit 6: %d", ts)
	}
	if ts, _ := tl.ts(7); ts != 500_000+7168-6720 {
		t.Fatalf("unit 7: %d", ts)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 8}
	for _, s := range []string{"abc", "defgh", "ijkl", strings.Repeat("z", 20) + "12345678"} {
		if n, err := tb.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got := tb.String(); got != "12345678" {
		t.Fatalf("tail %q", got)
	}
	tb = &tailBuffer{max: 8}
	tb.Write([]byte("abcdef"))
	tb.Write([]byte("ghij"))
	if got := tb.String(); got != "cdefghij" {
		t.Fatalf("tail %q", got)
	}
}

// FindFFmpeg's errors name what was tried.
func TestFindFFmpegMissing(t *testing.T) {
	_, err := FindFFmpeg("nestmtx-no-such-ffmpeg")
	if err == nil || err.Error() != `audio: aac needs ffmpeg, but "nestmtx-no-such-ffmpeg" was not found on PATH` {
		t.Fatalf("missing name: %v", err)
	}
	p := t.TempDir() + "/ffmpeg"
	_, err = FindFFmpeg(p)
	if err == nil || !strings.Contains(err.Error(), `audio: aac needs ffmpeg, but "`+p+`" is not an executable file`) {
		t.Fatalf("missing path: %v", err)
	}
}

// StartAAC fails at once on a path that cannot be run: FindFFmpeg is the
// gate at configuration, this is the second line.
func TestStartAACBogusPath(t *testing.T) {
	p := t.TempDir() + "/no-ffmpeg"
	_, err := StartAAC(t.Context(), Options{FFmpeg: p, Out: func(uint32, []byte) {}})
	if err == nil || !strings.Contains(err.Error(), `transcode: cannot start ffmpeg "`+p+`"`) {
		t.Fatalf("bogus path: %v", err)
	}
	if _, err := StartAAC(t.Context(), Options{Out: func(uint32, []byte) {}}); err == nil {
		t.Fatal("no path: no error")
	}
	if _, err := StartAAC(t.Context(), Options{FFmpeg: "/bin/true"}); err == nil {
		t.Fatal("no Out: no error")
	}
}

func TestAACConfig(t *testing.T) {
	b, err := AACConfig().Marshal()
	if err != nil || !bytes.Equal(b, []byte{0x11, 0x88}) { // AAC-LC, 48 kHz (index 3), mono
		t.Fatalf("AudioSpecificConfig % x, %v", b, err)
	}
}

func FuzzOpusDuration(f *testing.F) {
	for _, seed := range [][]byte{{0xF8, 0xFF, 0xFE}, {0xFB, 0x06}, {0x1B, 0x03}, {0xFB}, {}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		n, ok := opusDuration(p)
		if ok && (n <= 0 || n > maxOpusSamples || n%opusStep != 0) {
			t.Fatalf("opusDuration(% x) = %d", p, n)
		}
	})
}

func FuzzADTSReader(f *testing.F) {
	f.Add(adtsStream(f, []byte("one"), []byte("two")))
	f.Add([]byte{0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x1F, 0xFC})
	f.Add([]byte{0xFF, 0xF0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF})
	f.Add([]byte("\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var whole [][]byte
		ar := newADTSReader(bytes.NewReader(b))
		for {
			au, err := ar.next()
			if err != nil {
				break
			}
			if len(au) == 0 || len(au) > adtsMaxFrame {
				t.Fatalf("unit of %d bytes", len(au))
			}
			whole = append(whole, bytes.Clone(au))
		}
		// Reading a byte at a time finds the same units.
		ar = newADTSReader(iotest.OneByteReader(bytes.NewReader(b)))
		for i := 0; ; i++ {
			au, err := ar.next()
			if err != nil {
				if i != len(whole) {
					t.Fatalf("bytewise: %d units, whole: %d", i, len(whole))
				}
				break
			}
			if i >= len(whole) || !bytes.Equal(au, whole[i]) {
				t.Fatalf("bytewise unit %d differs", i)
			}
		}
	})
}
