package nestsim

import (
	"net"
	"net/http"
	"strings"

	"github.com/pion/sdp/v3"
)

// offerError is Google's refusal of a GenerateWebRtcStream offer.
type offerError struct {
	Code    int    // HTTP status
	Status  string // google.rpc status name
	Message string
}

func (e *offerError) Error() string { return e.Status + ": " + e.Message }

func (e *offerError) reply() *reply { return googleError(e.Code, e.Message, e.Status) }

// Messages Google is known to send (google-sdm.md §4); the others follow
// their style, since Google's exact words are not known.
const (
	msgOfferMissing  = "offerSdp value must be set. This is a required field."
	msgOfferMLines   = "Invalid offer SDP: Offer must contain each of audio, video and application m lines in that order."
	msgOfferParse    = "Invalid offer SDP: the offer could not be parsed."
	msgOfferH264     = "Invalid offer SDP: Offer must contain H264 video with packetization-mode=1."
	msgOfferOpus     = "Invalid offer SDP: Offer must contain opus/48000/2 audio."
	msgOfferDir      = "Invalid offer SDP: audio and video m lines must be recvonly."
	msgOfferICE      = "Invalid offer SDP: Offer must carry ice-ufrag, ice-pwd and a DTLS fingerprint."
	msgInternalError = "Internal error encountered."
)

func invalidOffer(msg string) *offerError {
	return &offerError{Code: http.StatusBadRequest, Status: "INVALID_ARGUMENT", Message: msg}
}

// offerInfo is what the answerer needs from a valid offer.
type offerInfo struct {
	// h264PTs are the offered H.264 payload types with packetization-mode=1,
	// in offer order.
	h264PTs []string
	opusPT  string
}

// validateOffer applies Google's rules to a GenerateWebRtcStream offer
// (google-sdm.md §5), in this order:
//
//   - empty offer: 400 INVALID_ARGUMENT "offerSdp value must be set...";
//   - unparseable SDP: 400 INVALID_ARGUMENT;
//   - not exactly audio, video, application m-lines in that order: 400
//     INVALID_ARGUMENT with Google's observed message;
//   - no opus/48000/2, no H264 with packetization-mode=1, audio or video
//     not recvonly, no ICE credentials or DTLS fingerprint: 400
//     INVALID_ARGUMENT;
//   - no real host candidate (the offer was not gathered, or its host
//     candidates are mDNS names or unspecified addresses): 500 INTERNAL
//     "Internal error encountered.", as Google answers (go2rtc#2311).
//
// a=ice-options:trickle and a missing a=end-of-candidates are accepted:
// what counts is that the candidates are in the offer.
func validateOffer(offer string) (*offerInfo, *offerError) {
	if strings.TrimSpace(offer) == "" {
		return nil, invalidOffer(msgOfferMissing)
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offer); err != nil {
		return nil, invalidOffer(msgOfferParse)
	}
	want := []string{"audio", "video", "application"}
	if len(sd.MediaDescriptions) != len(want) {
		return nil, invalidOffer(msgOfferMLines)
	}
	for i, md := range sd.MediaDescriptions {
		if md.MediaName.Media != want[i] {
			return nil, invalidOffer(msgOfferMLines)
		}
	}
	audio, video := sd.MediaDescriptions[0], sd.MediaDescriptions[1]

	info := &offerInfo{}
	for _, pt := range audio.MediaName.Formats {
		codec, ok := rtpmap(audio, pt)
		if ok && strings.EqualFold(codec, "opus/48000/2") {
			info.opusPT = pt
			break
		}
	}
	if info.opusPT == "" {
		return nil, invalidOffer(msgOfferOpus)
	}
	for _, pt := range video.MediaName.Formats {
		codec, ok := rtpmap(video, pt)
		if !ok || !strings.EqualFold(codec, "H264/90000") {
			continue
		}
		if fmtpParam(video, pt, "packetization-mode") == "1" {
			info.h264PTs = append(info.h264PTs, pt)
		}
	}
	if len(info.h264PTs) == 0 {
		return nil, invalidOffer(msgOfferH264)
	}
	for _, md := range []*sdp.MediaDescription{audio, video} {
		if direction(&sd, md) != "recvonly" {
			return nil, invalidOffer(msgOfferDir)
		}
	}
	if !hasAttr(&sd, sd.MediaDescriptions, "ice-ufrag") || !hasAttr(&sd, sd.MediaDescriptions, "ice-pwd") ||
		!hasAttr(&sd, sd.MediaDescriptions, "fingerprint") {
		return nil, invalidOffer(msgOfferICE)
	}
	if !hasHostCandidate(&sd) {
		return nil, &offerError{Code: http.StatusInternalServerError, Status: "INTERNAL", Message: msgInternalError}
	}
	return info, nil
}

