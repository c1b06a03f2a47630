package nestsim

import (
	"net"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// checkContinuity asserts what a camera guarantees: one SSRC, sequence
// numbers without gaps, and timestamps that stay put inside an access unit
// and advance by exactly one frame after each marker, loops included.
func checkContinuity(t *testing.T, what string, hs []hdr, step uint32) {
	t.Helper()
	if len(hs) < 2 {
		t.Fatalf("%s: only %d packets", what, len(hs))
	}
	for i := 1; i < len(hs); i++ {
		p, c := hs[i-1], hs[i]
		if c.ssrc != p.ssrc {
			t.Fatalf("%s packet %d: SSRC changed %d -> %d", what, i, p.ssrc, c.ssrc)
		}
		if c.seq != p.seq+1 {
			t.Fatalf("%s packet %d: sequence %d -> %d", what, i, p.seq, c.seq)
		}
		want := uint32(0)
		if p.marker {
			want = step
		}
		if c.ts-p.ts != want {
			t.Fatalf("%s packet %d: timestamp %d -> %d (+%d), want +%d", what, i, p.ts, c.ts, c.ts-p.ts, want)
		}
	}
}

// TestRTSPSPlay plays a generated URL with gortsplib over RTSPS and checks
// the media a camera sends, across a loop of the two-second test clip.
func TestRTSPSPlay(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	a := newAPI(t, s)
	g := a.generate(FrontDoorID).Results

	r, err := play(t, s, g.StreamURLs.RTSPURL)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 1500*time.Millisecond, "an IDR frame within 1.5 s", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return !r.firstIDRAt.IsZero()
	})
	testkit.Eventually(t, 6*time.Second, "2.6 s of video (past the loop point)", func() bool {
		_, _, aus := r.counts()
		return aus >= 65
	})

	video, audio := r.headers()
	r.mu.Lock()
	maxSize := r.maxSize
	r.mu.Unlock()
	if maxSize > maxRTPPacketSize {
		t.Fatalf("RTP packet of %d bytes, want <= %d", maxSize, maxRTPPacketSize)
	}
	checkContinuity(t, "video", video, 3600)
	if len(audio) < 100 {
		t.Fatalf("only %d AAC packets in 2.6 s", len(audio))
	}
	checkContinuity(t, "audio", audio, 1024)
	if video[0].pt != 96 || audio[0].pt != 97 {
		t.Fatalf("payload types video %d audio %d, want 96 and 97", video[0].pt, audio[0].pt)
	}
	if n := s.FramesSent(FrontDoorID); n < 65 {
		t.Fatalf("FramesSent = %d, want >= 65", n)
	}
	if s.FramesSent(BackyardID) != 0 {
		t.Fatal("FramesSent counts a camera nobody watches")
	}

	// Google allows one client per stream URL.
	if _, err := play(t, s, g.StreamURLs.RTSPURL); statusOf(err) != int(base.StatusNotEnoughBandwidth) {
		t.Fatalf("second concurrent reader: %v, want 453", err)
	}
	if !r.alive() {
		t.Fatal("the refused second reader cut the first one")
	}

	// Another session of the same camera starts at its own random point.
	g2 := a.generate(FrontDoorID).Results
	r2, err := play(t, s, g2.StreamURLs.RTSPURL)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 3*time.Second, "video on the second session", func() bool {
		v, _, _ := r2.counts()
		return v > 0
	})
	v2, _ := r2.headers()
	if v2[0].ssrc == video[0].ssrc {
		t.Fatal("two sessions share an SSRC")
	}
}

func TestRTSPSRefusals(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	a := newAPI(t, s)
	g := a.generate(BackyardID).Results

	if _, err := describe(t, s, withAuth(g.StreamURLs.RTSPURL, "g.0.wrong")); statusOf(err) != 403 {
		t.Fatalf("wrong token: %v, want 403", err)
	}
	if _, err := describe(t, s, withAuth(g.StreamURLs.RTSPURL, "")); statusOf(err) != 403 {
		t.Fatalf("no token: %v, want 403", err)
	}
	if _, err := describe(t, s, "rtsps://"+s.RTSPSAddress()+"/sdm_live_stream/unknown?auth="+g.StreamToken); statusOf(err) != 404 {
		t.Fatalf("unknown session: %v, want 404", err)
	}
	if _, err := play(t, s, withAuth(g.StreamURLs.RTSPURL, "g.0.wrong")); statusOf(err) != 403 {
		t.Fatalf("play with a wrong token: %v, want 403", err)
	}
	if res, err := describe(t, s, g.StreamURLs.RTSPURL); err != nil || res.StatusCode != base.StatusOK {
		t.Fatalf("right token: %v", err)
	}
	code, b := a.exec(BackyardID, "StopRtspStream", map[string]any{"streamExtensionToken": g.StreamExtensionToken})
	if code != 200 {
		t.Fatalf("stop: %d %s", code, b)
	}
	if _, err := describe(t, s, g.StreamURLs.RTSPURL); statusOf(err) != 404 {
		t.Fatalf("stopped session: %v, want 404", err)
	}
}

