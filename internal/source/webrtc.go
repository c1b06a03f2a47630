package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/nestmtx/nestmtx/internal/relay"
)

// WebRTC runs a Google WebRTC session: it offers what Google requires
// (recvonly audio, then recvonly video, then a data channel, with every ICE
// candidate gathered), has RunParams.Negotiate trade the offer for Google's
// answer, and feeds the H.264 it receives into the relay. It asks for a
// keyframe (PLI, then FIR, in turn) until the first IDR, which carries the
// SPS and PPS the relay needs. The camera's Opus audio goes to the relay
// as it is, through an ffmpeg child that makes it AAC, or nowhere, as
// RunParams.Audio says.
type WebRTC struct {
	Log *slog.Logger
	// Loopback lets ICE use loopback addresses, for a simulated Google on
	// the same host; Google's own servers are never there.
	Loopback bool
	// FFmpeg is the ffmpeg binary that transcodes audio for AudioAAC.
	FFmpeg string
}

// iceDisconnectedGrace is how long a disconnected ICE may take to come
// back by itself before the run fails: a lost packet or two is not an
// outage.
const iceDisconnectedGrace = 5 * time.Second

// keyframeRequestEvery spaces the keyframe requests until the first IDR.
const keyframeRequestEvery = 500 * time.Millisecond

func (w WebRTC) api() (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType: 111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	feedback := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", RTCPFeedback: feedback},
		PayloadType: 102,
	}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, err
	}
	// NACKs for lost packets and receiver reports, as browsers send them.
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	// Google wants real host candidates, not mDNS names.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if w.Loopback {
		se.SetIncludeLoopbackCandidate(true)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}

