package nestsim

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

const (
	cmdGenerateWebRTC = "sdm.devices.commands.CameraLiveStream.GenerateWebRtcStream"
	cmdExtendWebRTC   = "sdm.devices.commands.CameraLiveStream.ExtendWebRtcStream"
	cmdStopWebRTC     = "sdm.devices.commands.CameraLiveStream.StopWebRtcStream"

	// msgBadMediaSession is Google's answer to Extend or Stop of a dead,
	// unknown or empty media session (HA#132438).
	msgBadMediaSession = "WebRtc error caused by invalid session or user id mismatch."

	// gatherTimeout bounds the answerer's ICE gathering; on loopback it
	// takes milliseconds.
	gatherTimeout = 5 * time.Second

	// rtcVideoProfile is the H.264 format the video track is bound to
	// (NestMTX offers it); the answer carries the offer's payload numbers.
	rtcVideoProfile = "42e01f"
)

// rtcH264Profiles are the H.264 formats the answerer accepts. Two of them,
// so that an offer with both (Chrome's and pion's do) gets two H.264
// payload types in the answer, as Google's answers have (HA#135785).
var rtcH264Profiles = []struct {
	pt   webrtc.PayloadType
	plid string
}{{106, rtcVideoProfile}, {107, "42001f"}}

// rtcSession is one GenerateWebRtcStream result. Fields are guarded by
// Sim.mu except the atomics and the channels.
type rtcSession struct {
	id        string
	dev       *device
	expiresAt time.Time
	state     sessState
	endedAt   time.Time

	pc           *webrtc.PeerConnection
	video, audio *webrtc.TrackLocalStaticRTP

	connected     chan struct{} // closed when the peer first connects
	connectedOnce atomic.Bool
	done          chan struct{} // closed when the session ends
	keyframe      atomic.Bool   // a PLI or FIR asks for an IDR next
	keyframeReqs  atomic.Int64
	frames        atomic.Int64
}

// newRTCAPI builds the pion API every answerer shares: H.264 (two profiles,
// packetization-mode=1) and Opus, NACK and RTCP reports, UDP over IPv4 on
// the interfaces the HTTP listener suggests, and no mDNS.
func newRTCAPI(listenIP net.IP) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: opusClockRate, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1",
		},
		PayloadType: 111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	fb := []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	for _, p := range rtcH264Profiles {
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType: webrtc.MimeTypeH264, ClockRate: videoClockRate,
				SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p.plid,
				RTCPFeedback: fb,
			},
			PayloadType: p.pt,
		}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	reg := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(m, reg); err != nil {
		return nil, err
	}
	if err := webrtc.ConfigureRTCPReports(reg); err != nil {
		return nil, err
	}

	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	switch {
	case listenIP == nil || listenIP.IsUnspecified():
		// every interface
	case listenIP.IsLoopback():
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	default:
		se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(listenIP) })
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}

func (s *Sim) executeWebRTC(d *device, cmd command) *reply {
	if !d.isCamera() {
		return googleError(http.StatusBadRequest, "Command not supported for this device.", "INVALID_ARGUMENT")
	}
	if !d.supports(ProtocolWebRTC) {
		return googleError(http.StatusBadRequest, "Precondition check failed: the device does not support WebRTC streams.", "FAILED_PRECONDITION")
	}
	switch cmd.Command {
	case cmdGenerateWebRTC:
		return s.generateWebRTC(d, cmd.Params.OfferSdp)
	case cmdExtendWebRTC:
		return s.extendWebRTC(d, cmd.Params.MediaSessionID)
	default:
		return s.stopWebRTC(d, cmd.Params.MediaSessionID)
	}
}

