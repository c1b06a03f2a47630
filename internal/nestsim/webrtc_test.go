package nestsim

import (
	"errors"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/nestmtx/nestmtx/internal/testkit"
	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// waitTimeout bounds every wait on a WebRTC event; on loopback they take
// milliseconds.
const waitTimeout = 5 * time.Second

// rtcClient is a pion offerer shaped like go2rtc's Nest source: recvonly
// audio, recvonly video, a data channel, ICE gathered before the offer.
// It depacketizes the H.264 it receives and records the access units.
type rtcClient struct {
	t       testing.TB
	pc      *webrtc.PeerConnection
	changed chan struct{}

	mu          sync.Mutex
	states      []webrtc.PeerConnectionState
	videoSSRC   webrtc.SSRC
	videoPT     uint8
	videoPkts   int
	aus         []bool // one per decoded access unit: is it an IDR
	audio       [][]byte
	lastVideoAt time.Time
}

func newRTCClient(t testing.TB) *rtcClient {
	t.Helper()
	m := &webrtc.MediaEngine{}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType:        111,
	}, webrtc.RTPCodecTypeAudio))
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	for pt, fmtp := range map[webrtc.PayloadType]string{
		102: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
		106: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
	} {
		must(m.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: fmtp, RTCPFeedback: fb},
			PayloadType:        pt,
		}, webrtc.RTPCodecTypeVideo))
	}
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	// Short timeouts so that a peer that went away is noticed quickly.
	se.SetICETimeouts(500*time.Millisecond, time.Second, 100*time.Millisecond)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	must(err)
	t.Cleanup(func() { pc.Close() })
	c := &rtcClient{t: t, pc: pc, changed: make(chan struct{}, 1)}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		c.update(func() { c.states = append(c.states, st) })
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			c.readVideo(tr)
		} else {
			c.readAudio(tr)
		}
	})
	return c
}

func (c *rtcClient) update(f func()) {
	c.mu.Lock()
	f()
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until cond (called under c.mu) holds.
func (c *rtcClient) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			c.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (c *rtcClient) readVideo(tr *webrtc.TrackRemote) {
	f := &format.H264{PayloadTyp: uint8(tr.PayloadType()), PacketizationMode: 1}
	dec, err := f.CreateDecoder()
	if err != nil {
		c.t.Error(err)
		return
	}
	c.update(func() { c.videoSSRC, c.videoPT = tr.SSRC(), uint8(tr.PayloadType()) })
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		au, derr := dec.Decode(p)
		if derr != nil && !errors.Is(derr, rtph264.ErrMorePacketsNeeded) && !errors.Is(derr, rtph264.ErrNonStartingPacketAndNoPrevious) {
			c.t.Errorf("H.264 depacketization: %v", derr)
		}
		c.update(func() {
			c.videoPkts++
			c.lastVideoAt = time.Now()
			if derr == nil {
				c.aus = append(c.aus, h264.IsRandomAccess(au))
			}
		})
	}
}

func (c *rtcClient) readAudio(tr *webrtc.TrackRemote) {
	for {
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		c.update(func() { c.audio = append(c.audio, p.Payload) })
	}
}

// offer makes a complete (gathered) offer.
func (c *rtcClient) offer() string {
	c.t.Helper()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := c.pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			c.t.Fatal(err)
		}
	}
	if _, err := c.pc.CreateDataChannel("dataSendChannel", nil); err != nil {
		c.t.Fatal(err)
	}
	o, err := c.pc.CreateOffer(nil)
	if err != nil {
		c.t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(o); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-gathered:
	case <-time.After(waitTimeout):
		c.t.Fatal("offerer gathering timed out")
	}
	return c.pc.LocalDescription().SDP
}

func (c *rtcClient) answer(sdp string) {
	c.t.Helper()
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		c.t.Fatalf("SetRemoteDescription(answer): %v\n%s", err, sdp)
	}
}

func (c *rtcClient) pli() {
	c.t.Helper()
	c.mu.Lock()
	ssrc := c.videoSSRC
	c.mu.Unlock()
	if err := c.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rtcClient) auCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.aus)
}