// Run implements Runner.
func (w WebRTC) Run(ctx context.Context, p RunParams, parent Parent) error {
	if p.Negotiate == nil {
		return errors.New("webrtc source: no way to negotiate with Google")
	}
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	api, err := w.api()
	if err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{BundlePolicy: webrtc.BundlePolicyMaxBundle})
	if err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	defer pc.Close()

	states := make(chan webrtc.PeerConnectionState, 16)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		select {
		case states <- s:
		default:
		}
	})
	audio, err := w.audioFor(ctx, p.Audio, log)
	if err != nil {
		return err
	}
	defer audio.close()
	videoTracks := make(chan *webrtc.TrackRemote, 1)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			select {
			case videoTracks <- tr:
			default:
			}
			return
		}
		go audio.run(tr)
	})
	recvonly := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, recvonly); err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, recvonly); err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	// Google requires the application m-line a data channel brings.
	if _, err := pc.CreateDataChannel("dataSendChannel", nil); err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return nil
	}
	answer, err := p.Negotiate(ctx, withoutTrickle(pc.LocalDescription().SDP))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: FixGoogleAnswer(answer)}); err != nil {
		return fmt.Errorf("webrtc: Google's answer: %w", err)
	}

	// ICE, DTLS and the first packet must come within the stall timeout.
	connectBy := time.NewTimer(p.StallTimeout)
	defer connectBy.Stop()
	var video *webrtc.TrackRemote
	for video == nil {
		select {
		case video = <-videoTracks:
		case s := <-states:
			if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
				return fmt.Errorf("webrtc: the connection to Google %s before any video", s)
			}
		case <-connectBy.C:
			return fmt.Errorf("no video from Google within %s of the answer", p.StallTimeout)
		case <-ctx.Done():
			return nil
		}
	}

	pump := &videoPump{track: video, parent: parent, log: log, ready: make(chan struct{}), failed: make(chan error, 1),
		started: time.Now(), audio: audio}
	pump.lastPacket.Store(time.Now().UnixNano())
	readyC := pump.ready
	go pump.run(ctx)
	ask := time.NewTicker(keyframeRequestEvery)
	defer ask.Stop()
	watch := time.NewTicker(max(p.StallTimeout/4, 100*time.Millisecond))
	defer watch.Stop()
	var disconnectedSince time.Time
	asked := 0
	for {
		select {
		case err := <-pump.failed:
			return err
		case <-ask.C:
			if pump.gotIDR.Load() {
				ask.Stop()
				continue
			}
			asked++
			if err := pc.WriteRTCP([]rtcp.Packet{keyframeRequest(uint32(video.SSRC()), asked)}); err != nil {
				log.Debug("webrtc keyframe request", "error", err)
			}
		case <-readyC:
			readyC = nil
			parent.Ready(pump.params)
		case s := <-states:
			switch s {
			case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
				return fmt.Errorf("webrtc: the connection to Google %s", s)
			case webrtc.PeerConnectionStateDisconnected:
				if disconnectedSince.IsZero() {
					disconnectedSince = time.Now()
				}
			case webrtc.PeerConnectionStateConnected:
				disconnectedSince = time.Time{}
			}
		case <-watch.C:
			if !disconnectedSince.IsZero() && time.Since(disconnectedSince) > iceDisconnectedGrace {
				return fmt.Errorf("webrtc: disconnected from Google for %s", time.Since(disconnectedSince).Round(time.Second))
			}
			if quiet := time.Since(time.Unix(0, pump.lastPacket.Load())); quiet > p.StallTimeout {
				return fmt.Errorf("no media from Google for %s", quiet.Round(time.Second))
			}
			if !pump.gotIDR.Load() && time.Since(pump.started) > p.StallTimeout {
				return fmt.Errorf("no picture from Google within %s of connecting", p.StallTimeout)
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// keyframeRequest alternates PLI and FIR: some senders honour only one.
func keyframeRequest(ssrc uint32, n int) rtcp.Packet {
	if n%2 == 1 {
		return &rtcp.PictureLossIndication{MediaSSRC: ssrc}
	}
	return &rtcp.FullIntraRequest{MediaSSRC: ssrc, FIR: []rtcp.FIREntry{{SSRC: ssrc, SequenceNumber: uint8(n / 2)}}}
}

// videoPump depacketises the video track and writes its access units to
// the relay, from the first IDR on.
type videoPump struct {
	track      *webrtc.TrackRemote
	parent     Parent
	log        *slog.Logger
	lastPacket atomic.Int64
	gotIDR     atomic.Bool
	started    time.Time
	params     relay.Params // set before ready is closed
	ready      chan struct{}
	failed     chan error
	audio      *audioPump
}

func (v *videoPump) run(ctx context.Context) {
	ready := v.ready
	f := &format.H264{PayloadTyp: uint8(v.track.PayloadType()), PacketizationMode: 1}
	dec, err := f.CreateDecoder()
	if err != nil {
		v.failed <- err
		return
	}
	var seg *relay.Segment
	for {
		pkt, _, err := v.track.ReadRTP()
		if err != nil {
			if ctx.Err() == nil {
				v.failed <- fmt.Errorf("webrtc: the video track ended: %w", err)
			}
			return
		}
		v.lastPacket.Store(time.Now().UnixNano())
		if seg != nil {
			seg.Received(len(pkt.Payload))
		}
		au, err := dec.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtph264.ErrMorePacketsNeeded) && !errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) {
				v.log.Debug("webrtc H.264 depacketising", "error", err)
			}
			continue
		}
		if seg == nil {
			sps, pps := relay.ParameterSets(au)
			if !h264.IsRandomAccess(au) || sps == nil || pps == nil {
				continue // the keyframe requests bring an IDR with its SPS and PPS
			}
			v.params = relay.Params{SPS: sps, PPS: pps}
			v.audio.describe(&v.params)
			if seg, err = v.parent.Connected(ctx, v.params); err != nil {
				if ctx.Err() == nil {
					v.failed <- err
				}
				return
			}
			v.audio.seg.Store(seg)
			v.gotIDR.Store(true)
		}
		if err := seg.WriteVideo(pkt.Timestamp, au); err != nil {
			v.failed <- err
			return
		}
		if ready != nil {
			select {
			case <-seg.FirstFrame():
				close(ready)
				ready = nil
			default:
			}
		}
	}
}

// withoutTrickle removes the trickle option: every candidate is in the
// offer, and some of Google's servers refuse an offer that announces more.
func withoutTrickle(sdp string) string {
	lines := strings.SplitAfter(sdp, "\n")
	out := lines[:0]
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "a=ice-options:trickle") {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "")
}

// FixGoogleAnswer makes Google's answer one a standard peer accepts: its
// media say sendrecv to a recvonly offer (they only send), and its
// candidates may lack a foundation.
func FixGoogleAnswer(sdp string) string {
	lines := strings.SplitAfter(sdp, "\n")
	for i, l := range lines {
		body := strings.TrimRight(l, "\r\n")
		end := l[len(body):]
		switch {
		case body == "a=sendrecv":
			lines[i] = "a=sendonly" + end
		case strings.HasPrefix(body, "a=candidate:"):
			rest := strings.TrimPrefix(body, "a=candidate:")
			f := strings.Fields(rest)
			// With a foundation the transport is the third field
			// (foundation, component, transport); without, the second.
			if len(f) >= 3 && isTransport(f[1]) && !isTransport(f[2]) {
				lines[i] = "a=candidate:1 " + strings.TrimLeft(rest, " ") + end
			}
		}
	}
	return strings.Join(lines, "")
}

func isTransport(s string) bool { return strings.EqualFold(s, "udp") || strings.EqualFold(s, "tcp") }