func (s *Sim) generateWebRTC(d *device, offer string) *reply {
	if _, oerr := validateOffer(offer); oerr != nil {
		s.log.Debug("nestsim: webrtc offer refused", "device", d.cam.ID, "err", oerr)
		return oerr.reply()
	}
	ss, answer, err := s.newRTCSession(d, offer)
	if err != nil {
		var oerr *offerError
		if errors.As(err, &oerr) {
			return oerr.reply()
		}
		s.log.Error("nestsim: cannot answer webrtc offer", "device", d.cam.ID, "err", err)
		return googleError(http.StatusInternalServerError, msgInternalError, "INTERNAL")
	}
	s.mu.Lock()
	res := map[string]any{"results": map[string]any{
		"answerSdp":      answer,
		"expiresAt":      formatExpiry(ss.expiresAt),
		"mediaSessionId": ss.id,
	}}
	s.mu.Unlock()
	return jsonReply(http.StatusOK, res)
}

// newRTCSession answers the offer with a pion PeerConnection and registers
// the session; its media starts when the peer connects.
func (s *Sim) newRTCSession(d *device, offer string) (*rtcSession, string, error) {
	pc, err := s.rtcAPI.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", err
	}
	ok := false
	defer func() {
		if !ok {
			pc.Close()
		}
	}()
	ss := &rtcSession{
		id:        randToken(64),
		dev:       d,
		pc:        pc,
		connected: make(chan struct{}),
		done:      make(chan struct{}),
	}
	ss.audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: opusClockRate, Channels: 2,
	}, "audio", "nestsim")
	if err != nil {
		return nil, "", err
	}
	ss.video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: videoClockRate,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + rtcVideoProfile,
	}, "video", "nestsim")
	if err != nil {
		return nil, "", err
	}
	aSender, err := pc.AddTrack(ss.audio)
	if err != nil {
		return nil, "", err
	}
	vSender, err := pc.AddTrack(ss.video)
	if err != nil {
		return nil, "", err
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			if ss.connectedOnce.CompareAndSwap(false, true) {
				close(ss.connected)
			}
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			s.rtcPeerGone(ss)
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return nil, "", invalidOffer("Invalid offer SDP: " + err.Error())
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return nil, "", invalidOffer("Invalid offer SDP: " + err.Error())
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return nil, "", err
	}
	select {
	case <-gathered:
	case <-time.After(gatherTimeout):
		return nil, "", errors.New("ICE gathering timed out")
	case <-s.ctx.Done():
		return nil, "", context.Cause(s.ctx)
	}
	answer := googleAnswer(pc.LocalDescription().SDP)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, "", errors.New("simulator closed")
	}
	ss.expiresAt = s.now().Add(s.o.StreamTTL).Truncate(time.Millisecond)
	s.rtcSessions[ss.id] = ss
	s.wg.Add(1)
	s.rtcWG.Add(2)
	s.mu.Unlock()
	ok = true

	go s.rtcMedia(ss)
	go s.readRTCP(ss, vSender)
	go s.readRTCP(ss, aSender)
	s.kickReaper()
	s.log.Debug("nestsim: webrtc stream generated", "device", d.cam.ID, "session", ss.id)
	return ss, answer, nil
}

// googleAnswer gives pion's answer Google's quirk: the media direction is
// sendrecv even though the offer was recvonly (google-sdm.md §5).
func googleAnswer(sdp string) string {
	return strings.ReplaceAll(sdp, "\r\na=sendonly\r\n", "\r\na=sendrecv\r\n")
}

// lookupRTCLocked resolves a mediaSessionId for Extend and Stop. Google
// answers FAILED_PRECONDITION for a dead, unknown or empty session alike.
func (s *Sim) lookupRTCLocked(d *device, id string, cut *cutList) (*rtcSession, *reply) {
	ss := s.rtcSessions[id]
	if ss == nil || ss.dev != d || ss.state != stateLive {
		return nil, googleError(http.StatusBadRequest, msgBadMediaSession, "FAILED_PRECONDITION")
	}
	if !s.now().Before(ss.expiresAt) {
		// The reaper has not run yet; the session is dead all the same.
		s.endRTCLocked(ss, stateExpired, cut)
		return nil, googleError(http.StatusBadRequest, msgBadMediaSession, "FAILED_PRECONDITION")
	}
	return ss, nil
}