// gone waits for the client to see its peer go away.
func (c *rtcClient) waitGone() {
	c.t.Helper()
	c.waitFor("the connection to end", func() bool {
		for _, st := range c.states {
			if st == webrtc.PeerConnectionStateDisconnected || st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed {
				return true
			}
		}
		return false
	})
}

type webrtcResults struct {
	Results struct {
		AnswerSdp      string `json:"answerSdp"`
		ExpiresAt      string `json:"expiresAt"`
		MediaSessionID string `json:"mediaSessionId"`
	} `json:"results"`
}

func (a *api) generateWebRTC(dev, offer string) webrtcResults {
	a.t.Helper()
	code, b := a.exec(dev, "GenerateWebRtcStream", map[string]any{"offerSdp": offer})
	if code != http.StatusOK {
		a.t.Fatalf("GenerateWebRtcStream: %d %s", code, b)
	}
	var r webrtcResults
	mustJSON(a.t, b, &r)
	if r.Results.AnswerSdp == "" || r.Results.MediaSessionID == "" || r.Results.ExpiresAt == "" {
		a.t.Fatalf("GenerateWebRtcStream results %s", b)
	}
	return r
}

// connectWebRTC generates a session on dev with a fresh client and waits for
// the first access unit.
func connectWebRTC(t *testing.T, s *Sim, a *api, dev string) (*rtcClient, webrtcResults) {
	t.Helper()
	c := newRTCClient(t)
	r := a.generateWebRTC(dev, c.offer())
	c.answer(r.Results.AnswerSdp)
	c.waitFor("connected", func() bool {
		return len(c.states) > 0 && c.states[len(c.states)-1] == webrtc.PeerConnectionStateConnected
	})
	c.waitFor("the first access unit", func() bool { return len(c.aus) > 0 })
	return c, r
}

