package nestsim

import (
	"testing"
	"time"
)

func TestClipShape(t *testing.T) {
	full, short := clips(t)
	if full.Width != 640 || full.Height != 360 || full.FPS != 25 {
		t.Fatalf("clip is %dx%d@%d, want 640x360@25", full.Width, full.Height, full.FPS)
	}
	if full.VideoFrames() != 250 || full.Duration() != 10*time.Second {
		t.Fatalf("clip has %d frames (%s), want 250 (10s)", full.VideoFrames(), full.Duration())
	}
	if full.SampleRate != 48000 || full.AudioFrames() < 460 {
		t.Fatalf("audio %d Hz, %d frames; want 48000 Hz and ~469 frames", full.SampleRate, full.AudioFrames())
	}
	if short.VideoFrames() != 50 {
		t.Fatalf("short clip has %d frames, want 50", short.VideoFrames())
	}
	for i, u := range full.video {
		if u.idr != (i%25 == 0) {
			t.Fatalf("frame %d idr=%v; want an IDR exactly every 25 frames", i, u.idr)
		}
		if !u.markers[len(u.markers)-1] {
			t.Fatalf("frame %d: last packet has no marker", i)
		}
		for _, p := range u.payloads {
			if len(p)+rtpHeaderSize > maxRTPPacketSize {
				t.Fatalf("frame %d: packet of %d bytes", i, len(p)+rtpHeaderSize)
			}
		}
	}
	if len(full.SPS) == 0 || full.SPS[1] != 100 { // profile_idc 100 = High
		t.Fatalf("SPS %x is not High profile", full.SPS)
	}
}

func TestLoadClipRejectsGarbage(t *testing.T) {
	if _, err := LoadClip([]byte("not h264"), []byte("not aac")); err == nil {
		t.Fatal("LoadClip accepted garbage")
	}
}