func TestRTSPSStopCutsReader(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	a := newAPI(t, s)
	g := a.generate(BackyardID).Results
	r, err := play(t, s, g.StreamURLs.RTSPURL)
	if err != nil {
		t.Fatal(err)
	}
	if code, b := a.exec(BackyardID, "StopRtspStream", map[string]any{"streamExtensionToken": g.StreamExtensionToken}); code != 200 {
		t.Fatalf("stop: %d %s", code, b)
	}
	r.waitCut(t, 3*time.Second)
}

func TestRTSPSExpiryCutsReader(t *testing.T) {
	t.Parallel()
	const ttl = 1500 * time.Millisecond
	s := startSim(t, Options{StreamTTL: ttl})
	a := newAPI(t, s)
	g := a.generate(FrontDoorID).Results
	exp, _ := time.Parse("2006-01-02T15:04:05.000Z", g.ExpiresAt)
	r, err := play(t, s, g.StreamURLs.RTSPURL)
	if err != nil {
		t.Fatal(err)
	}
	r.waitCut(t, ttl+3*time.Second)
	if now := time.Now(); now.Before(exp) {
		t.Fatalf("reader cut %s before expiresAt", exp.Sub(now))
	}
	if v, _, _ := r.counts(); v == 0 {
		t.Fatal("reader got no video before expiry")
	}
	if s.LiveSessions() != 0 {
		t.Fatalf("LiveSessions %d after expiry", s.LiveSessions())
	}
	if _, err := describe(t, s, g.StreamURLs.RTSPURL); statusOf(err) != 404 {
		t.Fatalf("expired session: %v, want 404", err)
	}
	code, _, b := a.extend(FrontDoorID, g.StreamExtensionToken)
	wantGoogleError(t, code, b, 400, "FAILED_PRECONDITION")
}

func TestRTSPSDropStreams(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	a := newAPI(t, s)
	g := a.generate(FrontDoorID).Results
	r, err := play(t, s, g.StreamURLs.RTSPURL)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, "first packets", func() bool { v, _, _ := r.counts(); return v > 0 })
	s.Faults().DropStreams()
	r.waitCut(t, 3*time.Second)
	if s.LiveSessions() != 1 {
		t.Fatalf("LiveSessions %d after DropStreams, want 1", s.LiveSessions())
	}
	// Same URL, new connection, immediately: no wait for a stale reader.
	r2, err := play(t, s, g.StreamURLs.RTSPURL)
	if err != nil {
		t.Fatalf("reconnect after DropStreams: %v", err)
	}
	testkit.Eventually(t, 2*time.Second, "packets after reconnect", func() bool { v, _, _ := r2.counts(); return v > 0 })

	s.Faults().DropEvery(200 * time.Millisecond)
	r2.waitCut(t, 2*time.Second)
	s.Faults().DropEvery(0)
}

func TestRTSPSExtendKeepsReader(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	s := startSim(t, Options{StreamTTL: ttl})
	a := newAPI(t, s)
	g := a.generate(BackyardID).Results
	firstExp, _ := time.Parse("2006-01-02T15:04:05.000Z", g.ExpiresAt)
	r, err := play(t, s, g.StreamURLs.RTSPURL)
	if err != nil {
		t.Fatal(err)
	}
	// Extending at once would barely move the expiry; half-way through
	// the lifetime it moves it a full second past the first one.
	time.Sleep(ttl / 2)
	code, e, b := a.extend(BackyardID, g.StreamExtensionToken)
	if code != 200 {
		t.Fatalf("extend: %d %s", code, b)
	}
	newURL := withAuth(g.StreamURLs.RTSPURL, e.Results.StreamToken)

	// New connections must use the new token; the old one is refused.
	if _, err := describe(t, s, g.StreamURLs.RTSPURL); statusOf(err) != 403 {
		t.Fatalf("old token after extend: %v, want 403", err)
	}
	if _, err := describe(t, s, newURL); err != nil {
		t.Fatalf("new token after extend: %v", err)
	}

	// The reader connected with the old token outlives the first expiry:
	// it still receives packets well after it.
	testkit.Eventually(t, ttl+2*time.Second, "a packet 300 ms after the first expiry", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.lastPktAt.After(firstExp.Add(300 * time.Millisecond))
	})
	if !r.alive() {
		t.Fatalf("reader cut after extension: %v", r.err)
	}
	if s.LiveSessions() != 1 {
		t.Fatalf("LiveSessions %d", s.LiveSessions())
	}
}

func TestCloseStopsEverything(t *testing.T) {
	t.Parallel()
	_, short := clips(t)
	s, err := Start(Options{Clip: short})
	if err != nil {
		t.Fatal(err)
	}
	a := newAPI(t, s)
	g := a.generate(FrontDoorID).Results
	r, err := play(t, s, g.StreamURLs.RTSPURL)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs with a reader connected")
	}
	r.waitCut(t, 3*time.Second)
	for _, addr := range []string{s.RTSPSAddress(), s.HTTPAddress()} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("%s still accepts connections after Close", addr)
		}
	}
	s.Close() // idempotent
}