func TestWebRTCStream(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	s := startSim(t, Options{Now: clk.Now, Opus: SilenceOpus()})
	a := newAPI(t, s)
	c := newRTCClient(t)
	offer := c.offer()
	if _, oerr := validateOffer(offer); oerr != nil {
		t.Fatalf("pion's offer refused: %v\n%s", oerr, offer)
	}
	r := a.generateWebRTC(LivingRoomID, offer)
	ans := r.Results.AnswerSdp

	// Google's answer shape: audio, video, application; sendrecv; two H.264
	// payload types; candidates inside the answer.
	var kinds []string
	for _, l := range strings.Split(ans, "\r\n") {
		if strings.HasPrefix(l, "m=") {
			kinds = append(kinds, strings.Fields(l[2:])[0])
		}
	}
	if strings.Join(kinds, ",") != "audio,video,application" {
		t.Fatalf("answer m-lines %v:\n%s", kinds, ans)
	}
	if !strings.Contains(mSection(ans, "m=audio"), "a=sendrecv") || !strings.Contains(mSection(ans, "m=video"), "a=sendrecv") ||
		strings.Contains(ans, "a=sendonly") {
		t.Fatalf("answer directions are not sendrecv:\n%s", ans)
	}
	if n := strings.Count(mSection(ans, "m=video"), "H264/90000"); n != 2 {
		t.Fatalf("answer has %d H.264 payload types, want 2:\n%s", n, ans)
	}
	if !strings.Contains(ans, "opus/48000/2") || !strings.Contains(ans, "typ host") {
		t.Fatalf("answer lacks opus or a host candidate:\n%s", ans)
	}
	exp, err := time.Parse(time.RFC3339, r.Results.ExpiresAt)
	if err != nil || exp.Sub(clk.Now()) < 4*time.Minute || exp.Sub(clk.Now()) > 5*time.Minute {
		t.Fatalf("expiresAt %q (now %s)", r.Results.ExpiresAt, clk.Now())
	}

	c.answer(ans)
	c.waitFor("the first access unit", func() bool { return len(c.aus) > 0 })
	c.mu.Lock()
	firstIDR := c.aus[0]
	c.mu.Unlock()
	if !firstIDR {
		t.Fatal("the first access unit is not an IDR")
	}
	c.waitFor("Opus audio", func() bool { return len(c.audio) >= 3 })
	c.mu.Lock()
	silence := string(c.audio[0]) == string(opusSilence)
	c.mu.Unlock()
	if !silence {
		t.Fatal("audio is not the Opus silence frame")
	}

	// Let the first GOP's IDR pass, then ask for a keyframe: the next
	// picture is an IDR, well before the clip's next one (a second later).
	c.waitFor("three access units", func() bool { return len(c.aus) >= 3 })
	at := c.auCount()
	c.pli()
	c.waitFor("an IDR after the PLI", func() bool {
		for _, idr := range c.aus[at:] {
			if idr {
				return true
			}
		}
		return false
	})
	c.mu.Lock()
	got := c.aus[at:]
	idrAt := 0
	for i, idr := range got {
		if idr {
			idrAt = i
			break
		}
	}
	c.mu.Unlock()
	if idrAt > 2 {
		t.Fatalf("the IDR came %d pictures after the PLI, want the next one (allowing frames in flight)", idrAt)
	}
	if n := s.KeyframeRequests(r.Results.MediaSessionID); n < 1 {
		t.Fatalf("sim saw %d keyframe requests", n)
	}
	if s.FramesSent(LivingRoomID) == 0 {
		t.Fatal("FramesSent does not count WebRTC pictures")
	}

	// Extend past the first expiry: the session lives on.
	clk.Advance(4 * time.Minute)
	code, b := a.exec(LivingRoomID, "ExtendWebRtcStream", map[string]any{"mediaSessionId": r.Results.MediaSessionID})
	if code != http.StatusOK {
		t.Fatalf("ExtendWebRtcStream: %d %s", code, b)
	}
	var ext webrtcResults
	mustJSON(t, b, &ext)
	exp2, err := time.Parse(time.RFC3339, ext.Results.ExpiresAt)
	if err != nil || ext.Results.MediaSessionID != r.Results.MediaSessionID || !exp2.After(exp) || ext.Results.AnswerSdp != "" {
		t.Fatalf("extend results %s", b)
	}
	clk.Advance(2 * time.Minute) // past the first expiry, before the new one
	s.kickReaper()
	n := c.auCount()
	c.waitFor("media after the first expiry", func() bool { return len(c.aus) > n+5 })
	if s.LiveWebRTCSessions() != 1 {
		t.Fatal("extended session ended")
	}

	// Stop ends it; a later Extend or Stop is refused as Google does.
	code, b = a.exec(LivingRoomID, "StopWebRtcStream", map[string]any{"mediaSessionId": r.Results.MediaSessionID})
	if code != http.StatusOK || strings.TrimSpace(string(b)) != "{}" {
		t.Fatalf("StopWebRtcStream: %d %s", code, b)
	}
	c.waitGone()
	if s.LiveWebRTCSessions() != 0 {
		t.Fatal("stopped session still live")
	}
	for _, cmd := range []string{"ExtendWebRtcStream", "StopWebRtcStream"} {
		code, b = a.exec(LivingRoomID, cmd, map[string]any{"mediaSessionId": r.Results.MediaSessionID})
		e := wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")
		if e.Error.Message != msgBadMediaSession {
			t.Fatalf("%s after stop: %q", cmd, e.Error.Message)
		}
	}
	for cmd, want := range map[string]int{"GenerateWebRtcStream": 1, "ExtendWebRtcStream": 2, "StopWebRtcStream": 2} {
		if n := s.CountCalls(cmd); n != want {
			t.Fatalf("call log has %d %s, want %d", n, cmd, want)
		}
	}
}

func TestWebRTCExpiry(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	s := startSim(t, Options{Now: clk.Now, StreamTTL: time.Minute})
	a := newAPI(t, s)
	c, r := connectWebRTC(t, s, a, LivingRoomID)
	clk.Advance(time.Minute)
	s.kickReaper()
	c.waitGone()
	if s.LiveWebRTCSessions() != 0 {
		t.Fatal("expired session still live")
	}
	code, b := a.exec(LivingRoomID, "ExtendWebRtcStream", map[string]any{"mediaSessionId": r.Results.MediaSessionID})
	wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")
}

