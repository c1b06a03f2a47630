package relay_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/relay"
)

// joinArrivals joins url after a GOP was written and returns when each
// video access unit (its marker packet) arrived, relative to the first.
func joinArrivals(t *testing.T, url string, n int) []time.Duration {
	t.Helper()
	c, desc := describe(t, url)
	var h *format.H264
	medi := desc.FindFormat(&h)
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	at := make(chan time.Time, 1000)
	c.OnPacketRTP(medi, h, func(p *rtp.Packet) {
		if p.Marker {
			at <- time.Now()
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	var out []time.Duration
	var first time.Time
	for len(out) < n {
		select {
		case tm := <-at:
			if first.IsZero() {
				first = tm
			}
			out = append(out, tm.Sub(first))
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d access units arrived", len(out), n)
		}
	}
	return out
}

// TestPacedJoin: a joiner gets the cached GOP's IDR at once and the frames
// after it spread out by their media time (at twice their rate here), not
// in one burst; with JoinReplay they come in one burst.
func TestPacedJoin(t *testing.T) {
	aus, sps, pps := clipAUs(t)
	for _, mode := range []relay.JoinMode{relay.JoinPaced, relay.JoinReplay} {
		t.Run(mode.String(), func(t *testing.T) {
			r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps})
			r.SetJoin(mode)
			seg := r.BeginSegment()
			for i, au := range aus[:25] { // one GOP: 1 s of media
				if err := seg.WriteVideo(uint32(i)*3600, au); err != nil {
					t.Fatal(err)
				}
			}
			arr := joinArrivals(t, url, 25)
			spread := arr[24]
			t.Logf("%s: 25 cached frames over %s", mode, spread.Round(time.Millisecond))
			switch mode {
			case relay.JoinPaced:
				// 0.96 s of media at 2x: 0.48 s; a burst would be a few ms.
				if spread < 300*time.Millisecond {
					t.Fatalf("the paced GOP came in %s", spread)
				}
			case relay.JoinReplay:
				if spread > 300*time.Millisecond {
					t.Fatalf("the replayed GOP took %s", spread)
				}
			}
		})
	}
}

// TestKeyframeJoin: with JoinKeyframe a joiner gets nothing of the cached
// GOP; its first access unit is the camera's next IDR.
func TestKeyframeJoin(t *testing.T) {
	aus, sps, pps := clipAUs(t)
	r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps})
	r.SetJoin(relay.JoinKeyframe)
	seg := r.BeginSegment()
	for i, au := range aus[:10] {
		if err := seg.WriteVideo(uint32(i)*3600, au); err != nil {
			t.Fatal(err)
		}
	}
	c, desc := describe(t, url)
	var h *format.H264
	medi := desc.FindFormat(&h)
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	first := make(chan rtp.Packet, 1)
	c.OnPacketRTP(medi, h, func(p *rtp.Packet) {
		select {
		case first <- *p:
		default:
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	// Frames after the cached ones, then the next GOP's IDR (aus[25]).
	for i := 10; i <= 25; i++ {
		if err := seg.WriteVideo(uint32(i)*3600, aus[i]); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case p := <-first:
		if p.Timestamp != 25*3600 || !startsIDR(p.Payload) {
			t.Fatalf("first packet ts %d (IDR %v), want the IDR at %d", p.Timestamp, startsIDR(p.Payload), 25*3600)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing arrived")
	}
}

// TestPacedJoinVideoOnly: a reader that set up only the video of a stream
// with audio, on channels of its own, gets from a paced join its video on
// those channels and nothing on any other: the cached GOP's audio is left
// out as the live audio is.
func TestPacedJoinVideoOnly(t *testing.T) {
	aus, sps, pps := clipAUs(t)
	r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps, OpusChannels: 2})
	seg := r.BeginSegment()
	for i, au := range aus[:25] {
		if err := seg.WriteVideo(uint32(i)*3600, au); err != nil {
			t.Fatal(err)
		}
		if err := seg.WriteAudio(uint32(i)*1920, []byte{0xfc, 1, 2}); err != nil {
			t.Fatal(err)
		}
	}
	rr := dialRaw(t, strings.TrimSuffix(strings.TrimPrefix(url, "rtsp://"), "/cam"))
	rr.request("DESCRIBE", url)
	if st := rr.request("SETUP", url+"/trackID=0", "Transport: RTP/AVP/TCP;unicast;interleaved=4-5"); !strings.Contains(st, "200") {
		t.Fatal(st)
	}
	if st := rr.request("PLAY", url); !strings.Contains(st, "200") {
		t.Fatal(st)
	}
	rr.readFor(time.Second) // the paced GOP: 0.96 s of media at twice its rate
	video := 0
	for _, p := range rr.packets {
		switch p.channel {
		case 4:
			video++
		case 5: // the video's sender report
		default:
			t.Fatalf("a packet on channel %d of a reader that set up channels 4-5", p.channel)
		}
	}
	if video == 0 {
		t.Fatal("no video arrived")
	}
}