// rtpmap returns the encoding of a payload type ("H264/90000").
func rtpmap(md *sdp.MediaDescription, pt string) (string, bool) {
	for _, a := range md.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		p, codec, ok := strings.Cut(a.Value, " ")
		if ok && p == pt {
			return strings.TrimSpace(codec), true
		}
	}
	return "", false
}

// fmtpParam returns one parameter of a payload type's a=fmtp line.
func fmtpParam(md *sdp.MediaDescription, pt, key string) string {
	for _, a := range md.Attributes {
		if a.Key != "fmtp" {
			continue
		}
		p, params, ok := strings.Cut(a.Value, " ")
		if !ok || p != pt {
			continue
		}
		for _, kv := range strings.Split(params, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
			if strings.EqualFold(k, key) {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

// direction is the media's direction attribute, falling back to the
// session level and then to sendrecv (RFC 4566).
func direction(sd *sdp.SessionDescription, md *sdp.MediaDescription) string {
	dirs := []string{"sendrecv", "sendonly", "recvonly", "inactive"}
	for _, attrs := range [][]sdp.Attribute{md.Attributes, sd.Attributes} {
		for _, a := range attrs {
			for _, d := range dirs {
				if a.Key == d {
					return d
				}
			}
		}
	}
	return "sendrecv"
}

// hasAttr reports an attribute at the session level or on every m-line.
func hasAttr(sd *sdp.SessionDescription, mds []*sdp.MediaDescription, key string) bool {
	if _, ok := sd.Attribute(key); ok {
		return true
	}
	for _, md := range mds {
		if _, ok := md.Attribute(key); !ok {
			return false
		}
	}
	return true
}

// hasHostCandidate reports an a=candidate of type host whose address is a
// literal, specified IP: an mDNS name (Chrome's "<uuid>.local") or 0.0.0.0
// is not one Google can reach.
func hasHostCandidate(sd *sdp.SessionDescription) bool {
	attrs := append([]sdp.Attribute(nil), sd.Attributes...)
	for _, md := range sd.MediaDescriptions {
		attrs = append(attrs, md.Attributes...)
	}
	for _, a := range attrs {
		if a.Key != "candidate" {
			continue
		}
		f := strings.Fields(a.Value)
		for i := 2; i+1 < len(f); i++ {
			// "... <address> <port> typ host ...": the address is two
			// fields before "typ", which also works for candidates without
			// a foundation, as Google's own are.
			if f[i] != "typ" || f[i+1] != "host" {
				continue
			}
			ip := net.ParseIP(f[i-2])
			if ip != nil && !ip.IsUnspecified() {
				return true
			}
		}
	}
	return false
}

// ValidateOffer checks an SDP offer as GenerateWebRtcStream does, and
// returns the error Google would answer (nil when it would accept it), so
// that a client can test its own offer without a session.
func ValidateOffer(offerSDP string) error {
	if _, err := validateOffer(offerSDP); err != nil {
		return err
	}
	return nil
}