func TestWebRTCFaults(t *testing.T) {
	t.Parallel()
	const doorbell = BatteryDoorbellID
	s := startSim(t, Options{Cameras: append(DefaultCameras(), BatteryDoorbell())})
	a := newAPI(t, s)

	// Battery doorbell: streams, but refuses extension.
	bell, br := connectWebRTC(t, s, a, doorbell)
	code, b := a.exec(doorbell, "ExtendWebRtcStream", map[string]any{"mediaSessionId": br.Results.MediaSessionID})
	wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")
	if err := s.Faults().RefuseWebRTCExtensions(doorbell, false); err != nil {
		t.Fatal(err)
	}
	if code, b := a.exec(doorbell, "ExtendWebRtcStream", map[string]any{"mediaSessionId": br.Results.MediaSessionID}); code != http.StatusOK {
		t.Fatalf("extension with the fault off: %d %s", code, b)
	}
	// A session id is bound to its device.
	code, b = a.exec(LivingRoomID, "StopWebRtcStream", map[string]any{"mediaSessionId": br.Results.MediaSessionID})
	wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")

	// Media stall: the peer stays up, the media stops, then resumes.
	cam, cr := connectWebRTC(t, s, a, LivingRoomID)
	s.Faults().FreezeStreams(true)
	settle := time.NewTimer(150 * time.Millisecond) // frames already in flight
	<-settle.C
	before := cam.auCount()
	window := time.NewTimer(300 * time.Millisecond) // eight frame intervals
	<-window.C
	if after := cam.auCount(); after != before {
		t.Fatalf("%d pictures arrived during the stall", after-before)
	}
	s.Faults().FreezeStreams(false)
	cam.waitFor("media after the stall", func() bool { return len(cam.aus) > before })

	// ICE failure: the peer goes away, the session with it.
	if n := s.Faults().FailICE(LivingRoomID); n != 1 {
		t.Fatalf("FailICE cut %d sessions, want 1", n)
	}
	cam.waitGone()
	code, b = a.exec(LivingRoomID, "ExtendWebRtcStream", map[string]any{"mediaSessionId": cr.Results.MediaSessionID})
	wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")
	// The doorbell was not touched.
	n := bell.auCount()
	bell.waitFor("doorbell media after another camera's ICE failure", func() bool { return len(bell.aus) > n })
	if s.LiveWebRTCSessions() != 1 {
		t.Fatalf("%d live sessions, want the doorbell's", s.LiveWebRTCSessions())
	}
}

func TestWebRTCWithholdIDR(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	s.Faults().WithholdIDR(true)
	a := newAPI(t, s)
	c, _ := connectWebRTC(t, s, a, LivingRoomID)
	// The short clip has an IDR every 25 pictures: 30 without one show it
	// is withheld.
	c.waitFor("30 access units", func() bool { return len(c.aus) >= 30 })
	c.mu.Lock()
	for i, idr := range c.aus {
		if idr {
			c.mu.Unlock()
			t.Fatalf("access unit %d is an IDR before any PLI", i)
		}
	}
	c.mu.Unlock()
	c.pli()
	c.waitFor("an IDR after the PLI", func() bool { return len(c.aus) > 0 && c.aus[len(c.aus)-1] })
}