func (s *Sim) extendWebRTC(d *device, id string) *reply {
	var cut cutList
	defer cut.do()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, rep := s.lookupRTCLocked(d, id, &cut)
	if rep != nil {
		return rep
	}
	if d.noExtend || s.faults.extensionsFail() {
		// Battery devices cannot extend a WebRTC stream (Google's docs).
		return googleError(http.StatusBadRequest, "Precondition check failed.", "FAILED_PRECONDITION")
	}
	ss.expiresAt = s.now().Add(s.o.StreamTTL).Truncate(time.Millisecond)
	s.kickReaper()
	s.log.Debug("nestsim: webrtc stream extended", "device", d.cam.ID, "session", ss.id)
	return jsonReply(http.StatusOK, map[string]any{"results": map[string]any{
		"expiresAt":      formatExpiry(ss.expiresAt),
		"mediaSessionId": ss.id,
	}})
}

func (s *Sim) stopWebRTC(d *device, id string) *reply {
	var cut cutList
	defer cut.do()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, rep := s.lookupRTCLocked(d, id, &cut)
	if rep != nil {
		return rep
	}
	s.endRTCLocked(ss, stateStopped, &cut)
	s.log.Debug("nestsim: webrtc stream stopped", "device", d.cam.ID, "session", ss.id)
	return jsonReply(http.StatusOK, map[string]any{})
}

// endRTCLocked ends a live session and queues its peer for closing.
func (s *Sim) endRTCLocked(ss *rtcSession, state sessState, cut *cutList) {
	if ss.state != stateLive {
		return
	}
	ss.state = state
	ss.endedAt = s.now()
	close(ss.done)
	cut.peers = append(cut.peers, ss.pc)
	s.log.Debug("nestsim: webrtc stream ended", "device", ss.dev.cam.ID, "session", ss.id, "state", int(state))
}

// rtcPeerGone ends a session whose peer connection failed or closed.
func (s *Sim) rtcPeerGone(ss *rtcSession) {
	var cut cutList
	defer cut.do()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endRTCLocked(ss, stateFailed, &cut)
}

// failICE closes the peer connections of the live WebRTC sessions of one
// device ("" for all): the client sees its connection fail, and the media
// sessions are gone (Extend answers FAILED_PRECONDITION).
func (s *Sim) failICE(deviceID string) int {
	var cut cutList
	s.mu.Lock()
	for _, ss := range s.rtcSessions {
		if ss.state == stateLive && (deviceID == "" || ss.dev.cam.ID == deviceID) {
			s.endRTCLocked(ss, stateFailed, &cut)
		}
	}
	s.mu.Unlock()
	n := len(cut.peers)
	cut.do()
	return n
}

// readRTCP drains a sender's RTCP (the interceptors need it read) and turns
// a PLI or FIR on the video sender into a keyframe request. It ends when
// the peer connection closes.
func (s *Sim) readRTCP(ss *rtcSession, sender *webrtc.RTPSender) {
	defer s.rtcWG.Done()
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				ss.keyframeReqs.Add(1)
				ss.keyframe.Store(true)
			}
		}
	}
}