func TestWebRTCCommandErrors(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{EnforceQuota: true})
	a := newAPI(t, s)
	c := newRTCClient(t)
	offer := c.offer()

	code, b := a.exec(LivingRoomID, "GenerateWebRtcStream", nil)
	if e := wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT"); e.Error.Message != msgOfferMissing {
		t.Fatalf("no offer: %q", e.Error.Message)
	}
	// The m-lines out of order (video first).
	audio, video, app := mSection(offer, "m=audio"), mSection(offer, "m=video"), mSection(offer, "m=application")
	head := offer[:strings.Index(offer, "m=audio")]
	code, b = a.exec(LivingRoomID, "GenerateWebRtcStream", map[string]any{"offerSdp": head + video + audio + app})
	if e := wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT"); e.Error.Message != msgOfferMLines {
		t.Fatalf("m-line order: %q", e.Error.Message)
	}
	// Not gathered.
	var kept []string
	for _, l := range strings.Split(offer, "\r\n") {
		if !strings.HasPrefix(l, "a=candidate:") {
			kept = append(kept, l)
		}
	}
	code, b = a.exec(LivingRoomID, "GenerateWebRtcStream", map[string]any{"offerSdp": strings.Join(kept, "\r\n")})
	wantGoogleError(t, code, b, http.StatusInternalServerError, "INTERNAL")
	// An RTSP camera and a thermostat.
	code, b = a.exec(BackyardID, "GenerateWebRtcStream", map[string]any{"offerSdp": offer})
	wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")
	code, b = a.exec(ThermostatID, "GenerateWebRtcStream", map[string]any{"offerSdp": offer})
	wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT")
	// Unknown and empty media sessions.
	for _, id := range []string{"nope", ""} {
		code, b = a.exec(LivingRoomID, "ExtendWebRtcStream", map[string]any{"mediaSessionId": id})
		wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")
	}
	if s.LiveWebRTCSessions() != 0 {
		t.Fatal("a refused offer left a session")
	}
	// Seven calls so far; the quota is 10 a minute, shared with RTSP.
	a.generate(BackyardID)
	r := a.generateWebRTC(LivingRoomID, offer)
	code, b = a.exec(LivingRoomID, "StopWebRtcStream", map[string]any{"mediaSessionId": r.Results.MediaSessionID})
	if code != http.StatusOK {
		t.Fatalf("tenth call: %d %s", code, b)
	}
	code, b = a.exec(LivingRoomID, "ExtendWebRtcStream", map[string]any{"mediaSessionId": r.Results.MediaSessionID})
	wantGoogleError(t, code, b, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED")
	if n := s.CountCalls("GenerateWebRtcStream"); n != 6 {
		t.Fatalf("call log has %d GenerateWebRtcStream, want 6", n)
	}
	if n := s.CountCalls("StopWebRtcStream"); n != 1 {
		t.Fatalf("call log has %d StopWebRtcStream, want 1", n)
	}
	if n := s.CountCalls("ExtendWebRtcStream"); n != 3 {
		t.Fatalf("call log has %d ExtendWebRtcStream, want 3", n)
	}
}

// TestWebRTCOpusClip plays an Opus clip made with ffmpeg at test time: the
// packets arrive unchanged and in order.
func TestWebRTCOpusClip(t *testing.T) {
	t.Parallel()
	ffmpeg := testkit.RequireTool(t, "ffmpeg", "ffmpeg")
	path := filepath.Join(t.TempDir(), "clip.opus")
	out, err := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "1", "-ac", "2", "-c:a", "libopus", "-b:a", "32k", "-frame_duration", "20", "-f", "ogg", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	clip, err := LoadOggOpusFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := clip.Packets(); n < 45 || n > 55 {
		t.Fatalf("%d Opus packets in one second, want ~50", n)
	}
	for i, n := range clip.samples {
		if n != 960 {
			t.Fatalf("packet %d lasts %d samples, want 960", i, n)
		}
	}
	s := startSim(t, Options{Opus: clip})
	c, _ := connectWebRTC(t, s, newAPI(t, s), LivingRoomID)
	c.waitFor("ten Opus packets", func() bool { return len(c.audio) >= 10 })
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.audio[:10] {
		if string(p) != string(clip.packets[i]) {
			t.Fatalf("audio packet %d differs from the clip's", i)
		}
	}
}

func TestOpusPacketSamples(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		p    []byte
		want uint32
	}{
		{opusSilence, 960},                // CELT 20 ms, one frame
		{[]byte{0x08 | 0}, 960},           // SILK NB 20 ms
		{[]byte{0x18 | 1}, 2 * 2880},      // SILK NB 60 ms, two frames
		{[]byte{0x78, 0}, 960},            // hybrid FB 20 ms
		{[]byte{0xe0 | 3, 0x03}, 3 * 120}, // CELT 2.5 ms, three frames
	} {
		got, err := opusPacketSamples(c.p)
		if err != nil || got != c.want {
			t.Errorf("% x: %d %v, want %d", c.p, got, err, c.want)
		}
	}
	if _, err := opusPacketSamples(nil); err == nil {
		t.Error("empty packet accepted")
	}
	if _, err := LoadOggOpus([]byte("not ogg")); err == nil {
		t.Error("garbage accepted as Ogg")
	}
}