// rtcMedia is the session's camera: from the moment the peer connects, it
// plays the clip's H.264 and the Opus clip in real time with the same
// pacing as the RTSPS player (a base time and frame counters, skipping
// ahead after a stall of the process rather than bursting). The first
// picture is the clip's first access unit, an IDR; a keyframe request
// makes the next picture the clip's next IDR.
func (s *Sim) rtcMedia(ss *rtcSession) {
	defer s.wg.Done()
	select {
	case <-ss.connected:
	case <-ss.done:
		return
	case <-s.ctx.Done():
		return
	}
	clip, opus := s.clip, s.opus
	videoNS := int64(time.Second) / int64(clip.FPS)
	withhold := s.faults.withholdingIDR()

	var vPkt, aPkt rtp.Packet
	vSeq, aSeq := uint16(randUint32()), uint16(randUint32())
	vTS, aTS := randUint32(), randUint32()
	vIdx, aIdx := 0, 0
	if withhold {
		vIdx = nextNonIDR(clip, 0)
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	base := time.Now()
	var vN int64
	var aSamples uint64 // audio played since base, in 48 kHz samples
	for {
		nextV := base.Add(time.Duration(vN * videoNS))
		nextA := base.Add(time.Duration(aSamples * uint64(time.Second) / opusClockRate))
		next := nextV
		if nextA.Before(next) {
			next = nextA
		}
		timer.Reset(time.Until(next))
		select {
		case <-s.ctx.Done():
			return
		case <-ss.done:
			return
		case <-timer.C:
		}
		now := time.Now()
		if now.Sub(next) > maxLag {
			base, vN, aSamples = now, 0, 0
			continue
		}
		frozen := s.faults.frozen()
		for !nextV.After(now) {
			if ss.keyframe.Swap(false) {
				withhold = false
				for !clip.video[vIdx].idr {
					vIdx = (vIdx + 1) % len(clip.video)
				}
			} else if withhold && clip.video[vIdx].idr {
				vIdx = nextNonIDR(clip, vIdx)
			}
			u := &clip.video[vIdx]
			if !frozen {
				for i, payload := range u.payloads {
					vPkt = rtp.Packet{Header: rtp.Header{
						Version: 2, SequenceNumber: vSeq + uint16(i), Timestamp: vTS, Marker: u.markers[i],
					}, Payload: payload}
					if err := ss.video.WriteRTP(&vPkt); err != nil {
						break
					}
				}
				ss.frames.Add(1)
				ss.dev.rtcFrames.Add(1)
			}
			// A frozen camera keeps its clock: the stream resumes with a
			// gap in timestamps, not in sequence numbers.
			if !frozen {
				vSeq += uint16(len(u.payloads))
			}
			vTS += clip.frameDur
			vIdx = (vIdx + 1) % len(clip.video)
			vN++
			nextV = base.Add(time.Duration(vN * videoNS))
		}
		for !nextA.After(now) {
			if !frozen {
				aPkt = rtp.Packet{Header: rtp.Header{
					Version: 2, SequenceNumber: aSeq, Timestamp: aTS, Marker: aIdx == 0 && aSamples == 0,
				}, Payload: opus.packets[aIdx]}
				_ = ss.audio.WriteRTP(&aPkt)
				aSeq++
			}
			aTS += opus.samples[aIdx]
			aSamples += uint64(opus.samples[aIdx])
			aIdx = (aIdx + 1) % len(opus.packets)
			nextA = base.Add(time.Duration(aSamples * uint64(time.Second) / opusClockRate))
		}
	}
}

// nextNonIDR returns the first access unit at or after i that is not an
// IDR (for the "no IDR until PLI" fault).
func nextNonIDR(c *Clip, i int) int {
	for range len(c.video) {
		if !c.video[i].idr {
			return i
		}
		i = (i + 1) % len(c.video)
	}
	return i // an all-IDR clip: nothing to withhold
}

// reapRTCLocked ends WebRTC sessions past expiry and forgets old ended
// ones; it returns how long until the next expiry (at most next).
func (s *Sim) reapRTCLocked(now time.Time, next time.Duration, cut *cutList) time.Duration {
	for id, ss := range s.rtcSessions {
		switch {
		case ss.state == stateLive && !now.Before(ss.expiresAt) && !s.faults.lingering():
			s.endRTCLocked(ss, stateExpired, cut)
		case ss.state == stateLive:
			next = min(next, ss.expiresAt.Sub(now))
		case now.Sub(ss.endedAt) > endedRetention:
			delete(s.rtcSessions, id)
		}
	}
	return next
}

// LiveWebRTCSessions counts WebRTC media sessions that are generated and
// neither stopped, failed nor expired.
func (s *Sim) LiveWebRTCSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.rtcSessions {
		if ss.state == stateLive {
			n++
		}
	}
	return n
}

// KeyframeRequests counts the PLI and FIR packets received on the video of
// one WebRTC media session.
func (s *Sim) KeyframeRequests(mediaSessionID string) int {
	s.mu.Lock()
	ss := s.rtcSessions[mediaSessionID]
	s.mu.Unlock()
	if ss == nil {
		return 0
	}
	return int(ss.keyframeReqs.Load())
}
